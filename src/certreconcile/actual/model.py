"""The actual state, as loaded from the database in a few set-based queries.

Frozen and keyed by certificate name, so the planner can diff it in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from certreconcile.domain.keys import KeyType
from certreconcile.domain.policy import OnDelete, Origin
from certreconcile.domain.status import CertStatus

__all__ = [
    "BACKOFF_CAP",
    "BACKOFF_INITIAL",
    "HISTORY_ORDERS_WINDOW",
    "HISTORY_WINDOW",
    "ActualCertificate",
    "ActualState",
    "AgentRecord",
    "DistributionState",
    "IssuanceBackoff",
    "IssuanceHistory",
    "Observations",
    "OpenRotation",
    "PastIssuance",
    "PastOrder",
    "RenewalWindow",
    "ServedCertificate",
    "StateMeta",
    "backoff_delay",
]


@dataclass(frozen=True, slots=True)
class DistributionState:
    """What was pushed to one target for one certificate row."""

    target: str
    fingerprint: str  # of the certificate pushed
    pushed_at: datetime | None
    verified_at: datetime | None  # set only after the target proved it serves ``fingerprint``
    last_error: str | None = None
    target_fingerprint: str | None = None  # the target's declaration when pushed
    verified_fingerprint: str | None = None  # what the target was last proven to serve (kept when a push fails)


@dataclass(frozen=True, slots=True)
class OpenRotation:
    rotation_id: int
    old_cert_id: str
    new_cert_id: str | None
    triggered_at: datetime


@dataclass(frozen=True, slots=True)
class RenewalWindow:
    """The renewal window an ACME CA suggested for a certificate (RFC 9773 ARI)."""

    start: datetime
    end: datetime
    # When the CA may be asked again (its Retry-After); None: not known here. Not part of the window's
    # identity (equality), only of when to ask: ``apply.ari`` reads it instead of one query per certificate.
    retry_after: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ActualCertificate:
    """The certificate a managed name currently has (the newest non-superseded row)."""

    id: str
    name: str
    domains: tuple[str, ...]  # domain then san_domains, as stored
    issuer: str
    key_type: KeyType
    serial_number: str
    not_before: datetime
    not_after: datetime
    status: CertStatus
    fingerprint: str
    on_delete: OnDelete
    has_key: bool  # a key_ref is stored (never the key itself)
    distributions: Mapping[str, DistributionState] = field(default_factory=dict)
    open_rotation: OpenRotation | None = None
    issuer_fingerprint: str | None = None  # the issuer declaration this certificate was issued under
    renewal_window: RenewalWindow | None = None  # ARI: the CA's suggested window, when it offers one
    origin: Origin = Origin.GIT  # who owns it: an apply never retires an API-issued name it does not declare

    @property
    def lifetime_seconds(self) -> float:
        return (self.not_after - self.not_before).total_seconds()


@dataclass(frozen=True, slots=True)
class StateMeta:
    """Identity of the state a plan was built on (Terraform's lineage and serial)."""

    lineage: str  # a UUID fixed when the database was first migrated
    serial: int  # bumped by every apply that changed anything


#: The first backoff after a failed issuance; each further failure in a row doubles it, up to the cap.
BACKOFF_INITIAL = timedelta(hours=1)
BACKOFF_CAP = timedelta(hours=32)


def backoff_delay(failures: int) -> timedelta:
    """How long a name waits after its ``failures``-th failed issuance in a row: 1 h, 2 h, 4 h ... 32 h."""
    return min(BACKOFF_INITIAL * (1 << min(max(failures, 1) - 1, 16)), BACKOFF_CAP)


@dataclass(frozen=True, slots=True)
class IssuanceBackoff:
    """A name whose issuance failed: the planner leaves it alone until ``until``, unless its declaration changed."""

    failures: int  # failed issuances in a row (under this declaration)
    last_failure_at: datetime
    until: datetime
    declaration_digest: str | None  # the certificate's declaration when it last failed; None: unknown (old rows)


#: How far back the issuance history reaches (Let's Encrypt's weekly limits), and the orders' window.
HISTORY_WINDOW = timedelta(days=7)
HISTORY_ORDERS_WINDOW = timedelta(hours=3)


@dataclass(frozen=True, slots=True)
class PastIssuance:
    """A certificate an ACME CA issued recently (for the CA's rate limits; never for decisions on a name)."""

    directory_url: str  # the ACME directory its order was placed with
    domains: frozenset[str]
    created_at: datetime
    ari_renewal: bool  # its order named the certificate it replaced (RFC 9773): exempt from Let's Encrypt limits
    renewal: bool  # an earlier certificate of the same issuer had exactly these names


@dataclass(frozen=True, slots=True)
class PastOrder:
    """A new ACME order placed recently (Let's Encrypt counts them per account)."""

    directory_url: str
    created_at: datetime
    ari_renewal: bool = False  # its certificate was an ARI renewal


@dataclass(frozen=True, slots=True)
class IssuanceHistory:
    """Recent ACME issuances (``HISTORY_WINDOW``) and orders (``HISTORY_ORDERS_WINDOW``), by the store's clock.

    The planner counts only what falls inside the windows measured from its own ``now``.
    """

    issuances: tuple[PastIssuance, ...] = ()
    orders: tuple[PastOrder, ...] = ()


@dataclass(frozen=True, slots=True)
class ActualState:
    meta: StateMeta
    certificates: Mapping[str, ActualCertificate]  # managed (not retired) names, in name order
    backoffs: Mapping[str, IssuanceBackoff] = field(default_factory=dict)  # per name, after failed issuances
    issuance_history: IssuanceHistory = IssuanceHistory()
    agents: Mapping[str, AgentRecord] = field(default_factory=dict)  # enrolled agents by name

    @property
    def backoff_until(self) -> Mapping[str, datetime]:
        return {name: backoff.until for name, backoff in self.backoffs.items()}

    @staticmethod
    def empty(lineage: str = "00000000-0000-0000-0000-000000000000") -> ActualState:
        return ActualState(meta=StateMeta(lineage=lineage, serial=0), certificates={})


@dataclass(frozen=True, slots=True)
class ServedCertificate:
    """What a target was seen serving for a certificate name by ``plan --refresh``."""

    fingerprint: str | None  # None: nothing served (or the probe failed, see ``error``)
    serial_number: str | None = None
    not_after: datetime | None = None
    error: str | None = None
    unreachable: bool = False  # the target's host (an agent) did not answer: not drift, nothing is known


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """An enrolled agent (design.md section 9): its own certificate from the fleet CA, and when it last answered."""

    name: str
    serial: str  # of its current certificate, lower-case hex
    fingerprint: str  # SHA-256 of its current certificate
    not_before: datetime
    not_after: datetime
    enrolled_at: datetime
    renewed_at: datetime | None = None
    last_seen_at: datetime | None = None  # the last time it answered the applier
    last_error: str | None = None  # why the last contact failed, one line (None: it answered)


@dataclass(frozen=True, slots=True)
class Observations:
    """Probe results keyed by (certificate name, target name). Empty without ``--refresh``."""

    served: Mapping[tuple[str, str], ServedCertificate] = field(default_factory=dict)
    # The same, grouped by certificate name once, so the diff looks each name up in O(1).
    _by_name: Mapping[str, Mapping[str, ServedCertificate]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        grouped: dict[str, dict[str, ServedCertificate]] = {}
        for (name, target), seen in self.served.items():
            grouped.setdefault(name, {})[target] = seen
        object.__setattr__(self, "_by_name", grouped)

    @classmethod
    def grouped(
        cls, served: Mapping[tuple[str, str], ServedCertificate], by_name: Mapping[str, Mapping[str, ServedCertificate]]
    ) -> Observations:
        """Observations from ``served`` and the same grouped by name, built together by the caller (no second pass)."""
        observations = object.__new__(cls)
        object.__setattr__(observations, "served", served)
        object.__setattr__(observations, "_by_name", by_name)
        return observations

    def for_name(self, name: str) -> Mapping[str, ServedCertificate]:
        return self._by_name.get(name, {})

    @staticmethod
    def none() -> Observations:
        return Observations()
