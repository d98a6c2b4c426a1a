"""The state repository protocol: every read and write apply needs, and nothing more.

Implemented by :mod:`certreconcile.actual.repository` (PostgreSQL, psycopg 3) and by
:class:`certreconcile.testing.fake_repository.InMemoryStore`; both pass the same
contract suite in ``tests/contract/test_state_repository.py``.

A :class:`StateStore` hands out :class:`StateSession` objects; one session is used by
one thread at a time (the PostgreSQL one owns a connection). Every write method
commits on return unless it runs inside ``session.transaction()``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from certreconcile.actual.model import ActualCertificate, ActualState, IssuanceHistory, OpenRotation, StateMeta
from certreconcile.actual.outbox import NotificationStore
from certreconcile.audit.recorder import AuditRecorder
from certreconcile.crypto.secret import EncryptionContext
from certreconcile.domain.keys import KeyRef, KeyType
from certreconcile.domain.policy import OnDelete, Origin
from certreconcile.domain.status import CertStatus

__all__ = [
    "FLEET_CA_ROW_ID",
    "AcmeAccountRecord",
    "AcmeOrderRecord",
    "AcmeStore",
    "AgentCertificateRow",
    "CertificateRow",
    "CertificateStore",
    "DistributionRecord",
    "FleetCaRecord",
    "FleetStore",
    "FollowedCommit",
    "JournalEntry",
    "JournalStore",
    "KeyRefStore",
    "KeyRefTable",
    "KeyRefUsage",
    "LapsedCertificate",
    "LocalCaRecord",
    "LocalCaStore",
    "RenewalInfoRecord",
    "SessionSource",
    "StateSession",
    "StateStore",
    "StoredKeyRef",
    "fleet_ca_context",
]


@dataclass(frozen=True, slots=True)
class CertificateRow:
    """A certificate to insert. ``key_ref`` is the KMS envelope, never key bytes."""

    id: str
    name: str
    domains: tuple[str, ...]  # first is ``Certificate.domain``, the rest ``san_domains``
    issuer: str
    key_type: KeyType
    serial_number: str
    not_before: datetime
    not_after: datetime
    status: CertStatus
    fingerprint: str
    key_ref: KeyRef
    cert_pem: str
    chain_pem: str
    on_delete: OnDelete
    issuer_fingerprint: str | None = None
    created_at: datetime | None = None
    ari_replaces: str | None = None  # the ARI id of the certificate its order replaced (RFC 9773)
    origin: Origin = Origin.GIT  # 'api': issued through the CertificateManager facade


@dataclass(frozen=True, slots=True)
class JournalEntry:
    run_id: int
    idempotency_key: str
    name: str
    step: str  # a JournalStep, or a per-target one: JournalStep.DEPLOY.for_target(name) (see journal_step)
    state: str  # a JournalState: started | done | failed
    detail: Mapping[str, str] = field(default_factory=dict)  # never a secret
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DistributionRecord:
    """One (certificate, target) distribution row, as :meth:`CertificateStore.record_distribution` takes it."""

    cert_id: str
    target: str
    fingerprint: str  # of the certificate pushed
    pushed_at: datetime | None
    verified_at: datetime | None
    last_error: str | None  # never a secret
    target_fingerprint: str | None


@dataclass(frozen=True, slots=True)
class LocalCaRecord:
    name: str  # the issuer's name in the desired state
    cert_pem: str
    key_ref: KeyRef


#: The row id of the one fleet CA in key contexts and ``kms rewrap`` (the table has a single row).
FLEET_CA_ROW_ID = "fleet-ca"


def fleet_ca_context() -> EncryptionContext:
    """The context binding the fleet CA's key to its FleetCa row (the fleet and ``kms rewrap``)."""
    return EncryptionContext(table="FleetCa", row_id=FLEET_CA_ROW_ID, purpose="ca-key")


@dataclass(frozen=True, slots=True)
class FleetCaRecord:
    """The fleet CA (design.md section 9): its certificate, and its key sealed by the KMS."""

    cert_pem: str
    key_ref: KeyRef


@dataclass(frozen=True, slots=True)
class AgentCertificateRow:
    """An agent's current certificate from the fleet CA, as enrolment or renewal stores it (all public)."""

    name: str
    serial: str  # lower-case hex
    fingerprint: str  # SHA-256 of the DER, lower-case hex
    cert_pem: str
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True, slots=True)
class AcmeAccountRecord:
    directory_url: str  # one account per directory
    key_ref: KeyRef  # the account key, sealed by the KMS (context: AcmeAccount, directory_url)
    account_url: str  # the account's kid


