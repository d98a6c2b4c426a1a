"""Verification by TLS handshake: what a server really serves for a name (SNI)."""

from __future__ import annotations

import socket
import ssl

from cryptography import x509

from certreconcile.domain.certs import fingerprint_of_der
from certreconcile.plugins.ports import TargetObservation

__all__ = ["handshake_observation", "observation_context", "observe_served", "parse_host_port", "sni_for"]


def parse_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def sni_for(domain: str) -> str:
    """A concrete name to ask for: a wildcard's leftmost label becomes a probe label."""
    return "certreconcile-probe" + domain[1:] if domain.startswith("*.") else domain


def observation_context() -> ssl.SSLContext:
    """A client context that trusts nothing and checks nothing: an observation compares fingerprints.

    Not ``ssl.create_default_context()``: it loads the system trust store (~150 CA certificates,
    20-80 ms of CPU), once per handshake, and an agent's deployment makes several handshakes.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we compare fingerprints, not trust chains
    return context


def handshake_observation(address: str, server_name: str, timeout: float = 5.0) -> TargetObservation:
    host, port = parse_host_port(address)
    context = observation_context()
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        return TargetObservation(fingerprint=None, error=f"handshake with {address} failed: {exc}")
    if der is None:
        return TargetObservation(fingerprint=None, error=f"{address} sent no certificate")
    cert = x509.load_der_x509_certificate(der)
    return TargetObservation(
        fingerprint=fingerprint_of_der(der),
        serial_number=format(cert.serial_number, "x"),
        not_after=cert.not_valid_after_utc,
    )


def observe_served(
    address: str, domains: tuple[str, ...], sni: str | None = None, timeout: float = 5.0
) -> TargetObservation:
    """What ``address`` serves for a certificate: one handshake per name (SNI), or with ``sni`` only.

    A server may route names to different certificates: the observation has a fingerprint only
    when every name got the same leaf; otherwise none, and an error naming the odd one out.
    """
    names = (sni,) if sni else tuple(dict.fromkeys(sni_for(domain) for domain in domains))
    first = handshake_observation(address, names[0], timeout)
    for name in names[1:]:
        seen = handshake_observation(address, name, timeout)
        if seen.fingerprint != first.fingerprint:
            what = seen.fingerprint[:16] if seen.fingerprint else "nothing"
            return TargetObservation(
                fingerprint=None,
                error=f"{address} serves {what} for {name} but "
                f"{first.fingerprint[:16] if first.fingerprint else 'nothing'} for {names[0]}"
                + (f" ({seen.error})" if seen.error else ""),
            )
    return first
