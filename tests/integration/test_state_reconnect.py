"""The state store after its connection is cut (``pg_terminate_backend``), on the real PostgreSQL.

Outside a transaction, name lock or snapshot, the statement that finds the connection lost runs
again on a new one; inside one, the work fails whole (never resumed on another connection, never
half-applied), and the session works again afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from certreconcile.actual.repository import PostgresSession, PostgresStore
from certreconcile.audit.events import AuditEvent
from certreconcile.errors import StateError

AT = datetime(2026, 1, 1, tzinfo=UTC)


def backend_pid(session: PostgresSession) -> int:
    row = session._conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def terminate(database_url: str, pid: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        admin.execute("SELECT pg_sleep(0.05)")  # the backend is gone before the session's next statement


def event(name: str) -> AuditEvent:
    return AuditEvent(cert_id=None, name=name, action="failed", actor="user:test", at=AT, detail={"error": "x"})


def audit_names(database_url: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        return [row[0] for row in conn.execute("SELECT name FROM CertAudit ORDER BY id")]


def test_the_store_names_its_connections(postgres_store: PostgresStore, database_url: str) -> None:
    with postgres_store.session() as session:
        pid = backend_pid(session)
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    assert row == ("certreconcile",)


def test_a_cut_connection_is_replaced_at_a_transaction_boundary(
    postgres_store: PostgresStore, database_url: str
) -> None:
    with postgres_store.session() as session:
        first = backend_pid(session)
        terminate(database_url, first)
        assert session.meta().serial >= 0  # the statement ran again on a new connection
        session.append_audit(event("after-the-cut"))
        assert backend_pid(session) != first
    assert audit_names(database_url) == ["after-the-cut"]


def test_a_transaction_cut_in_the_middle_fails_whole(postgres_store: PostgresStore, database_url: str) -> None:
    with postgres_store.session() as session:

        def cut_in_the_middle() -> None:
            with session.transaction():
                session.append_audit(event("first-half"))
                terminate(database_url, backend_pid(session))
                session.append_audit(event("second-half"))

        with pytest.raises(StateError) as raised:
            cut_in_the_middle()
        assert raised.value.code == "database-unavailable"
        assert audit_names(database_url) == []  # nothing of the cut transaction, not even its first half
        session.append_audit(event("next"))  # the session works again after the boundary
    assert audit_names(database_url) == ["next"]


def test_a_name_lock_is_never_resumed_on_another_connection(postgres_store: PostgresStore, database_url: str) -> None:
    """The advisory lock died with the connection: the work under it fails rather than run unlocked."""
    with postgres_store.session() as session:

        def cut_under_the_lock() -> None:
            with session.lock_name("shop"):
                terminate(database_url, backend_pid(session))
                session.append_audit(event("under-the-lost-lock"))

        with pytest.raises(StateError) as raised:
            cut_under_the_lock()
        assert raised.value.code == "database-unavailable"
        with session.lock_name("shop"):  # taken again, on a new connection
            session.append_audit(event("under-a-new-lock"))
    assert audit_names(database_url) == ["under-a-new-lock"]


def test_a_statement_timeout_is_its_own_error(postgres_store: PostgresStore, database_url: str) -> None:
    with postgres_store.session() as session:
        session._conn.execute("SET statement_timeout = '50ms'")
        with pytest.raises(StateError) as raised:
            session._run("sleeping", lambda conn: conn.execute("SELECT pg_sleep(1)"))
    assert raised.value.code == "database-timeout"
    assert "apply again" in raised.value.hint
