"""A fake CA with fault schedules, for simulations on an injected clock (``bench/simulate.py``).

:class:`FakeCa` is an :class:`~certreconcile.plugins.ports.Issuer` and a
:class:`~certreconcile.plugins.ports.SupportsRenewalInfo`: it signs with a throw-away CA key
held in memory, with a lifetime chosen per certificate name, answers renewal windows (ARI,
RFC 9773) that a simulation can move (:meth:`FakeCa.move_windows`: a mass revocation), and
is down during the scheduled :class:`Interval` s, raising the error the ACME issuer raises
when it cannot reach the CA (``acme-unreachable``). Every order goes through DNS-01 on the
given provider, so a flaky provider (:class:`~certreconcile.testing.fake_faults.FlakyDns01Provider`)
fails orders as a real one would.

It keeps the ledger a simulation reports from: every order (:class:`Order`: when, for which
name, new, ARI renewal or plain renewal, and how much lifetime the replaced certificate had
left) and the current certificate of each name.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certreconcile.clock import Clock
from certreconcile.domain.keys import KeyType
from certreconcile.errors import IssuerError
from certreconcile.plugins.ports import Dns01Provider, DnsTxtRecord, IssuedCertificate, IssueRequest, RenewalInfo

__all__ = ["FakeCa", "Interval", "Issued", "Order", "during"]

#: How long the CA asks clients to wait before asking for a renewal window again (Let's Encrypt: 6 h).
RETRY_AFTER = timedelta(hours=6)
#: Where the suggested window sits in a certificate's lifetime: about two thirds in (Let's Encrypt's
#: 90-day certificates), and about half for lifetimes up to :data:`SHORT_LIFETIME` (an assumption: a
#: window in the last third of a 6-day certificate leaves under 2.4 days, less than a 48-hour outage
#: plus the point the window picks; the simulation's first runs expired such certificates).
WINDOW = (0.60, 0.70)
SHORT_WINDOW = (0.45, 0.55)
SHORT_LIFETIME = timedelta(days=10)


@dataclass(frozen=True, slots=True)
class Interval:
    """A half-open stretch of simulated time ``[start, end)``."""

    start: datetime
    end: datetime

    def covers(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def during(intervals: Iterable[Interval], moment: datetime) -> bool:
    # compared here, not by a call per interval (nor a generator): asked per certificate per cycle of a simulation
    for interval in intervals:  # noqa: SIM110  a loop: any() over a generator costs twice as much here
        if interval.start <= moment < interval.end:
            return True
    return False


@dataclass(frozen=True, slots=True)
class Issued:
    name: str
    serial: int
    not_before: datetime
    not_after: datetime
    window: tuple[datetime, datetime]


@dataclass(frozen=True, slots=True)
class Order:
    at: datetime
    name: str
    kind: str  # "new" | "ari" (a renewal naming the certificate it replaces, inside its window) | "renewal"
    remaining: timedelta | None  # the replaced certificate's lifetime left (None: a new certificate)
    duplicate: bool = False  # it replaced a certificate that another order had already replaced


class FakeCa:
    def __init__(
        self,
        name: str,
        clock: Clock,
        *,
        lifetimes: Mapping[str, timedelta] | None = None,
        default_lifetime: timedelta = timedelta(days=90),
        outages: Iterable[Interval] = (),
        dns: Dns01Provider | None = None,
        directory_url: str | None = None,
    ) -> None:
        self.name = name
        # As the ACME issuer does, record each order placed (the store's issuance history, which the
        # planner's Let's Encrypt budgets count) under this directory; None: record nothing.
        self.directory_url = directory_url
        self.clock = clock
        self.lifetimes = dict(lifetimes or {})
        self.default_lifetime = default_lifetime
        self.outages = tuple(outages)
        self.dns = dns
        self.orders: list[Order] = []
        self.current: dict[str, Issued] = {}  # name -> its latest certificate
        self.refused = 0  # orders and ARI questions refused during an outage
        self._by_pem: dict[str, Issued] = {}
        self._pem_of: dict[int, str] = {}  # serial -> PEM, for the certificates still current
        self._replaced: set[int] = set()
        self._lock = threading.Lock()
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Fake CA {name}")])
        start = clock.now() - timedelta(days=1)
        self._subject = subject
        self._ca = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self._ca_pem = self._ca.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def supported_key_types(self) -> frozenset[KeyType]:
        return frozenset(KeyType)

    def _check_up(self, what: str, now: datetime) -> None:
        if during(self.outages, now):
            with self._lock:
                self.refused += 1
            raise IssuerError(
                f"{what}: cannot reach the CA (ConnectionError)",
                code="acme-unreachable",
                hint="check the directory URL and the network; the order resumes on the next apply",
            )

    def issue(self, request: IssueRequest) -> IssuedCertificate:
        now = self.clock.now()
        self._check_up("placing an order", now)
        serial = x509.random_serial_number()
        if request.journal is not None and self.directory_url is not None:
            # placed before its challenges, so a failed order counts too, as at Let's Encrypt
            request.journal.record_order(f"{self.directory_url}#order-{serial:x}", "pending", self.directory_url)
        if self.dns is not None:
            self._answer_dns01(request.domains)
        csr = x509.load_pem_x509_csr(request.csr_pem.encode())
        lifetime = self.lifetimes.get(request.name, self.default_lifetime)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self._subject)
            .public_key(csr.public_key())
            .serial_number(serial)
            .not_valid_before(now)
            .not_valid_after(now + lifetime)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in request.domains]), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        low, high = SHORT_WINDOW if lifetime <= SHORT_LIFETIME else WINDOW
        issued = Issued(request.name, serial, now, now + lifetime, (now + lifetime * low, now + lifetime * high))
        with self._lock:
            replaced = self._by_pem.get(request.replaces_cert_pem) if request.replaces_cert_pem else None
            ari = replaced is not None and now >= replaced.window[0]
            duplicate = replaced is not None and replaced.serial in self._replaced
            if replaced is not None:
                self._replaced.add(replaced.serial)
            kind = "new" if replaced is None and request.name not in self.current else "ari" if ari else "renewal"
            remaining = replaced.not_after - now if replaced is not None else None
            self.orders.append(Order(now, request.name, kind, remaining, duplicate))
            self._by_pem[pem] = issued
            self._pem_of[serial] = pem
            self.current[request.name] = issued
        return IssuedCertificate(cert_pem=pem, chain_pem=self._ca_pem, ari_replaces=f"{serial:x}" if ari else None)

    def _answer_dns01(self, domains: tuple[str, ...]) -> None:
        assert self.dns is not None
        records = tuple(DnsTxtRecord(f"_acme-challenge.{d.removeprefix('*.')}", "token") for d in domains)
        presented: list[DnsTxtRecord] = []
        try:
            for record in records:
                self.dns.present(record)
                presented.append(record)
            self.dns.wait_until_visible(records, timedelta(seconds=1))
        finally:
            for record in presented:
                self.dns.cleanup(record)

    def revoke(self, cert_pem: str, reason: str) -> None:
        self._check_up("revoking the certificate", self.clock.now())

    def renewal_info(self, cert_pem: str, now: datetime) -> RenewalInfo | None:
        self._check_up("asking for the renewal window", now)
        issued = self._by_pem.get(cert_pem)  # one dict read (atomic), no lock: asked 10,000 times a cycle
        if issued is None:
            return None
        start, end = issued.window
        return RenewalInfo(window_start=start, window_end=end, retry_after=now + RETRY_AFTER)

    def move_windows(self, names: Iterable[str], start: datetime, width: timedelta) -> int:
        """Move the renewal windows of these names' current certificates to ``[start, start + width)``
        (what a CA does before a mass revocation); how many moved."""
        moved = 0
        with self._lock:
            for name in names:
                issued = self.current.get(name)
                if issued is None:
                    continue
                moved_to = replace(issued, window=(start, start + width))
                self.current[name] = moved_to
                self._by_pem[self._pem_of[issued.serial]] = moved_to
                moved += 1
        return moved

    def not_after(self, name: str) -> datetime | None:
        with self._lock:
            issued = self.current.get(name)
        return issued.not_after if issued is not None else None