@dataclass(frozen=True, slots=True)
class AcmeOrderRecord:
    """An ACME order placed for one change (its idempotency key), for resumption."""

    idempotency_key: str
    name: str
    order_url: str
    state: str  # the order's last known status: pending, ready, processing, valid, invalid
    directory_url: str
    cert_id: str | None = None  # the Certificate id the order's key is sealed for


@dataclass(frozen=True, slots=True)
class RenewalInfoRecord:
    """An ARI answer as stored: the window, and when the CA may be asked again."""

    cert_id: str
    window_start: datetime
    window_end: datetime
    retry_after: datetime
    fetched_at: datetime
    explanation_url: str | None = None


class KeyRefTable(enum.StrEnum):
    """Where sealed keys are stored (the order ``kms rewrap`` walks them in)."""

    CERTIFICATE = "Certificate"  # Certificate.key_ref: every row, current, history and retired
    LOCAL_CA = "LocalCa"  # the key of each local CA
    ACME_ACCOUNT = "AcmeAccount"  # ACME account keys
    APPLY_STEP = "ApplyStep"  # journal entries `key-generated`: detail.key_ref, for resumed issuance
    FLEET_CA = "FleetCa"  # the key of the fleet CA (one row, FLEET_CA_ROW_ID)


@dataclass(frozen=True, slots=True)
class StoredKeyRef:
    """One stored envelope and the row holding it.

    ``row_id`` is the row's key as text: Certificate.id, LocalCa.issuer_name, AcmeAccount.id,
    ApplyStep.id. ``name`` is the certificate name, the issuer name, the ACME directory URL or
    the journal entry's name. ``cert_id`` is the certificate whose context seals the key
    (Certificate rows and journal entries), else None.
    """

    table: KeyRefTable
    row_id: str
    key_ref: KeyRef
    name: str
    cert_id: str | None = None


@dataclass(frozen=True, slots=True)
class KeyRefUsage:
    """How many stored envelopes a (KMS, master key) pair wraps."""

    kms: str
    key_id: str
    count: int


@dataclass(frozen=True, slots=True)
class LapsedCertificate:
    """A row still ``active`` or ``expiring_soon`` past its ``not_after`` (current, retired or history)."""

    cert_id: str
    name: str
    status: CertStatus
    not_after: datetime


@dataclass(frozen=True, slots=True)
class FollowedCommit:
    """The git commit ``run --git`` follows (:mod:`certreconcile.gitfollow`), one per database.

    ``source`` names what is followed: the repository URL without credentials, the branch and
    the path inside the repository; ``commit`` is the full hexadecimal sha.
    """

    source: str
    commit: str


