"""Vault / OpenBao transit: a data key per private key, bound to its row as associated data.

``POST <mount>/datakey/plaintext/<key>`` with ``associated_data`` = the row's AAD returns a
fresh 256-bit data key and its ciphertext (``vault:vN:...``); only the ciphertext is kept.
``decrypt`` with the same associated data unwraps it: AES-256-GCM in transit refuses any
other row, table, key version or purpose. The transit key must be ``aes256-gcm96`` (the
default type). A server that silently ignores ``associated_data`` (older than Vault 1.15 /
OpenBao 2) is refused, so an unbound data key is never stored.

hvac is imported here only, when a key is first wrapped or unwrapped: building the adapter
does no I/O and reads no credentials. Token from ``VAULT_TOKEN`` (or ``BAO_TOKEN``); AppRole
ids from the environment variables the configuration names.

Errors are :class:`~certreconcile.errors.KmsError` with a stable code; they name the
server (``scheme://host:port``) and the HTTP status, never tokens, ids or key bytes.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from certreconcile.errors import KmsError
from certreconcile.plugins.kms._redact import display_url
from certreconcile.plugins.ports import EncryptionContext, SecretBytes, WrappedKey

__all__ = ["VaultKms"]

_DEK_BYTES = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


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


class VaultKms:
    name = "vault"

    def __init__(
        self,
        *,
        url: str,
        key: str,
        mount: str = "transit",
        auth: Literal["token", "approle"] = "token",
        role_id_env: str = "VAULT_ROLE_ID",
        secret_id_env: str = "VAULT_SECRET_ID",  # noqa: S107 - the name of a variable, not a secret
        namespace: str | None = None,
        ca_bundle: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._url = url
        self._key = key
        self._mount = mount.strip("/")
        self._auth = auth
        self._role_id_env = role_id_env
        self._secret_id_env = secret_id_env
        self._namespace = namespace
        self._ca_bundle = ca_bundle
        self._env = dict(env or {})
        self._timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def key_id(self) -> str:
        """The transit key, as recorded in envelopes (the key version is inside the ciphertext)."""
        return f"{self._mount}/{self._key}"

    @property
    def _where(self) -> str:
        return display_url(self._url)

    # ------------------------------------------------------------------ client and login

    def _vault_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._login()
            return self._client

    def _login(self) -> Any:
        try:
            import hvac
        except ImportError as exc:
            raise KmsError(
                "the vault KMS needs hvac, which is not installed",
                code="kms-sdk-missing",
                hint="pip install 'certreconcile[vault]'",
            ) from exc
        verify: bool | str = str(self._ca_bundle) if self._ca_bundle is not None else True
        client = hvac.Client(url=self._url, namespace=self._namespace, verify=verify, timeout=self._timeout)
        match self._auth:
            case "token":
                token = self._env.get("VAULT_TOKEN") or self._env.get("BAO_TOKEN")
                if not token:
                    raise KmsError(
                        f"no token for the vault KMS at {self._where}",
                        code="kms-credentials-missing",
                        hint="set VAULT_TOKEN (or BAO_TOKEN), or use auth: approle",
                    )
                client.token = token
            case "approle":
                role_id = self._env.get(self._role_id_env)
                secret_id = self._env.get(self._secret_id_env)
                if not role_id or not secret_id:
                    raise KmsError(
                        f"no AppRole ids for the vault KMS at {self._where}",
                        code="kms-credentials-missing",
                        hint=f"set {self._role_id_env} and {self._secret_id_env}",
                    )
                self._guarded("AppRole login", lambda: client.auth.approle.login(role_id=role_id, secret_id=secret_id))
        return client

    # ------------------------------------------------------------------ calls

    def _guarded(self, what: str, call: Any) -> Any:
        """Run one hvac call; every failure becomes a one-line KmsError naming no secret."""
        import hvac.exceptions
        import requests

        try:
            return call()
        except hvac.exceptions.InvalidRequest as exc:
            text = " ".join(str(error) for error in (exc.errors or [])).lower()
            if "not found" in text:
                code, hint = "kms-key-not-found", f"create the transit key {self.key_id}"
            elif "authentication failed" in text or "invalid ciphertext" in text or "decode" in text:
                code, hint = "kms-decrypt-failed", "the stored key_ref belongs to another row or was altered"
            else:
                code, hint = "kms-error", "see the Vault server log"
            raise KmsError(f"{what} refused by {self._where} (HTTP 400)", code=code, hint=hint) from exc
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized) as exc:
            raise KmsError(
                f"{what} denied by {self._where} (HTTP {_status(exc)})",
                code="kms-access-denied",
                hint=f"the token needs update on {self._mount}/datakey/plaintext/{self._key} "
                f"and {self._mount}/decrypt/{self._key} (and {self._mount}/encrypt/{self._key} for rewrap)",
            ) from exc
        except hvac.exceptions.InvalidPath as exc:
            raise KmsError(
                f"{what}: no such path at {self._where} (HTTP 404)",
                code="kms-key-not-found",
                hint=f"enable transit at {self._mount}/ and create the key {self._key}",
            ) from exc
        except hvac.exceptions.RateLimitExceeded as exc:
            raise KmsError(f"{what}: {self._where} rate-limits us (HTTP 429)", code="kms-throttled") from exc
        except (hvac.exceptions.VaultDown, hvac.exceptions.BadGateway, hvac.exceptions.VaultNotInitialized) as exc:
            raise KmsError(
                f"{what}: {self._where} is sealed or down (HTTP {_status(exc)})",
                code="kms-unavailable",
                hint="unseal the server or retry later",
            ) from exc
        except hvac.exceptions.VaultError as exc:
            raise KmsError(f"{what} failed at {self._where} (HTTP {_status(exc)})", code="kms-error") from exc
        except requests.exceptions.SSLError as exc:
            raise KmsError(
                f"{what}: TLS with {self._where} failed",
                code="kms-unavailable",
                hint="set kms.vault.ca_bundle to the PEM of the CA that signed the server's certificate",
            ) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise KmsError(
                f"{what}: cannot reach {self._where} ({type(exc).__name__})",
                code="kms-unavailable",
                hint="check kms.vault.url and the network; retry later",
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise KmsError(f"{what} failed at {self._where} ({type(exc).__name__})", code="kms-error") from exc

    def _post(self, what: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        client = self._vault_client()
        response = self._guarded(what, lambda: client.adapter.post(path, json=body))
        if not isinstance(response, dict) or not isinstance(response.get("data"), dict):
            raise KmsError(f"{what}: {self._where} returned no data", code="kms-error")
        for warning in response.get("warnings") or ():
            if "associated_data" in str(warning):
                raise KmsError(
                    f"{self._where} ignores associated_data on transit data keys",
                    code="kms-unsupported",
                    hint="upgrade to Vault >= 1.15 or OpenBao >= 2: an unbound data key is never stored",
                )
        data: dict[str, Any] = response["data"]
        return data

    def generate_data_key(self, context: EncryptionContext) -> tuple[SecretBytes, WrappedKey]:
        what = f"datakey for {context.table} {context.row_id}"
        data = self._post(
            what,
            f"/v1/{self._mount}/datakey/plaintext/{self._key}",
            {"associated_data": _b64(context.as_aad()), "bits": _DEK_BYTES * 8},
        )
        ciphertext = data.get("ciphertext")
        try:
            plaintext = base64.b64decode(str(data.get("plaintext")), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KmsError(f"{what}: {self._where} returned a malformed data key", code="kms-error") from exc
        if not isinstance(ciphertext, str) or not ciphertext.startswith("vault:") or len(plaintext) != _DEK_BYTES:
            raise KmsError(f"{what}: {self._where} returned a malformed data key", code="kms-error")
        return SecretBytes(plaintext), WrappedKey(key_id=self.key_id, ciphertext=ciphertext.encode("ascii"))

    def wrap_data_key(self, dek: SecretBytes, context: EncryptionContext) -> WrappedKey:
        """Transit ``encrypt`` of an existing data key, bound to the row as associated data (``kms rewrap``)."""
        what = f"encrypt for {context.table} {context.row_id}"
        if len(dek.reveal()) != _DEK_BYTES:
            raise KmsError(f"{what}: the data key is not 256 bits", code="kms-error")
        data = self._post(
            what,
            f"/v1/{self._mount}/encrypt/{self._key}",
            {"plaintext": _b64(dek.reveal()), "associated_data": _b64(context.as_aad())},
        )
        ciphertext = data.get("ciphertext")
        if not isinstance(ciphertext, str) or not ciphertext.startswith("vault:"):
            raise KmsError(f"{what}: {self._where} returned a malformed wrapped key", code="kms-error")
        return WrappedKey(key_id=self.key_id, ciphertext=ciphertext.encode("ascii"))

    def decrypt_data_key(self, wrapped: WrappedKey, context: EncryptionContext) -> SecretBytes:
        what = f"decrypt for {context.table} {context.row_id}"
        if wrapped.key_id != self.key_id:
            raise KmsError(
                f"this data key was wrapped by transit key {wrapped.key_id}, not by {self.key_id}",
                code="kms-wrong-master-key",
                hint="configure the transit key the state was created with, or run `certreconcile kms rewrap`",
            )
        try:
            ciphertext = wrapped.ciphertext.decode("ascii")
        except UnicodeDecodeError as exc:
            raise KmsError(f"{what}: the wrapped data key is damaged", code="kms-decrypt-failed") from exc
        data = self._post(
            what,
            f"/v1/{self._mount}/decrypt/{self._key}",
            {"ciphertext": ciphertext, "associated_data": _b64(context.as_aad())},
        )
        try:
            plaintext = base64.b64decode(str(data.get("plaintext")), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KmsError(f"{what}: {self._where} returned a malformed data key", code="kms-error") from exc
        if len(plaintext) != _DEK_BYTES:
            raise KmsError(f"{what}: {self._where} returned a malformed data key", code="kms-error")
        return SecretBytes(plaintext)
