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

The session is composed of one class per concern, in :mod:`certreconcile.testing.fake_state`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from certreconcile.clock import Clock, SystemClock
from certreconcile.testing.fake_state.acme import FakeAcme
from certreconcile.testing.fake_state.audit import FakeAudit
from certreconcile.testing.fake_state.base import _Data, _NameLock
from certreconcile.testing.fake_state.certificates import FakeCertificates
from certreconcile.testing.fake_state.fleet import FakeFleet
from certreconcile.testing.fake_state.journal import FakeJournal
from certreconcile.testing.fake_state.key_refs import FakeKeyRefs
from certreconcile.testing.fake_state.local_ca import FakeLocalCa
from certreconcile.testing.fake_state.outbox import FakeOutbox

__all__ = ["InMemorySession", "InMemoryStore"]


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


class InMemorySession(
    FakeCertificates, FakeJournal, FakeAudit, FakeKeyRefs, FakeLocalCa, FakeAcme, FakeFleet, FakeOutbox
):
    """Every concern of the fake, composed (implements ``StateSession``)."""


def _typing_checks() -> None:  # pragma: no cover - checked by mypy, never run
    from certreconcile.actual.store import StateSession, StateStore

    store: StateStore = InMemoryStore()
    session: StateSession = InMemorySession(InMemoryStore())
    del store, session