class CertificateStore(Protocol):
    """Certificates, their rotations and distributions, the backoffs and the state serial; locks and transactions."""

    def load_actual(self, now: datetime | None = None) -> ActualState:
        """Every managed name's current certificate, its distributions and open rotation,
        the backoffs, and the recent ACME issuance history (``HISTORY_WINDOW`` back from
        ``now``, the caller's clock, or the store's clock without it; orders
        ``HISTORY_ORDERS_WINDOW`` back), and the enrolled agents.

        A fixed number of queries, whatever the number of certificates.
        """
        ...

    def issuance_history(self, now: datetime) -> IssuanceHistory:
        """The recent ACME issuance history alone, as :meth:`load_actual` gives it (for a budget re-check)."""
        ...

    def meta(self) -> StateMeta: ...

    def current_certificate(self, name: str) -> ActualCertificate | None:
        """A fresh read of one name (used under its lock, to check the precondition again)."""
        ...

    def certificate_pems(self, cert_id: str) -> tuple[str, str]:
        """(leaf PEM, chain PEM) of one certificate row."""
        ...

    def leaf_pems(self, cert_ids: Sequence[str]) -> Mapping[str, str]:
        """The leaf PEM of each of ``cert_ids`` (one query; an id without a row is left out)."""
        ...

    def key_ref(self, cert_id: str) -> KeyRef: ...

    def certificate_status(self, cert_id: str) -> CertStatus: ...

    def rotation_replacing(self, new_cert_id: str) -> OpenRotation | None:
        """The open (not completed) rotation whose new certificate is ``new_cert_id``, if any."""
        ...

    def try_lock_name(self, name: str) -> AbstractContextManager[bool]:
        """:meth:`lock_name` without waiting: yields whether it was taken (nothing is held when not)."""
        ...

    def lock_name(self, name: str) -> AbstractContextManager[None]:
        """Hold an exclusive lock on ``name`` across processes (PostgreSQL advisory lock)."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """Group the writes inside into one atomic unit."""
        ...

    def batch(self) -> AbstractContextManager[None]:
        """``transaction()`` sent in one round trip (PostgreSQL: pipelined); errors surface at the block's end."""
        ...

    def insert_certificate(self, row: CertificateRow) -> None: ...

    def set_status(self, cert_id: str, new: CertStatus) -> CertStatus:
        """Move a certificate to ``new`` if the lifecycle allows it; returns the old status."""
        ...

    def set_status_if_allowed(self, cert_id: str, new: CertStatus) -> CertStatus:
        """Move a certificate to ``new`` if the lifecycle allows it from the status it has, else leave it; the status
        it had. One read-and-move (the row locked), without a window between the read and the move."""
        ...

    def compare_and_set_status(self, cert_id: str, expected: CertStatus, new: CertStatus) -> bool:
        """Move the certificate to ``new`` only if it is still ``expected``; False when it is not (or is gone).
        Raises :class:`~certreconcile.domain.status.IllegalTransitionError` unless ``expected → new`` is allowed."""
        ...

    def compare_and_set_statuses(self, moves: Sequence[tuple[str, CertStatus, CertStatus]]) -> set[str]:
        """``compare_and_set_status`` of every (cert id, expected, new) in one statement, rows locked in id order
        (each id once, else ValueError; every transition checked before anything moves): the ids moved."""
        ...

    def lapsed_certificates(self, now: datetime, limit: int) -> Sequence[LapsedCertificate]:
        """Up to ``limit`` rows ``active`` or ``expiring_soon`` with ``not_after <= now`` (retired ones
        too), oldest ``not_after`` first (PostgreSQL: the partial index ``idx_cert_not_after``)."""
        ...

    def retire(self, cert_id: str, at: datetime) -> None:
        """Stop managing this certificate's name; the row and its history stay."""
        ...

    def open_rotation(self, old_cert_id: str, at: datetime) -> int: ...

    def attach_rotation(self, rotation_id: int, new_cert_id: str) -> None: ...

    def complete_rotation(self, rotation_id: int, at: datetime) -> None: ...

    def record_distribution(
        self,
        cert_id: str,
        target: str,
        fingerprint: str,
        *,
        pushed_at: datetime | None,
        verified_at: datetime | None,
        last_error: str | None,
        target_fingerprint: str | None,
    ) -> None:
        """Upsert the (certificate name, target) distribution row."""
        ...

    def record_distributions(self, records: Sequence[DistributionRecord]) -> None:
        """``record_distribution`` of each record, in one statement (a fan-out to many targets); the
        targets of one certificate must be distinct. Nothing is written if a certificate does not exist."""
        ...

    def remove_distribution(self, name: str, target: str) -> None: ...

    def bump_serial(self) -> int:
        """Advance the state serial (stale-plan detection); returns the new serial."""
        ...

    def followed_commit(self) -> FollowedCommit | None:
        """The commit ``run --git`` follows; None before the first."""
        ...

    def follow_commit(self, expected: FollowedCommit | None, new: FollowedCommit) -> bool:
        """Compare-and-set: record ``new`` only if the followed commit is still ``expected``; False if not."""
        ...

    def record_failure(self, name: str, at: datetime, declaration_digest: str | None) -> datetime:
        """Remember a failed issuance of ``name``; returns until when it is backed off.

        The backoff is ``backoff_delay(failures)`` after ``at`` (1 h doubling to 32 h); a failure
        under another ``declaration_digest`` than the last one starts again at one failure.
        Cleared by the next success.
        """
        ...

    def clear_failures(self, name: str) -> None: ...


class JournalStore(Protocol):
    """Runs and the step journal of each change (resumption after a crash)."""

    def start_run(self, git_commit: str | None, plan_digest: str, at: datetime) -> int: ...

    def finish_run(self, run_id: int, outcome: str, at: datetime) -> None: ...

    def journal(self, entry: JournalEntry) -> None: ...

    def journal_many(self, entries: Sequence[JournalEntry]) -> None:
        """``journal`` of each entry, in this order, in one statement: all are recorded or none."""
        ...

    def journal_entries(self, idempotency_key: str) -> Sequence[JournalEntry]: ...


