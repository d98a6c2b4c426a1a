"""An in-memory state store with the semantics of the PostgreSQL one.

:class:`InMemoryStore` passes the same contract suite as
:class:`~certreconcile.actual.repository.PostgresStore`
(``tests/contract/test_state_repository.py``), so tests of apply and plan can use it
without a database. It mirrors the schema's constraints (unique serial number, at most
one live certificate per name, one open rotation per certificate, foreign keys,
append-only audit) and raises the same :class:`~certreconcile.errors.StateError` codes.

Thread-safe: one lock guards the data; ``lock_name`` uses per-name locks owned by a
session (re-entrant within it, exclusive across sessions), like advisory locks.
``transaction()`` snapshots the data and restores it when the block raises.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import assert_never

from certreconcile.actual.journal_step import JournalStep
from certreconcile.actual.model import (
    HISTORY_ORDERS_WINDOW,
    HISTORY_WINDOW,
    ActualCertificate,
    ActualState,
    DistributionState,
    IssuanceBackoff,
    IssuanceHistory,
    OpenRotation,
    PastIssuance,
    PastOrder,
    RenewalWindow,
    StateMeta,
    backoff_delay,
)
from certreconcile.actual.repository import (
    CODE_CONFLICT,
    CODE_INVALID,
    CODE_NOT_FOUND,
    decode_key_ref,
    encode_key_ref,
)
from certreconcile.actual.store import (
    AcmeAccountRecord,
    AcmeOrderRecord,
    AuditAction,
    AuditEvent,
    CertificateRow,
    JournalEntry,
    KeyRefTable,
    KeyRefUsage,
    LapsedCertificate,
    LocalCaRecord,
    RenewalInfoRecord,
    StoredKeyRef,
)
from certreconcile.clock import Clock, SystemClock
from certreconcile.domain.keys import KeyRef
from certreconcile.domain.status import CertStatus, check_transition
from certreconcile.errors import StateError

__all__ = ["InMemorySession", "InMemoryStore"]

_LIVE = frozenset({CertStatus.ISSUED, CertStatus.ACTIVE, CertStatus.EXPIRING_SOON})
_STEP_STATES = frozenset({"started", "done", "failed"})


@dataclass(slots=True)
class _Cert:
    row: CertificateRow
    key_ref_text: str
    status: CertStatus
    created_at: datetime
    retired_at: datetime | None = None


@dataclass(slots=True)
class _Rotation:
    id: int
    cert_id: str
    triggered_at: datetime
    new_cert_id: str | None = None
    completed_at: datetime | None = None


@dataclass(slots=True)
class _Distribution:
    cert_id: str
    state: DistributionState


@dataclass(slots=True)
class _Backoff:
    failures: int
    last_failure_at: datetime
    until: datetime
    declaration_digest: str | None = None


@dataclass(slots=True)
class _Data:
    certificates: dict[str, _Cert]
    rotations: dict[int, _Rotation]
    distributions: dict[tuple[str, str], _Distribution]
    audit: list[AuditEvent]
    runs: dict[int, tuple[str | None, str, datetime, str | None, datetime | None]]
    journal: list[JournalEntry]
    local_cas: dict[str, tuple[str, str]]
    backoff: dict[str, _Backoff]
    serial: int
    next_id: int  # shared sequence for rotations, runs, audit events
    acme_accounts: dict[str, AcmeAccountRecord] = field(default_factory=dict)
    acme_orders: dict[str, tuple[AcmeOrderRecord, datetime]] = field(default_factory=dict)  # record, created_at
    renewal_infos: dict[str, RenewalInfoRecord] = field(default_factory=dict)


class _NameLock:
    """An advisory lock: owned by a session, counted, waited for by other sessions."""

    def __init__(self) -> None:
        self.owner: object | None = None
        self.count = 0


class InMemoryStore:
    def __init__(self, clock: Clock | None = None, lineage: str | None = None) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._lineage = lineage if lineage is not None else str(uuid.uuid4())
        self._mutex = threading.RLock()
        self._name_locks: dict[str, _NameLock] = {}
        self._name_locks_changed = threading.Condition(threading.Lock())
        self._data = _Data(
            certificates={},
            rotations={},
            distributions={},
            audit=[],
            runs={},
            journal=[],
            local_cas={},
            backoff={},
            serial=0,
            next_id=1,
        )

    def __repr__(self) -> str:
        return f"InMemoryStore(certificates={len(self._data.certificates)})"

    @contextmanager
    def _session(self) -> Iterator[InMemorySession]:
        session = InMemorySession(self)
        try:
            yield session
        finally:
            session.release_all()

    def session(self) -> AbstractContextManager[InMemorySession]:
        return self._session()

    def upgrade(self) -> list[str]:
        return []


class InMemorySession:
    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self._held: dict[str, int] = {}
        self._transaction_depth = 0

    # --- plumbing ------------------------------------------------------------------
    @property
    def _data(self) -> _Data:
        return self._store._data

    def _next_id(self) -> int:
        value = self._data.next_id
        self._data.next_id += 1
        return value

    def _cert(self, cert_id: str) -> _Cert:
        cert = self._data.certificates.get(cert_id)
        if cert is None:
            raise StateError(f"certificate {cert_id} does not exist", code=CODE_NOT_FOUND, hint="")
        return cert

    def _current(self, name: str) -> _Cert | None:
        candidates = [
            cert
            for cert in self._data.certificates.values()
            if cert.row.name == name and cert.retired_at is None and cert.status != CertStatus.SUPERSEDED
        ]
        if not candidates:
            return None
        return max(
            candidates,
            key=lambda cert: (cert.status in _LIVE, cert.created_at, cert.row.not_before, cert.row.id),
        )

    def _check_live_unique(self, name: str, exclude_id: str | None) -> None:
        for cert in self._data.certificates.values():
            if cert.row.name == name and cert.row.id != exclude_id and cert.retired_at is None and cert.status in _LIVE:
                raise StateError(
                    f"{name} already has a live certificate (constraint uq_cert_name_live)",
                    code=CODE_CONFLICT,
                    hint="another apply may have changed this name; run `certreconcile plan` again",
                )

    def _actual(self, cert: _Cert) -> ActualCertificate:
        name = cert.row.name
        distributions = {
            target: entry.state
            for (cert_name, target), entry in sorted(self._data.distributions.items())
            if cert_name == name
        }
        rotation: OpenRotation | None = None
        for candidate in sorted(self._data.rotations.values(), key=lambda rotation: rotation.id):
            if candidate.completed_at is None and self._data.certificates[candidate.cert_id].row.name == name:
                rotation = OpenRotation(
                    rotation_id=candidate.id,
                    old_cert_id=candidate.cert_id,
                    new_cert_id=candidate.new_cert_id,
                    triggered_at=candidate.triggered_at,
                )
        row = cert.row
        return ActualCertificate(
            id=row.id,
            name=name,
            domains=row.domains,
            issuer=row.issuer,
            key_type=row.key_type,
            serial_number=row.serial_number,
            not_before=row.not_before,
            not_after=row.not_after,
            status=cert.status,
            fingerprint=row.fingerprint,
            on_delete=row.on_delete,
            has_key=cert.key_ref_text != "",
            distributions=distributions,
            open_rotation=rotation,
            issuer_fingerprint=row.issuer_fingerprint,
            renewal_window=(
                None
                if (info := self._data.renewal_infos.get(row.id)) is None
                else RenewalWindow(info.window_start, info.window_end)
            ),
        )

    # --- reading -------------------------------------------------------------------
    def load_actual(self) -> ActualState:
        with self._store._mutex:
            names = sorted({cert.row.name for cert in self._data.certificates.values()})
            certificates: dict[str, ActualCertificate] = {}
            for name in names:
                current = self._current(name)
                if current is not None:
                    certificates[name] = self._actual(current)
            return ActualState(
                meta=self.meta(),
                certificates=certificates,
                backoffs={
                    name: IssuanceBackoff(entry.failures, entry.last_failure_at, entry.until, entry.declaration_digest)
                    for name, entry in sorted(self._data.backoff.items())
                },
                issuance_history=self._issuance_history(self._store._clock.now()),
            )

    def _issuance_history(self, now: datetime) -> IssuanceHistory:
        """Mirrors the two history queries of the PostgreSQL store (same windows, same order)."""
        certificates = self._data.certificates
        issuances: list[tuple[datetime, str, PastIssuance]] = []
        orders: list[tuple[datetime, int, PastOrder]] = []
        for index, (record, created_at) in enumerate(self._data.acme_orders.values()):
            if not record.directory_url:
                continue
            cert = certificates.get(record.cert_id) if record.cert_id is not None else None
            if created_at >= now - HISTORY_ORDERS_WINDOW:
                ari = cert is not None and cert.row.ari_replaces is not None
                orders.append((created_at, index, PastOrder(record.directory_url, created_at, ari)))
            if cert is None or cert.created_at < now - HISTORY_WINDOW:
                continue
            renewal = any(
                other.row.domains == cert.row.domains
                and other.row.issuer == cert.row.issuer
                and other.created_at < cert.created_at
                for other in certificates.values()
            )
            past = PastIssuance(
                record.directory_url, frozenset(cert.row.domains), cert.created_at, cert.row.ari_replaces is not None,
                renewal,
            )  # fmt: skip
            issuances.append((cert.created_at, cert.row.id, past))
        return IssuanceHistory(
            issuances=tuple(item[2] for item in sorted(issuances, key=lambda item: item[:2])),
            orders=tuple(item[2] for item in sorted(orders, key=lambda item: item[:2])),
        )

    def meta(self) -> StateMeta:
        with self._store._mutex:
            return StateMeta(lineage=self._store._lineage, serial=self._data.serial)

    def current_certificate(self, name: str) -> ActualCertificate | None:
        with self._store._mutex:
            current = self._current(name)
            return None if current is None else self._actual(current)

    def certificate_pems(self, cert_id: str) -> tuple[str, str]:
        with self._store._mutex:
            cert = self._cert(cert_id)
            return (cert.row.cert_pem, cert.row.chain_pem)

    def key_ref(self, cert_id: str) -> KeyRef:
        with self._store._mutex:
            return decode_key_ref(self._cert(cert_id).key_ref_text)

    def certificate_status(self, cert_id: str) -> CertStatus:
        with self._store._mutex:
            return self._cert(cert_id).status

    def rotation_replacing(self, new_cert_id: str) -> OpenRotation | None:
        with self._store._mutex:
            open_ones = [
                rotation
                for rotation in self._data.rotations.values()
                if rotation.new_cert_id == new_cert_id and rotation.completed_at is None
            ]
            if not open_ones:
                return None
            rotation = max(open_ones, key=lambda candidate: candidate.id)
            return OpenRotation(
                rotation_id=rotation.id,
                old_cert_id=rotation.cert_id,
                new_cert_id=rotation.new_cert_id,
                triggered_at=rotation.triggered_at,
            )

    def audit_events(
        self,
        name: str | None = None,
        action: str | None = None,
        limit: int | None = None,
        *,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[AuditEvent]:
        """Oldest first; with ``limit``, the newest ``limit`` events (still oldest first)."""
        with self._store._mutex:
            events = [
                event
                for event in self._data.audit
                if (name is None or event.name == name)
                and (action is None or event.action == action)
                and (actor is None or event.actor.startswith(actor))
                and (since is None or event.at >= since)
                and (until is None or event.at < until)
            ]
        if limit is not None:
            events = events[-limit:] if limit > 0 else []
        return events

    def journal_entries(self, idempotency_key: str) -> Sequence[JournalEntry]:
        with self._store._mutex:
            return [entry for entry in self._data.journal if entry.idempotency_key == idempotency_key]

    def _all_key_refs(self, table: KeyRefTable) -> list[tuple[object, StoredKeyRef]]:
        """Every (sort key, stored envelope) of ``table``; the sort keys mirror the SQL order."""
        data = self._data
        found: list[tuple[object, StoredKeyRef]] = []
        match table:
            case KeyRefTable.CERTIFICATE:
                for cert_id, cert in data.certificates.items():
                    if cert.key_ref_text:
                        stored = StoredKeyRef(table, cert_id, decode_key_ref(cert.key_ref_text), cert.row.name, cert_id)
                        found.append((cert_id, stored))
            case KeyRefTable.LOCAL_CA:
                for issuer_name, (_cert_pem, key_ref_text) in data.local_cas.items():
                    found.append(
                        (issuer_name, StoredKeyRef(table, issuer_name, decode_key_ref(key_ref_text), issuer_name))
                    )
            case KeyRefTable.ACME_ACCOUNT:
                pass  # no ACME accounts in memory
            case KeyRefTable.APPLY_STEP:
                for index, entry in enumerate(data.journal, start=1):
                    text = entry.detail.get("key_ref")
                    if entry.step == JournalStep.KEY_GENERATED and text is not None:
                        stored = StoredKeyRef(
                            table, str(index), decode_key_ref(text), entry.name, entry.detail.get("cert_id")
                        )
                        found.append((index, stored))
            case _:
                assert_never(table)
        found.sort(key=lambda item: item[0])  # type: ignore[arg-type,return-value]
        return found

    def list_key_refs(self, table: KeyRefTable, after: str | None, limit: int) -> Sequence[StoredKeyRef]:
        with self._store._mutex:
            found = self._all_key_refs(table)
        if after is not None:
            bound: object = int(after) if table in (KeyRefTable.ACME_ACCOUNT, KeyRefTable.APPLY_STEP) else after
            found = [item for item in found if item[0] > bound]  # type: ignore[operator]
        return [stored for _key, stored in found[:limit]]

    def key_ref_usage(self) -> Sequence[KeyRefUsage]:
        counts: dict[tuple[str, str], int] = {}
        with self._store._mutex:
            for table in KeyRefTable:
                for _key, stored in self._all_key_refs(table):
                    pair = (stored.key_ref.kms, stored.key_ref.key_id)
                    counts[pair] = counts.get(pair, 0) + 1
        return [KeyRefUsage(kms=kms, key_id=key_id, count=count) for (kms, key_id), count in sorted(counts.items())]

    # --- locking -------------------------------------------------------------------
    def lapsed_certificates(self, now: datetime, limit: int) -> Sequence[LapsedCertificate]:
        with self._store._mutex:
            rows = sorted(
                (cert.row.not_after, cert_id, cert)
                for cert_id, cert in self._data.certificates.items()
                if cert.status in (CertStatus.ACTIVE, CertStatus.EXPIRING_SOON) and cert.row.not_after <= now
            )
            return [LapsedCertificate(i, c.row.name, c.status, not_after) for not_after, i, c in rows[:limit]]

    @contextmanager
    def _lock_name(self, name: str) -> Iterator[None]:
        changed = self._store._name_locks_changed
        with changed:
            lock = self._store._name_locks.setdefault(name, _NameLock())
            while lock.owner is not None and lock.owner is not self:
                changed.wait()
            lock.owner = self
            lock.count += 1
            self._held[name] = self._held.get(name, 0) + 1
        try:
            yield
        finally:
            self._unlock(name)

    def _unlock(self, name: str) -> None:
        changed = self._store._name_locks_changed
        with changed:
            lock = self._store._name_locks[name]
            lock.count -= 1
            self._held[name] -= 1
            if self._held[name] == 0:
                del self._held[name]
            if lock.count == 0:
                lock.owner = None
                changed.notify_all()

    def release_all(self) -> None:
        """Release every lock this session still holds (like closing a connection)."""
        for name, count in list(self._held.items()):
            for _ in range(count):
                self._unlock(name)

    def lock_name(self, name: str) -> AbstractContextManager[None]:
        """Re-entrant within this session, blocks other sessions."""
        return self._lock_name(name)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # The store mutex is held for the whole block: other sessions wait (as they
        # would on row locks), and a failure restores the data as it was.
        with self._store._mutex:
            saved = copy.deepcopy(self._store._data)
            self._transaction_depth += 1
            try:
                yield
            except BaseException:
                self._store._data = saved
                raise
            finally:
                self._transaction_depth -= 1

    def transaction(self) -> AbstractContextManager[None]:
        return self._transaction()

    # --- writing -------------------------------------------------------------------
    def insert_certificate(self, row: CertificateRow) -> None:
        if not row.domains:
            raise StateError(
                f"certificate {row.id} has no domain", code=CODE_INVALID, hint="declare at least one domain"
            )
        key_ref_text = encode_key_ref(row.key_ref)
        try:
            uuid.UUID(row.id)
        except ValueError:
            raise StateError(f"certificate id {row.id!r} is not a UUID", code=CODE_INVALID, hint="") from None
        if row.not_after <= row.not_before:
            raise StateError(
                f"certificate {row.id}: rejected (constraint chk_cert_validity)", code=CODE_INVALID, hint=""
            )
        with self._store._mutex:
            data = self._data
            if row.id in data.certificates:
                raise StateError(
                    f"certificate {row.id} exists (constraint certificate_pkey)", code=CODE_CONFLICT, hint=""
                )
            if any(cert.row.serial_number == row.serial_number for cert in data.certificates.values()):
                raise StateError(
                    f"serial {row.serial_number} exists (constraint certificate_serial_number_key)",
                    code=CODE_CONFLICT,
                    hint="",
                )
            if row.status in _LIVE:
                self._check_live_unique(row.name, exclude_id=None)
            created_at = row.created_at if row.created_at is not None else self._store._clock.now()
            data.certificates[row.id] = _Cert(
                row=replace(row, created_at=created_at),
                key_ref_text=key_ref_text,
                status=row.status,
                created_at=created_at,
            )

    def set_status(self, cert_id: str, new: CertStatus) -> CertStatus:
        with self._store._mutex:
            cert = self._cert(cert_id)
            old = cert.status
            check_transition(old, new)
            if old == new:
                return old
            if new in _LIVE and cert.retired_at is None:
                self._check_live_unique(cert.row.name, exclude_id=cert_id)
            cert.status = new
            return old

    def compare_and_set_status(self, cert_id: str, expected: CertStatus, new: CertStatus) -> bool:
        check_transition(expected, new)
        with self._store._mutex:
            cert = self._data.certificates.get(cert_id)
            if cert is None or cert.status is not expected:
                return False
            if new in _LIVE and expected not in _LIVE and cert.retired_at is None:
                self._check_live_unique(cert.row.name, exclude_id=cert_id)
            cert.status = new
            return True

    def retire(self, cert_id: str, at: datetime) -> None:
        """Retire every row of the certificate's name, so no older row becomes current."""
        with self._store._mutex:
            name = self._cert(cert_id).row.name
            for cert in self._data.certificates.values():
                if cert.row.name == name and cert.retired_at is None:
                    cert.retired_at = at

    def open_rotation(self, old_cert_id: str, at: datetime) -> int:
        """Open a rotation of ``old_cert_id``; an already open one is returned instead."""
        with self._store._mutex:
            self._cert(old_cert_id)
            for rotation in self._data.rotations.values():
                if rotation.cert_id == old_cert_id and rotation.completed_at is None:
                    return rotation.id
            rotation_id = self._next_id()
            self._data.rotations[rotation_id] = _Rotation(id=rotation_id, cert_id=old_cert_id, triggered_at=at)
            return rotation_id

    def attach_rotation(self, rotation_id: int, new_cert_id: str) -> None:
        with self._store._mutex:
            self._cert(new_cert_id)
            rotation = self._data.rotations.get(rotation_id)
            if rotation is None or rotation.completed_at is not None:
                raise StateError(f"open rotation {rotation_id} does not exist", code=CODE_NOT_FOUND, hint="")
            rotation.new_cert_id = new_cert_id

    def complete_rotation(self, rotation_id: int, at: datetime) -> None:
        """Close the rotation (idempotent). The status changes are the caller's to make."""
        with self._store._mutex:
            rotation = self._data.rotations.get(rotation_id)
            if rotation is None:
                raise StateError(f"rotation {rotation_id} does not exist", code=CODE_NOT_FOUND, hint="")
            if rotation.completed_at is not None:
                return
            if rotation.new_cert_id is None:
                raise StateError(
                    f"rotation {rotation_id} has no replacement certificate yet",
                    code=CODE_INVALID,
                    hint="attach the new certificate before completing the rotation",
                )
            rotation.completed_at = at

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
        with self._store._mutex:
            name = self._cert(cert_id).row.name
            previous = self._data.distributions.get((name, target))
            verified_fingerprint = fingerprint if verified_at is not None else None
            if verified_fingerprint is None and previous is not None:
                verified_fingerprint = previous.state.verified_fingerprint
            self._data.distributions[(name, target)] = _Distribution(
                cert_id=cert_id,
                state=DistributionState(
                    target=target,
                    fingerprint=fingerprint,
                    pushed_at=pushed_at,
                    verified_at=verified_at,
                    last_error=last_error,
                    target_fingerprint=target_fingerprint,
                    verified_fingerprint=verified_fingerprint,
                ),
            )

    def remove_distribution(self, name: str, target: str) -> None:
        with self._store._mutex:
            self._data.distributions.pop((name, target), None)

    def append_audit(self, event: AuditEvent) -> None:
        if event.action not in AuditAction.ALL:
            raise StateError(
                f"unknown audit action {event.action!r}",
                code=CODE_INVALID,
                hint=f"use one of {', '.join(AuditAction.ALL)}",
            )
        with self._store._mutex:
            if event.cert_id is not None:
                self._cert(event.cert_id)
            stored = replace(event, id=self._next_id(), detail=dict(event.detail))
            self._data.audit.append(stored)

    def bump_serial(self) -> int:
        with self._store._mutex:
            self._data.serial += 1
            return self._data.serial

    def start_run(self, git_commit: str | None, plan_digest: str, at: datetime) -> int:
        with self._store._mutex:
            run_id = self._next_id()
            self._data.runs[run_id] = (git_commit, plan_digest, at, None, None)
            return run_id

    def finish_run(self, run_id: int, outcome: str, at: datetime) -> None:
        with self._store._mutex:
            run = self._data.runs.get(run_id)
            if run is None:
                raise StateError(f"apply run {run_id} does not exist", code=CODE_NOT_FOUND, hint="")
            self._data.runs[run_id] = (run[0], run[1], run[2], outcome, at)

    def journal(self, entry: JournalEntry) -> None:
        if entry.state not in _STEP_STATES:
            raise StateError(
                f"journal state {entry.state!r}: rejected (constraint chk_step_state)",
                code=CODE_INVALID,
                hint="",
            )
        with self._store._mutex:
            if entry.run_id not in self._data.runs:
                raise StateError(
                    f"apply run {entry.run_id}: rejected (constraint applystep_run_id_fkey)",
                    code=CODE_INVALID,
                    hint="",
                )
            at = entry.at if entry.at is not None else self._store._clock.now()
            if self._data.journal and entry.at is None:
                # clock_timestamp() never goes backwards within one database either.
                at = max(at, max(item.at or at for item in self._data.journal) + timedelta(microseconds=1))
            self._data.journal.append(replace(entry, at=at, detail=dict(entry.detail)))

    def replace_key_ref(self, table: KeyRefTable, row_id: str, old: KeyRef, new: KeyRef) -> bool:
        new_text = encode_key_ref(new)
        with self._store._mutex:
            data = self._data
            match table:
                case KeyRefTable.CERTIFICATE:
                    cert = data.certificates.get(row_id)
                    if cert is None or cert.key_ref_text != old.envelope_json:
                        return False
                    cert.key_ref_text = new_text
                    cert.row = replace(cert.row, key_ref=new)
                case KeyRefTable.LOCAL_CA:
                    local_ca = data.local_cas.get(row_id)
                    if local_ca is None or local_ca[1] != old.envelope_json:
                        return False
                    data.local_cas[row_id] = (local_ca[0], new_text)
                case KeyRefTable.ACME_ACCOUNT:
                    return False
                case KeyRefTable.APPLY_STEP:
                    index = int(row_id) - 1
                    if not 0 <= index < len(data.journal):
                        return False
                    entry = data.journal[index]
                    if entry.detail.get("key_ref") != old.envelope_json:
                        return False
                    data.journal[index] = replace(entry, detail={**entry.detail, "key_ref": new_text})
                case _:
                    assert_never(table)
            return True

    def get_local_ca(self, issuer_name: str) -> LocalCaRecord | None:
        with self._store._mutex:
            stored = self._data.local_cas.get(issuer_name)
            if stored is None:
                return None
            return LocalCaRecord(name=issuer_name, cert_pem=stored[0], key_ref=decode_key_ref(stored[1]))

    def put_local_ca(self, record: LocalCaRecord) -> LocalCaRecord:
        key_ref_text = encode_key_ref(record.key_ref)
        with self._store._mutex:
            self._data.local_cas.setdefault(record.name, (record.cert_pem, key_ref_text))
            stored = self.get_local_ca(record.name)
            assert stored is not None
            return stored

    # --- ACME ----------------------------------------------------------------------
    def get_acme_account(self, directory_url: str) -> AcmeAccountRecord | None:
        with self._store._mutex:
            return self._data.acme_accounts.get(directory_url)

    def put_acme_account(self, record: AcmeAccountRecord) -> AcmeAccountRecord:
        with self._store._mutex:
            return self._data.acme_accounts.setdefault(record.directory_url, record)

    def acme_order(self, idempotency_key: str) -> AcmeOrderRecord | None:
        with self._store._mutex:
            stored = self._data.acme_orders.get(idempotency_key)
            return None if stored is None else stored[0]

    def save_acme_order(self, record: AcmeOrderRecord, at: datetime) -> None:
        with self._store._mutex:
            previous = self._data.acme_orders.get(record.idempotency_key)
            self._data.acme_orders[record.idempotency_key] = (record, at if previous is None else previous[1])

    def renewal_info(self, cert_id: str) -> RenewalInfoRecord | None:
        with self._store._mutex:
            return self._data.renewal_infos.get(cert_id)

    def save_renewal_info(self, record: RenewalInfoRecord) -> None:
        with self._store._mutex:
            if record.cert_id not in self._data.certificates:
                raise StateError(
                    f"certificate {record.cert_id} does not exist", code="state-not-found", hint="plan again"
                )
            self._data.renewal_infos[record.cert_id] = record

    def record_failure(self, name: str, at: datetime, declaration_digest: str | None) -> datetime:
        with self._store._mutex:
            previous = self._data.backoff.get(name)
            same = previous is not None and previous.declaration_digest == declaration_digest
            failures = previous.failures + 1 if previous is not None and same else 1
            until = at + backoff_delay(failures)
            self._data.backoff[name] = _Backoff(failures, at, until, declaration_digest)
            return until

    def clear_failures(self, name: str) -> None:
        with self._store._mutex:
            self._data.backoff.pop(name, None)

    # --- beyond the protocol ---------------------------------------------------------
    def failure_count(self, name: str) -> int:
        """How many failures in a row ``name`` has had (0 when none): drives the backoff length."""
        with self._store._mutex:
            entry = self._data.backoff.get(name)
            return 0 if entry is None else entry.failures


def _typing_checks() -> None:  # pragma: no cover - checked by mypy, never run
    from certreconcile.actual.store import StateSession, StateStore

    store: StateStore = InMemoryStore()
    session: StateSession = InMemorySession(InMemoryStore())
    del store, session
