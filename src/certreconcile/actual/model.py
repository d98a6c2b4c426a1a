"""The actual state, as loaded from the database in a few set-based queries.

Frozen and keyed by certificate name, so the planner can diff it in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from certreconcile.domain.keys import KeyType
from certreconcile.domain.policy import OnDelete
from certreconcile.domain.status import CertStatus

__all__ = [
    "ActualCertificate",
    "ActualState",
    "DistributionState",
    "Observations",
    "OpenRotation",
    "RenewalWindow",
    "ServedCertificate",
    "StateMeta",
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

    @property
    def lifetime_seconds(self) -> float:
        return (self.not_after - self.not_before).total_seconds()


@dataclass(frozen=True, slots=True)
class StateMeta:
    """Identity of the state a plan was built on (Terraform's lineage and serial)."""

    lineage: str  # a UUID fixed when the database was first migrated
    serial: int  # bumped by every apply that changed anything


@dataclass(frozen=True, slots=True)
class ActualState:
    meta: StateMeta
    certificates: Mapping[str, ActualCertificate]  # managed (not retired) names, in name order
    backoff_until: Mapping[str, datetime] = field(default_factory=dict)  # per name, after failures

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

    def for_name(self, name: str) -> Mapping[str, ServedCertificate]:
        return self._by_name.get(name, {})

    @staticmethod
    def none() -> Observations:
        return Observations()
