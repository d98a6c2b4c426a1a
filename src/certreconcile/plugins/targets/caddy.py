"""The caddy target: certificates loaded into a running Caddy through its admin API.

Each certificate is ONE entry of ``apps/tls/certificates/load_pem``::

    {"@id": "certreconcile-<name>", "certificate": <fullchain>, "key": <key>, "tags": ["certreconcile:<name>", ...]}

A deployment replaces that entry through ``/id/certreconcile-<name>`` (``PATCH``), or appends it
(``POST`` on the array; ``PUT`` of the missing parents on a config without them). Caddy applies
each change as a graceful config reload; every other entry and setting stays as it was. An entry
that already holds this certificate, key and tags is left alone (no reload).

Caddy serves these certificates on every server with TLS (a ``tls_connection_policies`` entry,
or automatic HTTPS, which skips names that have a loaded certificate). Config changes through
the API are lost when Caddy restarts from its own config file, unless it runs with ``--resume``;
verification catches that (the next plan redistributes). Caddy's autosave file
(``autosave.json``) then holds the key too, like everything the admin API returns: keep the
admin endpoint on loopback or a Unix socket.

Caddy replaces its admin endpoint on every config load, a refused one included: it starts a new
listener and shuts the old one down in the background, so a connection that lands on the old
one just then is dropped. A deployment whose connection was dropped mid-request runs again
from its first read (bounded, :class:`~certreconcile.retry.RetryPolicy`): it reads before it
writes, so a write that did land is found and not repeated. A refused connection or a timeout
is not retried.

Errors are one line with Caddy's own answer; the private key is scrubbed from any text shown.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx

from certreconcile.desired.model import DEFAULT_VERIFY_TIMEOUT
from certreconcile.errors import TargetError
from certreconcile.plugins.ports import DeployBundle, TargetObservation
from certreconcile.plugins.targets.caddy_config import CaddyTargetConfig
from certreconcile.plugins.targets.handshake import observe_served
from certreconcile.plugins.targets.readback import observe_pem_text
from certreconcile.retry import RetryPolicy, Verdict

__all__ = ["LOAD_PEM_PATH", "CaddyTarget", "entry_id", "entry_tag"]

LOAD_PEM_PATH = ("apps", "tls", "certificates", "load_pem")


# The admin endpoint's replacement drops connections for a moment, not for seconds.
DEFAULT_RETRY = RetryPolicy(attempts=4, total=5.0, first_delay=0.05, max_delay=0.5)


class _Dropped(TargetError):
    """The admin API closed the connection mid-request (a config load replacing its listener)."""


def _dropped(exc: BaseException) -> Verdict:
    return Verdict(isinstance(exc, _Dropped), None, "the admin API dropped the connection")


def entry_id(name: str) -> str:
    return f"certreconcile-{name}"


def entry_tag(name: str) -> str:
    return f"certreconcile:{name}"


class CaddyTarget:
    def __init__(
        self,
        name: str,
        config: CaddyTargetConfig,
        verify: str | None = None,
        verify_timeout: timedelta = DEFAULT_VERIFY_TIMEOUT,
        sni: str | None = None,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: float = 30.0,
    ) -> None:
        self.name = name
        self._admin = config.admin.rstrip("/")
        self._tags = config.tags
        self._verify = verify
        self._verify_timeout = verify_timeout
        self._sni = sni
        self._transport = transport  # tests only: an in-memory Caddy
        self._timeout = timeout
        self._retry = retry

    # ------------------------------------------------------------ deploy

    def deploy(self, bundle: DeployBundle) -> None:
        self._retry.call(f"target {self.name}: deploy {bundle.name} to Caddy", lambda: self._deploy(bundle), _dropped)

    def _deploy(self, bundle: DeployBundle) -> None:
        key = bundle.key_pem.reveal().decode()
        entry = {
            "@id": entry_id(bundle.name),
            "certificate": bundle.fullchain_pem,
            "key": key,
            "tags": [entry_tag(bundle.name), *(tag for tag in self._tags if tag != entry_tag(bundle.name))],
        }
        with self._client() as client:
            current = self._request(client, "GET", f"/id/{entry_id(bundle.name)}", secret=key, missing_ok=True)
            if current is not None:
                if current == entry:
                    return  # already loaded: no config reload
                self._request(client, "PATCH", f"/id/{entry_id(bundle.name)}", body=entry, secret=key)
                return
            self._append(client, entry, key)

    def _append(self, client: httpx.Client, entry: dict[str, Any], key: str) -> None:
        """Append ``entry`` to load_pem, creating whichever parents of that path are missing.

        Top-down: Caddy answers ``null`` for a missing key of an existing object, but 400 for a
        path through a missing one.
        """
        if self._request(client, "GET", "/config/", secret=key) is None:
            # Caddy runs without any config: this becomes its whole config.
            self._request(client, "POST", "/config/", body=_nested(LOAD_PEM_PATH, [entry]), secret=key)
            return
        for depth in range(1, len(LOAD_PEM_PATH) + 1):
            if self._request(client, "GET", _config_path(LOAD_PEM_PATH[:depth]), secret=key) is None:
                value = _nested(LOAD_PEM_PATH[depth:], [entry])
                self._request(client, "PUT", _config_path(LOAD_PEM_PATH[:depth]), body=value, secret=key)
                return
        self._request(client, "POST", _config_path(LOAD_PEM_PATH), body=entry, secret=key)  # appends

    # ------------------------------------------------------------ observe

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        if self._verify:
            return observe_served(self._verify, domains, self._sni)
        try:
            entries = self._retry.call(f"target {self.name}: read Caddy's load_pem", self._load_pem, _dropped)
        except TargetError as exc:
            return TargetObservation(fingerprint=None, error=exc.message)
        tag = entry_tag(name)
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and tag in (entry.get("tags") or ()):
                return observe_pem_text(str(entry.get("certificate", "")), f"Caddy's load_pem entry {tag}")
        return TargetObservation(fingerprint=None, error=f"Caddy at {self._admin} has no load_pem entry tagged {tag}")

    def _load_pem(self) -> Any:
        with self._client() as client:
            return self._request(client, "GET", _config_path(LOAD_PEM_PATH), secret="")

    def verify_timeout(self) -> timedelta:
        return self._verify_timeout

    # ------------------------------------------------------------ HTTP

    def _client(self) -> httpx.Client:
        # No redirects: the body holds a private key. Caddy checks Host/Origin itself.
        return httpx.Client(
            base_url=self._admin, timeout=self._timeout, follow_redirects=False, transport=self._transport
        )

    def _request(
        self, client: httpx.Client, method: str, path: str, *, secret: str, body: Any = None, missing_ok: bool = False
    ) -> Any:
        """Caddy's JSON answer (None for ``null`` or an empty body); one-line TargetError otherwise."""
        try:
            response = client.request(
                method,
                path,
                content=json.dumps(body).encode() if body is not None else None,
                headers={"Content-Type": "application/json"} if body is not None else None,
            )
        except httpx.HTTPError as exc:
            # ReadError/WriteError/RemoteProtocolError: connected, then dropped (see the module doc).
            dropped = isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError)
            raise (_Dropped if dropped else TargetError)(
                f"target {self.name}: Caddy's admin API at {self._admin} is unreachable "
                f"({type(exc).__name__}: {_scrub(str(exc), secret)})",
                code="target-unreachable",
                hint="check that Caddy runs and that `admin` is its admin endpoint",
            ) from None  # the request (and its body) stays out of the traceback
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise TargetError(
                f"target {self.name}: Caddy answered {method} {path} with {response.status_code}: "
                f"{_error_text(response, secret)}",
                code="target-rejected",
                hint="Caddy's log has the details; the certificate must suit a TLS server of its config",
            )
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            raise TargetError(
                f"target {self.name}: Caddy answered {method} {path} with something other than JSON",
                code="target-rejected",
                hint="check that `admin` is Caddy's admin endpoint",
            ) from None


def _nested(segments: tuple[str, ...], value: Any) -> Any:
    """``value`` under the keys ``segments`` (outermost first)."""
    for segment in reversed(segments):
        value = {segment: value}
    return value


def _config_path(segments: tuple[str, ...]) -> str:
    return "/config/" + "/".join(segments)


def _error_text(response: httpx.Response, secret: str) -> str:
    """Caddy's ``error`` (or the body), scrubbed of the key BEFORE it is shortened to one line."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    text = str(payload["error"]) if isinstance(payload, dict) and "error" in payload else response.text
    return " ".join(_scrub(text, secret).split())[:300] or response.reason_phrase


def _scrub(text: str, secret: str) -> str:
    """``text`` with no trace of the key: the key, each line of it (also JSON-escaped), and
    anything after a private-key armour."""
    if secret.strip():
        forms = [secret.strip(), json.dumps(secret.strip())[1:-1]]
        forms += [line for line in secret.splitlines() if len(line) >= 16]
        for form in forms:
            text = text.replace(form, "<redacted>")
    armour = text.find("PRIVATE KEY")
    if armour != -1:
        text = text[: max(0, text.rfind("-----", 0, armour))] + "<redacted>"
    return text
