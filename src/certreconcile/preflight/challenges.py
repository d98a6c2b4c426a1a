"""The challenge checks of one certificate: DNS-01 through its provider, HTTP-01 through its issuer's solver.

Every value is random (never a real key authorization: no ACME account is needed or made), and every
record and token presented is removed again, also when the check fails half-way.
"""

from __future__ import annotations

import contextlib
import secrets
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

from certreconcile.desired.model import DEFAULT_PROPAGATION_TIMEOUT, CertificateSpec, DesiredState
from certreconcile.domain.names import normalize_domain
from certreconcile.domain.policy import Challenge
from certreconcile.errors import CertReconcileError, DnsError, IssuerError
from certreconcile.http01_check import CHALLENGE_PATH
from certreconcile.plugins.ports import Dns01Provider, DnsTxtRecord, Http01Solver

__all__ = ["challenge_for", "check_dns01", "check_http01", "txt_fqdn"]

#: Longer than any key authorization: a bigger body is not ours.
_MAX_BODY = 1024


def txt_fqdn(domain: str) -> str:
    """Where the CA looks for the DNS-01 value of ``domain`` (a wildcard shares its base name's)."""
    return "_acme-challenge." + normalize_domain(domain).removeprefix("*.")


def challenge_for(spec: CertificateSpec, domain: str, uses_challenges: bool) -> Challenge | None:
    """The challenge the CA will ask for ``domain`` (None: the issuer validates no challenge)."""
    if not uses_challenges:
        return None
    if domain.startswith("*.") or spec.challenge is Challenge.DNS_01:
        return Challenge.DNS_01
    return Challenge.HTTP_01


def _value() -> str:
    return secrets.token_urlsafe(32)  # 43 characters, like a real DNS-01 value


def check_dns01(desired: DesiredState, spec: CertificateSpec, provider: Dns01Provider, domains: tuple[str, ...]) -> str:
    """Publish one TXT value per challenge name, wait until every authoritative server answers them all,
    remove them. Raises the provider's own error (TSIG refused, zone not hosted, not visible in time)."""
    records = tuple(DnsTxtRecord(fqdn=fqdn, value=_value()) for fqdn in dict.fromkeys(map(txt_fqdn, domains)))
    provider_spec = desired.dns_providers.get(spec.dns_provider or "")
    timeout = getattr(provider_spec, "propagation_timeout", DEFAULT_PROPAGATION_TIMEOUT)
    presented: list[DnsTxtRecord] = []
    failure: CertReconcileError | None = None
    try:
        for record in records:
            provider.present(record)
            presented.append(record)
        provider.wait_until_visible(records, timeout if isinstance(timeout, timedelta) else DEFAULT_PROPAGATION_TIMEOUT)
    finally:
        for record in presented:
            try:
                provider.cleanup(record)
            except CertReconcileError as exc:
                failure = failure or exc
    if failure is not None:
        raise DnsError(
            f"a test TXT record could not be removed: {failure.message}",
            code="check-cleanup-failed",
            hint=f"remove the TXT records {', '.join(r.fqdn for r in presented)} by hand; {failure.hint}".rstrip("; "),
        )
    names = ", ".join(record.fqdn for record in records)
    return f"published {names}, answered by every authoritative server, removed"


def fetch_challenge(url: str, host: str, timeout: float) -> bytes:
    """The body served at ``url`` (Host: ``host``); IssuerError saying what answered instead."""
    request = urllib.request.Request(url, headers={"Host": host})  # noqa: S310 - http(s) checked by the caller
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return bytes(response.read(_MAX_BODY))
    except urllib.error.HTTPError as exc:
        raise IssuerError(
            f"{url} answered HTTP {exc.code} instead of the token",
            code="check-http01-unreachable",
            hint="the solver's address is not the one the CA reaches on port 80 of this name: "
            "check http01 (standalone listen, webroot path) and the port forwarding",
        ) from exc
    except (OSError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise IssuerError(
            f"nothing answered at {url} ({reason})",
            code="check-http01-unreachable",
            hint="the CA connects to port 80 of the name: check the DNS of the name, the firewall and that the "
            "port reaches http01.standalone.listen (or the web server of the webroot)",
        ) from exc


def _missing_directories(solver: Http01Solver) -> list[Path]:
    """The directories of a webroot solver that do not exist yet, deepest first."""
    directory = getattr(solver, "challenge_directory", None)
    missing: list[Path] = []
    while isinstance(directory, Path) and not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    return missing


def check_http01(solver: Http01Solver, domain: str, base_url: str | None, timeout: float = 5.0) -> str:
    """Serve a random token through ``solver``, fetch it as the CA would, compare, remove it."""
    host = normalize_domain(domain)
    base = base_url.rstrip("/") if base_url is not None else f"http://{host}"
    if not base.startswith(("http://", "https://")):
        raise CertReconcileError("--http01-base-url must be http:// or https://", code="usage")
    token, expected = secrets.token_urlsafe(32), _value()
    url = f"{base}{CHALLENGE_PATH}{token}"
    made = _missing_directories(solver)
    try:
        solver.present(token, f"{token}.{expected}")
        try:
            body = fetch_challenge(url, host, timeout)
        finally:
            solver.cleanup(token)
    finally:
        for directory in made:  # a webroot's .well-known/acme-challenge made for the check: gone again
            with contextlib.suppress(OSError):
                directory.rmdir()  # only when empty: an order running meanwhile keeps its token
    if body.decode(errors="replace").strip() != f"{token}.{expected}":
        raise IssuerError(
            f"{url} answered something else than the token it was given",
            code="check-http01-wrong-answer",
            hint="another server answers on that address: point the name (or the port forwarding) at the solver",
        )
    return f"served a test token, fetched it from {base}, removed"
