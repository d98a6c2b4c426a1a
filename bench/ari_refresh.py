"""Benchmark: one ARI refresh (RFC 9773) of N certificates by the ACME issuer, questions in turn or in flight.

    python bench/ari_refresh.py [--certificates 100] [--delays 0,50] [--repeat 3]

``refresh_renewal_info`` (what every ``run`` cycle and ``apply`` do once a certificate's Retry-After has
passed) asks the real ACME issuer about N certificates, each question an unauthenticated GET. The CA is
the tests' ``AriProxy`` (a threading HTTPS server that answers ``renewalInfo``) in front of a fresh Pebble
(which has no ARI of its own), with ``--delays`` milliseconds added to every answer: 0 (this machine),
and a CA across a network. Timed with the issuer's ``renewal_info_in_flight`` set to 1 (in turn, as every
refresh was before) and as it ships (8). Every answer must give the proxy's window.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certreconcile.actual.model import ActualCertificate, ActualState
from certreconcile.apply.ari import refresh_renewal_info
from certreconcile.domain.keys import KeyType
from certreconcile.domain.policy import OnDelete
from certreconcile.domain.status import CertStatus
from certreconcile.plugins.issuers.acme.issuer import AcmeIssuer
from certreconcile.plugins.issuers.acme_config import AcmeIssuerConfig

TESTS = Path(__file__).resolve().parents[1] / "tests"
NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def leaves(count: int) -> list[str]:
    """``count`` certificates of one throw-away CA (the ARI id needs the authority key identifier)."""
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    authority = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
        x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    )
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    pems = []
    for number in range(count):
        cert = (
            x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(issuer)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=89))
            .add_extension(authority, critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"c{number}.example.com")]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        pems.append(cert.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    return pems


def actual_state(pems: list[str]) -> tuple[ActualState, dict[str, str]]:
    """Live certificates of issuer ``ca`` with no stored window (all due), and their PEMs by id."""
    certificates = {
        f"c{number}": ActualCertificate(
            f"00000000-0000-0000-0000-{number:012d}", f"c{number}", (f"c{number}.example.com",), "ca",
            KeyType.ECDSA_P256, f"{number:x}", NOW - datetime.timedelta(days=1), NOW + datetime.timedelta(days=89),
            CertStatus.ACTIVE, "fp", OnDelete.RETIRE, has_key=True,
        )
        for number in range(len(pems))
    }
    by_id = {current.id: pems[number] for number, current in enumerate(certificates.values())}
    return ActualState(ActualState.empty().meta, certificates), by_id


class _NoStoredAnswers:
    """The store's side of a refresh that persists nothing: no stored answer for any certificate."""

    def renewal_infos(self, cert_ids: Any) -> dict[str, Any]:
        return {}

    @contextmanager
    def session(self) -> Iterator[_NoStoredAnswers]:
        yield self


def measure(proxy: Any, pems: list[str], delays: list[float], repeat: int) -> list[tuple[float, int, float]]:
    """(delay ms, questions in flight, median seconds of a refresh) for each delay and width."""
    actual, by_id = actual_state(pems)
    window = (NOW + datetime.timedelta(days=60), NOW + datetime.timedelta(days=61))
    proxy.window = window
    issuer = AcmeIssuer("ca", AcmeIssuerConfig(directory=proxy.directory_url), None, None,  # type: ignore[arg-type]
                        http01=None, dns_providers={}, env={}, ca_bundle=str(proxy.ca_bundle))  # type: ignore[arg-type]  # fmt: skip
    issuer.renewal_info(pems[0], NOW)  # the directory read, once
    rows = []
    for delay in delays:
        proxy.renewal_info_asked = _Slowed(delay / 1000)
        for width in (1, AcmeIssuer.renewal_info_in_flight):
            issuer.renewal_info_in_flight = width  # type: ignore[misc]
            seconds = []
            for _ in range(repeat):
                began = time.perf_counter()
                refreshed = refresh_renewal_info(actual, {"ca": issuer}, _NoStoredAnswers(), NOW,  # type: ignore[arg-type]
                                                 persist=False, leaf_cache=dict(by_id))  # fmt: skip
                seconds.append(time.perf_counter() - began)
                windows = [c.renewal_window for c in refreshed.actual.certificates.values()]
                assert refreshed.asked == len(pems), refreshed.warnings
                assert {(w.start, w.end) if w is not None else None for w in windows} == {window}
            rows.append((delay, width, statistics.median(seconds)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--certificates", type=int, default=100)
    parser.add_argument("--delays", default="0,50", help="milliseconds added to every answer (default 0,50)")
    parser.add_argument("--repeat", type=int, default=3, help="timed refreshes per row (the median is shown)")
    args = parser.parse_args()
    sys.path.insert(0, str(TESTS))
    from acme_servers import AriProxy, start_pebble

    pems = leaves(args.certificates)
    delays = [float(part) for part in args.delays.split(",")]
    with tempfile.TemporaryDirectory(prefix="crari") as temp, start_pebble(Path(temp) / "pebble", "127.0.0.1:1") as ca:
        proxy = AriProxy(ca, Path(temp))
        try:
            rows = measure(proxy, pems, delays, args.repeat)
        finally:
            proxy.close()
    print(f"\n## ARI refresh of {len(pems)} certificates by the ACME issuer (Pebble behind the tests' AriProxy)\n")
    print("| added per answer | in flight | refresh s | questions/s |")
    print("|---:|---:|---:|---:|")
    for delay, width, seconds in rows:
        print(f"| {delay:.0f} ms | {width} | {seconds:.2f} | {len(pems) / seconds:.0f} |")


class _Slowed(list[str]):
    """The proxy's record of the questions asked, which waits ``delay`` seconds in each answer's thread."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def append(self, item: str) -> None:
        time.sleep(self.delay)
        super().append(item)


if __name__ == "__main__":
    main()