class KeyRefStore(Protocol):
    """The stored envelopes of every table (``kms rewrap``, ``kms usage``)."""

    def list_key_refs(self, table: KeyRefTable, after: str | None, limit: int) -> Sequence[StoredKeyRef]:
        """One page of the envelopes stored in ``table``, in row-key order, after the row ``after``."""
        ...

    def key_ref_usage(self) -> Sequence[KeyRefUsage]:
        """Which KMS and master keys wrap the stored envelopes (every table), sorted. Read-only."""
        ...

    def replace_key_ref(self, table: KeyRefTable, row_id: str, old: KeyRef, new: KeyRef) -> bool:
        """Compare-and-set: store ``new`` only if the row still holds ``old``; False when it does not."""
        ...


class LocalCaStore(Protocol):
    """The local CAs' certificates and sealed keys."""

    def get_local_ca(self, issuer_name: str) -> LocalCaRecord | None: ...

    def put_local_ca(self, record: LocalCaRecord) -> LocalCaRecord:
        """Store the CA unless one exists already; return the one stored (first writer wins)."""
        ...


class FleetStore(Protocol):
    """The fleet CA and the enrolled agents (design.md section 9)."""

    def fleet_ca(self) -> FleetCaRecord | None: ...

    def put_fleet_ca(self, record: FleetCaRecord) -> FleetCaRecord:
        """Store the fleet CA unless one exists already; return the one stored (first writer wins)."""
        ...

    def agent_certificate(self, name: str) -> AgentCertificateRow | None:
        """Agent ``name``'s current certificate; None when it is not enrolled."""
        ...

    def enroll_agent(self, row: AgentCertificateRow, at: datetime, *, replace: bool) -> bool:
        """Record an enrolment at ``at``; False (nothing written) when ``row.name`` is enrolled and not ``replace``.

        A replaced enrolment starts afresh: ``enrolled_at`` is ``at``, renewal and contact times are cleared.
        """
        ...

    def renew_agent(self, row: AgentCertificateRow, expected_fingerprint: str, at: datetime) -> bool:
        """Compare-and-set: store the renewed certificate only if the agent's is still ``expected_fingerprint``."""
        ...

    def record_agent_contact(self, name: str, at: datetime, error: str | None) -> None:
        """Agent ``name`` answered at ``at`` (``error`` None: ``last_seen_at``, error cleared), or did not
        (``last_error``, ``last_seen_at`` kept). Nothing happens for a name that is not enrolled."""
        ...


class AcmeStore(Protocol):
    """ACME accounts, orders (for resumption) and ARI renewal info."""

    def get_acme_account(self, directory_url: str) -> AcmeAccountRecord | None: ...

    def put_acme_account(self, record: AcmeAccountRecord) -> AcmeAccountRecord:
        """Store the account of a directory; the first writer wins and its record is returned."""
        ...

    def acme_order(self, idempotency_key: str) -> AcmeOrderRecord | None: ...

    def save_acme_order(self, record: AcmeOrderRecord, at: datetime) -> AcmeOrderRecord | None:
        """Insert or update the order of this idempotency key (a replaced order overwrites the URL);
        returns the order it replaced (``acme_order`` before the write), None when there was none."""
        ...

    def renewal_infos(self, cert_ids: Sequence[str]) -> Mapping[str, RenewalInfoRecord]:
        """The stored renewal info of each of ``cert_ids`` that has one (one query)."""
        ...

    def save_renewal_infos(self, records: Sequence[RenewalInfoRecord]) -> None:
        """Insert or update the stored answer of each record's certificate, in one statement; a record whose
        certificate is gone or superseded since it was read is skipped (there is nothing left to renew)."""
        ...

    def save_unchanged_renewal_infos(
        self, cert_ids: Sequence[str], retry_after: datetime, fetched_at: datetime
    ) -> None:
        """The CA answered these certificates' stored windows again, without an explanation: move only when it
        may be asked next and when it answered (one statement, however many); an id without a stored answer
        is skipped (a window never stored goes through :meth:`save_renewal_infos`)."""
        ...


class StateSession(
    CertificateStore,
    JournalStore,
    AuditRecorder,
    KeyRefStore,
    LocalCaStore,
    AcmeStore,
    FleetStore,
    NotificationStore,
    Protocol,
):
    """The whole session: every concern at once (apply, the CLI). Code that needs one concern
    is typed against that concern's protocol instead."""


_S_co = TypeVar("_S_co", covariant=True)


class SessionSource(Protocol[_S_co]):
    """Opens sessions that offer (at least) ``_S_co``: an issuer takes ``SessionSource[LocalCaStore]``."""

    def session(self) -> AbstractContextManager[_S_co]: ...


class StateStore(SessionSource[StateSession], Protocol):
    def upgrade(self) -> list[str]:
        """Apply pending migrations; return the names applied."""
        ...
