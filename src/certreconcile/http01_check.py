"""The HTTP-01 self-check of ``CertificateManager.validate_acme_challenge``, as certbot's.

The key authorization is presented on the configured solver (the standalone server, or a file under the
web root), fetched from outside with a plain HTTP GET of ``http://<domain>/.well-known/acme-challenge/<token>``
(what the CA will fetch), compared, and always cleaned up. ``base_url`` replaces ``http://<domain>`` (the
Host header stays the domain): for tests, whose names resolve nowhere, and for a check through a known address.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from typing import Protocol

from certreconcile.domain.names import normalize_domain
from certreconcile.errors import CertReconcileError
from certreconcile.plugins.ports import Http01Solver

__all__ = ["CHALLENGE_PATH", "Http01SelfCheckable", "check_token", "self_check"]

CHALLENGE_PATH = "/.well-known/acme-challenge/"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
#: Longer than any key authorization (token + "." + 43 characters): a bigger body is not ours.
_MAX_BODY = 1024


class Http01SelfCheckable(Protocol):
    """An issuer that can compute key authorizations and has an HTTP-01 solver (the ACME issuer)."""

    @property
    def http01_solver(self) -> Http01Solver: ...

    def key_authorization(self, token: str) -> str: ...


def check_token(token: str) -> None:
    """An ACME token is base64url (RFC 8555 §8.3): never a path, never empty."""
    if not _TOKEN.fullmatch(token):
        raise CertReconcileError("an ACME token is base64url characters only", code="challenge-token-invalid")


def _url(domain: str, token: str, base_url: str | None) -> str:
    base = base_url.rstrip("/") if base_url is not None else f"http://{domain}"
    if not base.startswith(("http://", "https://")):
        raise CertReconcileError("challenge_base_url must be http:// or https://", code="challenge-url-invalid")
    return f"{base}{CHALLENGE_PATH}{token}"


def _fetch(url: str, host: str, timeout: float) -> bytes | None:
    """The body served at ``url`` (Host: ``host``), or None when nothing answers 200."""
    request = urllib.request.Request(url, headers={"Host": host})  # noqa: S310 - http(s) checked by _url
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return bytes(response.read(_MAX_BODY)) if response.status == 200 else None
    except (OSError, urllib.error.URLError):
        return None


def self_check(
    issuer: Http01SelfCheckable, domain: str, token: str, *, base_url: str | None = None, timeout: float = 5.0
) -> bool:
    """Present the key authorization for ``token``, fetch it as the CA would, compare, clean up."""
    check_token(token)
    host = normalize_domain(domain)
    url = _url(host, token, base_url)
    expected = issuer.key_authorization(token)
    solver = issuer.http01_solver
    solver.present(token, expected)
    try:
        body = _fetch(url, host, timeout)
    finally:
        solver.cleanup(token)
    return body is not None and body.decode(errors="replace").strip() == expected
