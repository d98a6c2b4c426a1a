"""PostgresStore(keep_idle=N): the connections of ended sessions serve the next ones, never with anything held."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from certreconcile.actual.repository import PostgresSession, PostgresStore
from certreconcile.errors import StateError


def _backend(session: PostgresSession) -> int:
    return session._conn.info.backend_pid


@pytest.fixture
def keeping(database_url: str) -> Iterator[PostgresStore]:
    """A store keeping two connections between sessions; they are closed at the end."""
    store = PostgresStore(database_url, keep_idle=2)
    yield store
    store.close()


def test_without_keep_idle_every_session_has_its_own_connection(database_url: str) -> None:
    store = PostgresStore(database_url)
    with store.session() as first:
        pid = _backend(first)
    with store.session() as second:
        assert _backend(second) != pid
    assert first._conn.closed


def test_a_kept_connection_serves_the_next_session_and_holds_no_name_lock(database_url: str) -> None:
    store = PostgresStore(database_url, keep_idle=2)
    other = PostgresStore(database_url)
    try:
        with store.session() as first:
            pid = _backend(first)
            with first.lock_name("shop"), other.session() as rival, rival.try_lock_name("shop") as got:
                assert not got  # held while the first session has it
        assert not first._conn.closed  # kept, idle
        with other.session() as rival, rival.try_lock_name("shop") as got:
            assert got  # released when the session ended, although its connection lives on
        with store.session() as second:
            assert _backend(second) == pid
            assert second.meta().serial >= 0
    finally:
        store.close()
    assert first._conn.closed


def test_a_connection_left_in_a_transaction_is_closed_not_kept(keeping: PostgresStore) -> None:
    with keeping.session() as first:
        pid = _backend(first)
        first._conn.execute("BEGIN")  # what an interrupted transaction would leave behind
    assert first._conn.closed
    with keeping.session() as second:
        assert _backend(second) != pid


def test_a_kept_connection_whose_backend_was_terminated_is_replaced(keeping: PostgresStore, database_url: str) -> None:
    with keeping.session() as first:
        pid = _backend(first)
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with keeping.session() as second:
        assert second.meta().serial >= 0  # the lost connection is noticed and replaced
        assert _backend(second) != pid


def test_at_most_keep_idle_connections_are_kept(database_url: str) -> None:
    store = PostgresStore(database_url, keep_idle=1)
    try:
        with store.session() as first, store.session() as second:
            pids = {_backend(first), _backend(second)}
        assert len(pids) == 2
        assert first._conn.closed != second._conn.closed  # one kept, one closed
    finally:
        store.close()


def test_a_connection_whose_unlock_failed_is_closed_and_its_lock_released(
    keeping: PostgresStore, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def lock_then_fail_to_unlock(session: PostgresSession) -> None:
        run = session._run

        def unlock_refused(doing: str, work: Callable[[psycopg.Connection[Any]], object]) -> object:
            if doing.startswith("unlocking"):
                raise StateError("unlock refused", code="state-error")
            return run(doing, work)

        monkeypatch.setattr(session, "_run", unlock_refused)
        with session.lock_name("shop"):
            pass

    with keeping.session() as first:
        pid = _backend(first)
        with pytest.raises(StateError, match="unlock refused"):
            lock_then_fail_to_unlock(first)
    assert first._conn.closed  # it may still have held the lock: not kept
    with PostgresStore(database_url).session() as other, other.try_lock_name("shop") as got:
        assert got
    with keeping.session() as second:
        assert _backend(second) != pid
