"""The fake's data, its per-name locks and transactions: what every concern of the fake session shares."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from certreconcile.actual.model import (
    AgentRecord,
    DistributionState,
)
from certreconcile.actual.outbox import QueuedNotification
from certreconcile.actual.repository import (
    CODE_CONFLICT,
    CODE_NOT_FOUND,
)
from certreconcile.actual.store import (
    AcmeAccountRecord,
    AcmeOrderRecord,
    AgentCertificateRow,
    CertificateRow,
    FleetCaRecord,
    FollowedCommit,
    JournalEntry,
    RenewalInfoRecord,
)
from certreconcile.audit.events import AuditEvent
from certreconcile.domain.status import CertStatus
from certreconcile.errors import StateError

if TYPE_CHECKING:
    from certreconcile.testing.fake_repository import InMemoryStore


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
class _Agent:
    row: AgentCertificateRow
    enrolled_at: datetime
    renewed_at: datetime | None = None
    last_seen_at: datetime | None = None
    last_error: str | None = None


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
    followed: FollowedCommit | None = None  # StateMeta.git_source/git_commit
    acme_orders: dict[str, tuple[AcmeOrderRecord, datetime]] = field(default_factory=dict)  # record, created_at
    renewal_infos: dict[str, RenewalInfoRecord] = field(default_factory=dict)
    fleet_ca: FleetCaRecord | None = None
    agents: dict[str, _Agent] = field(default_factory=dict)
    outbox: dict[int, QueuedNotification] = field(default_factory=dict)  # by id


class _NameLock:
    """An advisory lock: owned by a session, counted, waited for by other sessions."""

    def __init__(self) -> None:
        self.owner: object | None = None
        self.count = 0


class FakeSessionBase:
    """The fake's data, its per-name locks and transactions: what every concern of the fake session shares."""

    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self._held: dict[str, int] = {}
        self._transaction_depth = 0

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

    @contextmanager
    def _try_lock_name(self, name: str) -> Iterator[bool]:
        changed = self._store._name_locks_changed
        with changed:
            lock = self._store._name_locks.setdefault(name, _NameLock())
            if lock.owner is not None and lock.owner is not self:
                taken = False
            else:
                taken, lock.owner = True, self
                lock.count += 1
                self._held[name] = self._held.get(name, 0) + 1
        if not taken:
            yield False
            return
        try:
            yield True
        finally:
            self._unlock(name)

    def try_lock_name(self, name: str) -> AbstractContextManager[bool]:
        """:meth:`lock_name` without waiting: yields False (holding nothing) when another session holds it."""
        return self._try_lock_name(name)

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

    def batch(self) -> AbstractContextManager[None]:
        return self._transaction()

    def _agent_records(self) -> dict[str, AgentRecord]:
        with self._store._mutex:
            return {
                name: AgentRecord(
                    name=name, serial=agent.row.serial, fingerprint=agent.row.fingerprint,
                    not_before=agent.row.not_before, not_after=agent.row.not_after, enrolled_at=agent.enrolled_at,
                    renewed_at=agent.renewed_at, last_seen_at=agent.last_seen_at, last_error=agent.last_error,
                )
                for name, agent in sorted(self._data.agents.items())
            }  # fmt: skip
