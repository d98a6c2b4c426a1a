"""One connection to Vault / OpenBao, shared by the transit KMS and the PKI issuer: login, TLS, calls.

A :class:`VaultConnection` does no I/O and reads no credential when it is built. hvac is
imported, and the login done, at the first call. Three ways to get a token:

* ``token``: ``VAULT_TOKEN`` (or ``BAO_TOKEN``) from the environment it was given;
* ``approle``: ``auth/approle/login`` with the role and secret ids read from the environment
  variables its :class:`VaultLogin` names;
* ``kubernetes``: ``auth/<kubernetes_mount>/login`` with ``kubernetes_role`` and the pod's
  service-account JWT, read from ``kubernetes_token_path`` at each login (kubelet rotates it).

A token obtained by logging in expires (``token_ttl`` of the role). When a call is denied
(HTTP 403/401) on such a token, the connection logs in again, once, and retries the call
once; a second denial is a real one. A static ``token`` is never retried.

Every failure is a :class:`VaultCallError`, classified by :class:`VaultProblem`, whose message
is one line naming the server (``scheme://host:port``) and the HTTP status: never a token, an
AppRole id, a JWT or a request body. It never leaves a plug-in: each one turns it into its own
error (:class:`~certreconcile.errors.KmsError`, :class:`~certreconcile.errors.IssuerError`)
with its own stable code and hint.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from certreconcile.plugins.kms._redact import display_url

__all__ = [
    "DEFAULT_KUBERNETES_TOKEN_PATH",
    "VaultAuthMethod",
    "VaultCallError",
    "VaultConnection",
    "VaultLogin",
    "VaultProblem",
    "login_hint",
    "one_line",
]

VaultAuthMethod = Literal["token", "approle", "kubernetes"]

#: Where Kubernetes mounts a pod's service-account token.
DEFAULT_KUBERNETES_TOKEN_PATH = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


@dataclass(frozen=True, slots=True)
class VaultLogin:
    """How to obtain a token. Holds names of variables and files, never a secret."""

    method: VaultAuthMethod = "token"
    role_id_env: str = "VAULT_ROLE_ID"  # approle
    secret_id_env: str = "VAULT_SECRET_ID"  # noqa: S105 - approle; the name of a variable, not a secret
    kubernetes_role: str | None = None  # kubernetes: the Vault role bound to the service account
    kubernetes_mount: str = "kubernetes"
    kubernetes_token_path: Path = DEFAULT_KUBERNETES_TOKEN_PATH


class VaultProblem(enum.Enum):
    """What kind of failure a call met; plug-ins choose their error code from it."""

    SDK_MISSING = "sdk-missing"  # hvac is not installed
    CREDENTIALS_MISSING = "credentials-missing"  # no token, ids or JWT to log in with
    LOGIN_REFUSED = "login-refused"  # the auth method refused the ids or the JWT
    ACCESS_DENIED = "access-denied"  # HTTP 401/403 on a call (after one re-login, if any)
    INVALID_REQUEST = "invalid-request"  # HTTP 400: see server_errors
    NOT_FOUND = "not-found"  # HTTP 404: no such mount or path
    THROTTLED = "throttled"  # HTTP 429
    UNAVAILABLE = "unavailable"  # sealed, down, unreachable, timed out
    TLS = "tls"  # the server's certificate was not trusted
    FAILED = "failed"  # anything else


class VaultCallError(Exception):
    """A failed Vault call. Internal to the plug-ins: always converted before it leaves one."""

    def __init__(
        self, problem: VaultProblem, message: str, *, status: str = "?", server_errors: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message  # one line; names the server and the status, no secret
        self.status = status  # the HTTP status as text, "?" when there was none
        # Vault's own error texts (e.g. "common name x not allowed by this role"): they name
        # paths, roles and domains, never the token. Plug-ins use them to choose a code.
        self.server_errors = server_errors


_LOGIN_HINTS: dict[str, str] = {
    "token": "set VAULT_TOKEN (or BAO_TOKEN), or use auth: approle",
    "approle": "set the environment variables named by role_id_env and secret_id_env",
    "kubernetes": "set kubernetes_role, and mount the service-account token at kubernetes_token_path",
}


def login_hint(error: VaultCallError, method: str) -> str:
    """The hint for a failure every Vault plug-in reports alike (no SDK, no credentials, login refused);
    each plug-in gives it its own code (``kms-credentials-missing``, ``vault-pki-credentials-missing``)."""
    match error.problem:
        case VaultProblem.SDK_MISSING:
            return "pip install 'certreconcile[vault]'"
        case VaultProblem.CREDENTIALS_MISSING:
            return _LOGIN_HINTS[method]
        case _:
            return "check the AppRole ids, or the Kubernetes role and its bound service account"


_STATUS_BY_ERROR = {
    "InvalidRequest": 400,
    "Unauthorized": 401,
    "Forbidden": 403,
    "InvalidPath": 404,
    "RateLimitExceeded": 429,
    "InternalServerError": 500,
    "VaultNotInitialized": 501,
    "BadGateway": 502,
    "VaultDown": 503,
}


def _status(error: Exception) -> str:
    """hvac raises one class per HTTP status and keeps no status code: map the class back."""
    return str(_STATUS_BY_ERROR.get(type(error).__name__, "?"))


def one_line(text: str, limit: int = 200) -> str:
    """A server's error text made safe to show on one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class VaultConnection:
    """A lazily logged-in hvac client for one server. Thread-safe; shared by the calls of one plug-in."""

    def __init__(
        self,
        *,
        url: str,
        login: VaultLogin,
        label: str,
        namespace: str | None = None,
        ca_bundle: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._url = url
        self._login_config = login
        self._label = label  # what the messages call the user, e.g. "the vault KMS"
        self._namespace = namespace
        self._ca_bundle = ca_bundle
        self._env = dict(env or {})
        self._timeout = timeout
        self._client: Any = None
        self._generation = 0  # bumped by every login: a failed call re-logs in only once per token
        self._logins = 0
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        """``scheme://host[:port]`` of the server, safe to show."""
        return display_url(self._url)

    @property
    def logins(self) -> int:
        """How many times this connection logged in (approle, kubernetes) or took its token."""
        return self._logins

    @property
    def method(self) -> VaultAuthMethod:
        return self._login_config.method

    # ------------------------------------------------------------------ calls

    def post(self, what: str, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``path`` (``/v1/...``); the decoded JSON answer, ``{}`` when the server sent none."""
        return self._request(what, lambda client: client.adapter.post(path, json=dict(body)))

    def get(self, what: str, path: str) -> dict[str, Any]:
        """GET ``path`` (``/v1/...``); the decoded JSON answer, ``{}`` when the server sent none."""
        return self._request(what, lambda client: client.adapter.get(path))

    def _request(self, what: str, call: Callable[[Any], Any]) -> dict[str, Any]:
        client, generation = self._current()
        try:
            response = self._guarded(what, lambda: call(client))
        except VaultCallError as error:
            # A token from a login expires: log in again once and retry once. A static token cannot be renewed.
            if error.problem is not VaultProblem.ACCESS_DENIED or self.method == "token":
                raise
            client, generation = self._relogin(generation)
            response = self._guarded(what, lambda: call(client))
        return response if isinstance(response, dict) else {}

    def _current(self) -> tuple[Any, int]:
        with self._lock:
            if self._client is None:
                self._client = self._logged_in_client()
                self._generation += 1
            return self._client, self._generation

    def _relogin(self, failed_generation: int) -> tuple[Any, int]:
        with self._lock:
            if self._generation == failed_generation:  # else another thread already logged in again
                self._client = self._logged_in_client()
                self._generation += 1
            return self._client, self._generation

    # ------------------------------------------------------------------ login

    def _logged_in_client(self) -> Any:
        try:
            import hvac
        except ImportError as exc:
            raise VaultCallError(VaultProblem.SDK_MISSING, f"{self._label} needs hvac, which is not installed") from exc
        verify: bool | str = str(self._ca_bundle) if self._ca_bundle is not None else True
        client = hvac.Client(url=self._url, namespace=self._namespace, verify=verify, timeout=self._timeout)
        config = self._login_config
        match config.method:
            case "token":
                token = self._env.get("VAULT_TOKEN") or self._env.get("BAO_TOKEN")
                if not token:
                    raise VaultCallError(
                        VaultProblem.CREDENTIALS_MISSING, f"no token for {self._label} at {self.where}"
                    )
                client.token = token
            case "approle":
                role_id = self._env.get(config.role_id_env)
                secret_id = self._env.get(config.secret_id_env)
                if not role_id or not secret_id:
                    raise VaultCallError(
                        VaultProblem.CREDENTIALS_MISSING,
                        f"no AppRole ids for {self._label} at {self.where} "
                        f"(set {config.role_id_env} and {config.secret_id_env})",
                    )
                self._login_call(
                    "AppRole login", lambda: client.auth.approle.login(role_id=role_id, secret_id=secret_id)
                )
            case "kubernetes":
                jwt = self._service_account_token()
                role = config.kubernetes_role
                if not role:
                    raise VaultCallError(
                        VaultProblem.CREDENTIALS_MISSING, f"no kubernetes_role for {self._label} at {self.where}"
                    )
                mount = config.kubernetes_mount.strip("/")
                self._login_call(
                    "Kubernetes login", lambda: client.auth.kubernetes.login(role=role, jwt=jwt, mount_point=mount)
                )
        self._logins += 1
        return client

    def _service_account_token(self) -> str:
        path = self._login_config.kubernetes_token_path
        try:
            jwt = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise VaultCallError(
                VaultProblem.CREDENTIALS_MISSING,
                f"cannot read the Kubernetes service-account token for {self._label} from {path}"
                f" ({type(exc).__name__})",
            ) from exc
        if not jwt:
            raise VaultCallError(
                VaultProblem.CREDENTIALS_MISSING,
                f"the Kubernetes service-account token file {path} for {self._label} is empty",
            )
        return jwt

    def _login_call(self, what: str, call: Callable[[], Any]) -> None:
        try:
            response = self._guarded(what, call)
        except VaultCallError as error:
            if error.problem in (VaultProblem.INVALID_REQUEST, VaultProblem.ACCESS_DENIED):
                raise VaultCallError(
                    VaultProblem.LOGIN_REFUSED,
                    f"{what} refused by {self.where} (HTTP {error.status})",
                    status=error.status,
                    server_errors=error.server_errors,
                ) from error
            raise
        auth = response.get("auth") if isinstance(response, dict) else None
        if not isinstance(auth, dict) or not auth.get("client_token"):
            raise VaultCallError(VaultProblem.FAILED, f"{what} at {self.where} returned no token")

    # ------------------------------------------------------------------ errors

    def _guarded(self, what: str, call: Callable[[], Any]) -> Any:
        """Run one hvac call; every failure becomes a one-line VaultCallError naming no secret."""
        import hvac.exceptions
        import requests

        where = self.where
        try:
            return call()
        except hvac.exceptions.InvalidRequest as exc:
            errors = tuple(one_line(str(error)) for error in (exc.errors or []))
            raise VaultCallError(
                VaultProblem.INVALID_REQUEST,
                f"{what} refused by {where} (HTTP 400)",
                status="400",
                server_errors=errors,
            ) from exc
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized) as exc:
            raise VaultCallError(
                VaultProblem.ACCESS_DENIED, f"{what} denied by {where} (HTTP {_status(exc)})", status=_status(exc)
            ) from exc
        except hvac.exceptions.InvalidPath as exc:
            errors = tuple(one_line(str(error)) for error in (exc.errors or []))
            raise VaultCallError(
                VaultProblem.NOT_FOUND,
                f"{what}: no such path at {where} (HTTP 404)",
                status="404",
                server_errors=errors,
            ) from exc
        except hvac.exceptions.RateLimitExceeded as exc:
            raise VaultCallError(
                VaultProblem.THROTTLED, f"{what}: {where} rate-limits us (HTTP 429)", status="429"
            ) from exc
        except (hvac.exceptions.VaultDown, hvac.exceptions.BadGateway, hvac.exceptions.VaultNotInitialized) as exc:
            raise VaultCallError(
                VaultProblem.UNAVAILABLE,
                f"{what}: {where} is sealed or down (HTTP {_status(exc)})",
                status=_status(exc),
            ) from exc
        except hvac.exceptions.VaultError as exc:
            raise VaultCallError(
                VaultProblem.FAILED, f"{what} failed at {where} (HTTP {_status(exc)})", status=_status(exc)
            ) from exc
        except requests.exceptions.SSLError as exc:
            raise VaultCallError(VaultProblem.TLS, f"{what}: TLS with {where} failed") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise VaultCallError(
                VaultProblem.UNAVAILABLE, f"{what}: cannot reach {where} ({type(exc).__name__})"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise VaultCallError(VaultProblem.FAILED, f"{what} failed at {where} ({type(exc).__name__})") from exc
        except ValueError as exc:  # a body that is not JSON
            raise VaultCallError(VaultProblem.FAILED, f"{what}: {where} answered something that is not JSON") from exc
