"""The PostgreSQL state repository (psycopg 3): every SQL statement of certreconcile.

:class:`PostgresStore` implements :class:`~certreconcile.actual.store.StateStore`; each
:class:`PostgresSession` owns one connection in autocommit mode, so every write
commits on return unless it runs inside :meth:`PostgresSession.transaction`.

Invariants kept here (and mirrored by the in-memory fake):

* The *current* row of a name is its live row (issued, active, expiring_soon; at most one,
  by a unique index) or else its newest row (``created_at``, then ``not_before``, then ``id``)
  that is neither retired nor ``superseded``: the replacement wins over the row it replaces
  even when both were created in the same instant.
* Status changes go through :func:`~certreconcile.domain.status.check_transition` and
  a compare-and-set UPDATE, so a concurrent change is detected, never overwritten.
* Every psycopg error leaves as :class:`~certreconcile.errors.StateError`. Its message
  is built from the SQLSTATE, the constraint name and the server's primary message,
  never from the DETAIL (which can quote a whole row, ``key_ref`` included), and the
  password of the URL is scrubbed from anything shown.

The session is composed of one class per concern, in :mod:`certreconcile.actual.postgres`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg

from certreconcile.actual import migrate
from certreconcile.actual.postgres.acme import PostgresAcme
from certreconcile.actual.postgres.audit import PostgresAudit
from certreconcile.actual.postgres.certificates import PostgresCertificates
from certreconcile.actual.postgres.connection import (
    CODE_CONFLICT,
    CODE_INVALID,
    CODE_NOT_FOUND,
    CODE_UNAVAILABLE,
    _password_of,
    _state_error,
    decode_key_ref,
    encode_key_ref,
    name_lock_key,
)
from certreconcile.actual.postgres.fleet import PostgresFleet
from certreconcile.actual.postgres.journal import PostgresJournal
from certreconcile.actual.postgres.key_refs import PostgresKeyRefs
from certreconcile.actual.postgres.local_ca import PostgresLocalCa
from certreconcile.actual.postgres.outbox import PostgresOutbox
from certreconcile.errors import StateError
from certreconcile.retry import RetryPolicy, Verdict

__all__ = [
    "CODE_CONFLICT",
    "CODE_INVALID",
    "CODE_NOT_FOUND",
    "CODE_UNAVAILABLE",
    "PostgresSession",
    "PostgresStore",
    "decode_key_ref",
    "encode_key_ref",
    "name_lock_key",
]


class PostgresSession(
    PostgresCertificates,
    PostgresJournal,
    PostgresAudit,
    PostgresKeyRefs,
    PostgresLocalCa,
    PostgresAcme,
    PostgresFleet,
    PostgresOutbox,
):
    """One connection; used by one thread at a time.

    A lost connection (terminated backend, restarted server) is replaced at a transaction
    boundary only: outside any ``transaction()``, name lock and read snapshot, the statement
    that found it lost runs again on a new connection (one statement in autocommit: it ran
    whole or not at all). Inside one, the work is not resumed on another connection (the
    transaction was rolled back, the advisory lock released): the error is raised, the change
    fails, and the journal lets the next apply finish it.
    """


class PostgresStore:
    """Hands out :class:`PostgresSession` objects, one connection each.

    ``keep_idle``: how many connections of ended sessions the store keeps for its next sessions (a
    long-running ``run`` opens several sessions per cycle and per order; a new connection costs a
    backend process and a SCRAM exchange, about 4 ms against the embedded server). 0, the default:
    every session connects and closes. A connection is kept only when its session left it alive, idle
    and holding no name lock (:meth:`PostgresSession.reusable`); the others are closed, which releases
    whatever they held. Kept connections are never used by another process (a fork starts empty).
    """

    def __init__(
        self, url: str, *, connect_timeout: int = 10, retry: RetryPolicy | None = None, keep_idle: int = 0
    ) -> None:
        self._url = url
        self._secret = _password_of(url)
        self._connect_timeout = connect_timeout
        self._retry = retry or RetryPolicy(attempts=6, total=20.0, first_delay=0.2, max_delay=5.0)
        self._keep_idle = keep_idle
        self._idle: list[psycopg.Connection[Any]] = []
        self._idle_lock = threading.Lock()
        self._idle_pid = os.getpid()
        self._forked_away: list[psycopg.Connection[Any]] = []  # kept referenced: freeing one would close it

    def __repr__(self) -> str:  # never the URL: it may carry a password
        return "PostgresStore(<url>)"

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=self._connect_timeout,
                options="-c TimeZone=UTC",
                application_name="certreconcile",
            )
        except psycopg.Error as exc:
            raise _state_error(exc, "connecting to the state database", self._secret) from exc

    def _reconnect(self) -> psycopg.Connection[Any]:
        """A new connection after a lost one; a restarting server gets a few bounded tries."""

        def unavailable(exc: BaseException) -> Verdict:
            return Verdict(isinstance(exc, StateError) and exc.code == CODE_UNAVAILABLE, None, "database unavailable")

        return self._retry.call("reconnecting to the state database", self._connect, unavailable)

    def _take(self) -> psycopg.Connection[Any]:
        """A kept connection when one is still alive, else a new one."""
        with self._idle_lock:
            if self._idle_pid != os.getpid():  # a forked child: the parent's sockets are not ours to use,
                self._forked_away, self._idle, self._idle_pid = self._idle, [], os.getpid()  # nor to close
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed and not conn.broken:
                    return conn
        return self._connect()

    def _release(self, session: PostgresSession) -> None:
        conn = session._conn
        if self._keep_idle and session.reusable():
            with self._idle_lock:
                if self._idle_pid == os.getpid() and len(self._idle) < self._keep_idle:
                    self._idle.append(conn)
                    return
        conn.close()  # also releases any advisory lock still held

    def close(self) -> None:
        """Close the kept connections (the store stays usable: its next session connects)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    @contextmanager
    def _session(self) -> Iterator[PostgresSession]:
        session = PostgresSession(self._take(), self._secret, self._reconnect)
        try:
            yield session
        finally:
            self._release(session)

    def session(self) -> AbstractContextManager[PostgresSession]:
        return self._session()

    def upgrade(self) -> list[str]:
        with self._session() as session:
            return migrate.upgrade(session._conn)


def _typing_checks() -> None:  # pragma: no cover - checked by mypy, never run
    from certreconcile.actual.store import StateSession, StateStore

    store: StateStore = PostgresStore("")
    session: StateSession = PostgresSession.__new__(PostgresSession)
    del store, session
