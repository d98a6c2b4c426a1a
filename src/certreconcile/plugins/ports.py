"""The plug-in protocols. Each side effect of apply sits behind one of these.

Every third-party SDK is imported only inside a plug-in module, never at import time
of anything else. Plug-ins are chosen by name from :mod:`certreconcile.plugins.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from certreconcile.crypto.secret import EncryptionContext, Kms, SecretBytes, WrappedKey
from certreconcile.domain.keys import KeyType

__all__ = [
    "NO_CHECK",
    "DeployBundle",
    "Dns01Provider",
    "DnsTxtRecord",
    "EncryptionContext",
    "Http01Solver",
    "IssueRequest",
    "IssuedCertificate",
    "Issuer",
    "Kms",
    "OrderJournal",
    "RenewalInfo",
    "SecretBytes",
    "SupportsCheck",
    "SupportsRenewalInfo",
    "Target",
    "TargetObservation",
    "WrappedKey",
]


class OrderJournal(Protocol):
    """Where an issuer with asynchronous orders (ACME) records them, so a rerun resumes instead of re-ordering.

    Backed by the ``AcmeOrder`` table and the step journal of the change being applied.
    """

    def saved_order_url(self) -> str | None:
        """The order placed by an earlier, interrupted attempt of this same change, if any."""
        ...

    def record_order(self, order_url: str, state: str, directory_url: str) -> None:
        """Persist the order (before any challenge is answered) and each later state change."""
        ...


@dataclass(frozen=True, slots=True)
class IssueRequest:
    name: str
    domains: tuple[str, ...]
    key_type: KeyType
    csr_pem: str
    now: datetime
    challenge: str | None = None  # "http-01" | "dns-01" as declared; None: the issuer's default
    dns_provider: str | None = None  # declared DNS provider name for dns-01
    replaces_cert_pem: str | None = None  # the certificate this order renews (ARI ``replaces``)
    journal: OrderJournal | None = None  # None: nothing to resume (one-shot issuers, tests)


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    cert_pem: str  # the leaf
    chain_pem: str  # intermediates (and root where the CA sends it), may be empty
    ari_replaces: str | None = None  # the ARI id its order named in ``replaces`` (RFC 9773), if the CA took it


class Issuer(Protocol):
    name: str

    def supported_key_types(self) -> frozenset[KeyType]: ...

    def issue(self, request: IssueRequest) -> IssuedCertificate: ...

    def revoke(self, cert_pem: str, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class RenewalInfo:
    """An ACME renewal window (RFC 9773) for one certificate."""

    window_start: datetime
    window_end: datetime
    retry_after: datetime  # do not ask again before this
    explanation_url: str | None = None


class SupportsRenewalInfo(Protocol):
    """An issuer that can say when to renew (ACME with ``renewalInfo`` in its directory).

    It may also carry ``renewal_info_in_flight: int``, how many questions it takes at once (from threads):
    without it, a refresh asks it about one certificate at a time (``certreconcile.apply.ari.in_flight``).
    """

    def renewal_info(self, cert_pem: str, now: datetime) -> RenewalInfo | None:
        """The CA's suggested window, or None when the CA offers none."""
        ...


@dataclass(frozen=True, slots=True)
class DnsTxtRecord:
    fqdn: str  # e.g. "_acme-challenge.shop.example.com": lower-case, IDNA, no trailing dot
    value: str  # the TXT value (base64url SHA-256 of the key authorization for ACME)


class Dns01Provider(Protocol):
    """Publishes and removes the TXT records of DNS-01 challenges."""

    name: str

    def present(self, record: DnsTxtRecord) -> None:
        """Add this TXT value. Other values of the same name stay (a wildcard and its base share one name)."""
        ...

    def cleanup(self, record: DnsTxtRecord) -> None:
        """Remove exactly this value; no error when it is already gone."""
        ...

    def wait_until_visible(self, records: tuple[DnsTxtRecord, ...], timeout: timedelta) -> None:
        """Return once every authoritative name server of each record's zone answers its value.

        Raises DnsError (one line, no secret) when ``timeout`` passes first.
        """
        ...


class Http01Solver(Protocol):
    """Serves ``/.well-known/acme-challenge/{token}`` while an order is open."""

    def present(self, token: str, key_authorization: str) -> None: ...

    def cleanup(self, token: str) -> None: ...


@dataclass(frozen=True, slots=True)
class DeployBundle:
    name: str
    domains: tuple[str, ...]
    cert_pem: str
    chain_pem: str
    key_pem: SecretBytes
    fingerprint: str

    @property
    def fullchain_pem(self) -> str:
        return self.cert_pem + self.chain_pem


@dataclass(frozen=True, slots=True)
class TargetObservation:
    fingerprint: str | None  # the leaf SHA-256 the target serves for the name, if any
    serial_number: str | None = None
    not_after: datetime | None = None
    error: str | None = None
    # True: this target cannot tell what it serves (no ``verify`` address and no read-back,
    # e.g. a webhook): drift detection skips it instead of seeing drift every time.
    unknown: bool = False
    # True: the host that serves this target did not answer (an agent down or cut off). Not drift:
    # nothing is known about what it serves. ``error`` says why.
    unreachable: bool = False


class Target(Protocol):
    name: str

    def deploy(self, bundle: DeployBundle) -> None:
        """Put certificate and key in place and trigger the reload. Idempotent."""
        ...

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        """What the target serves for this certificate now (handshake or read-back)."""
        ...

    def verify_timeout(self) -> timedelta: ...


#: What ``certreconcile check`` says of a plug-in without a :class:`SupportsCheck` method.
NO_CHECK = "no check available"


class SupportsCheck(Protocol):
    """Optional on any plug-in (KMS, DNS provider, target, issuer): a call proving its credentials and
    configuration work that changes nothing lasting (``certreconcile check``).

    A plug-in without it is reported as :data:`NO_CHECK`; existing plug-ins keep working unchanged.
    """

    def check(self) -> str:
        """What was checked, one line (e.g. "`nginx -t` passed"); a CertReconcileError (one line, no secret) when
        the check fails."""
        ...
