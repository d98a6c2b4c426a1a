"""One connection and its plumbing: errors, reconnection at a transaction boundary, snapshots, locks."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict

from certreconcile.domain.keys import KeyRef, KeyType
from certreconcile.domain.policy import OnDelete, Origin
from certreconcile.domain.status import CertStatus
from certreconcile.errors import StateError

CODE_CONFLICT = "state-conflict"


CODE_NOT_FOUND = "state-not-found"


CODE_INVALID = "state-invalid"


CODE_UNAVAILABLE = "database-unavailable"


CODE_SCHEMA_MISSING = "schema-missing"


CODE_AUDIT_APPEND_ONLY = "audit-append-only"


_T = TypeVar("_T")
_IDLE = psycopg.pq.TransactionStatus.IDLE


log = logging.getLogger("certreconcile.state")


# Enum lookups by value are slow in a 100k-row loop; dictionaries are not.
_STATUS = {status.value: status for status in CertStatus}


_KEY_TYPE = {key_type.value: key_type for key_type in KeyType}


_ON_DELETE = {on_delete.value: on_delete for on_delete in OnDelete}


_ORIGIN = {origin.value: origin for origin in Origin}


_JSON_LOADS = json.loads


def name_lock_key(name: str) -> str:
    """The text hashed (``hashtextextended(..., 0)``) into a name's advisory-lock key."""
    return "certreconcile:name:" + name


def encode_key_ref(key_ref: KeyRef) -> str:
    """The ``key_ref`` column text: the envelope JSON, checked to name the same KMS and key.

    The envelope must be a JSON object with top-level ``kms`` and ``key_id`` fields
    equal to the handle's, so that :func:`decode_key_ref` gives the handle back.
    """
    decoded = decode_key_ref(key_ref.envelope_json)
    if (decoded.kms, decoded.key_id) != (key_ref.kms, key_ref.key_id):
        raise StateError(
            "a key reference's envelope names another KMS or key than its handle",
            code=CODE_INVALID,
            hint="build KeyRef from the envelope the KMS returned",
        )
    return key_ref.envelope_json


def decode_key_ref(envelope_json: str) -> KeyRef:
    """The handle for a stored envelope (the message never quotes the envelope)."""
    try:
        envelope = json.loads(envelope_json)
    except ValueError:
        envelope = None
    if (
        not isinstance(envelope, dict)
        or not isinstance(envelope.get("kms"), str)
        or not isinstance(envelope.get("key_id"), str)
    ):
        raise StateError(
            "a stored key reference is not a KMS envelope (JSON object with kms and key_id)",
            code=CODE_INVALID,
            hint="the key_ref column must hold the envelope written by certreconcile's KMS layer",
        )
    return KeyRef(envelope_json=envelope_json, kms=envelope["kms"], key_id=envelope["key_id"])


def _password_of(url: str) -> str | None:
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.Error:
        return None
    return str(password) if password else None


def _state_error(exc: psycopg.Error, doing: str, secret: str | None) -> StateError:
    """Translate a psycopg error; only safe parts of it are shown."""
    sqlstate = exc.sqlstate
    diag = exc.diag
    constraint = diag.constraint_name
    primary = diag.message_primary
    if isinstance(exc, pgerrors.UniqueViolation | pgerrors.ExclusionViolation):
        code = CODE_CONFLICT
        message = f"{doing}: conflicts with an existing row (constraint {constraint})"
        hint = "another apply may have changed this name; run `certreconcile plan` again"
    elif isinstance(exc, pgerrors.IntegrityError):
        code = CODE_INVALID
        message = f"{doing}: rejected by the database (constraint {constraint or sqlstate})"
        hint = "this is a bug in certreconcile or a hand-edited row; please report it"
    elif isinstance(exc, pgerrors.UndefinedTable | pgerrors.UndefinedColumn | pgerrors.UndefinedFunction):
        code = CODE_SCHEMA_MISSING
        message = f"{doing}: the database schema is missing or outdated ({primary})"
        hint = "run `certreconcile db upgrade`"
    elif isinstance(exc, pgerrors.RaiseException) and primary and "append-only" in primary:
        code = CODE_AUDIT_APPEND_ONLY
        message = f"{doing}: {primary}"
        hint = "audit events can only be inserted"
    elif isinstance(exc, pgerrors.InsufficientPrivilege | pgerrors.ReadOnlySqlTransaction):
        code = "state-permission-denied"
        message = f"{doing}: permission denied ({primary})"
        hint = (
            "this command needs a database role allowed to write (the apply role); `plan` alone runs read-only;"
            " after `db upgrade`, run `certreconcile db roles` again as the administrator"
        )
    elif isinstance(exc, pgerrors.QueryCanceled):
        code = "database-timeout"
        message = f"{doing}: the statement was cancelled ({primary or 'statement timeout'})"
        hint = "a statement outlasted statement_timeout (a lock held by another session?); apply again"
    elif isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and (
        sqlstate is None or isinstance(exc, pgerrors.AdminShutdown | pgerrors.CrashShutdown | pgerrors.CannotConnectNow)
    ):
        code = CODE_UNAVAILABLE
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        message = f"{doing}: cannot reach the database ({first_line})"
        hint = "check CERTRECONCILE_DATABASE_URL (unset: the embedded PostgreSQL in .certreconcile/)"
    else:
        code = "state-error"
        message = f"{doing}: {type(exc).__name__} (SQLSTATE {sqlstate}): {primary or 'no message'}"
        hint = "see the PostgreSQL server log for details"
    if secret:
        message = message.replace(secret, "***")
    return StateError(message, code=code, hint=hint)


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching ``text`` as a literal prefix (backslash is LIKE's default escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _not_found(what: str, key: object) -> StateError:
    return StateError(f"{what} {key} does not exist", code=CODE_NOT_FOUND, hint="run `certreconcile plan` again")


def _missing_meta() -> StateError:
    return StateError(
        "the StateMeta row is missing",
        code=CODE_SCHEMA_MISSING,
        hint="run `certreconcile db upgrade`; the database was not created by certreconcile",
    )


class PostgresConnection:
    """One connection; used by one thread at a time.

    A lost connection (terminated backend, restarted server) is replaced at a transaction
    boundary only: outside any ``transaction()``, name lock and read snapshot, the statement
    that found it lost runs again on a new connection (one statement in autocommit: it ran
    whole or not at all). Inside one, the work is not resumed on another connection (the
    transaction was rolled back, the advisory lock released): the error is raised, the change
    fails, and the journal lets the next apply finish it.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        secret: str | None,
        reconnect: Callable[[], psycopg.Connection[Any]] | None = None,
    ) -> None:
        self._conn = conn
        self._secret = secret
        self._reconnect = reconnect
        self._pinned = 0  # open transactions, held name locks and read snapshots: no reconnection inside
        self._lock_in_doubt = False  # an unlock failed: the connection may hold a name lock, never reuse it

    def _lost(self) -> bool:
        return self._conn.closed or self._conn.broken

    def _revive(self) -> bool:
        """A new connection in place of a lost one, at a transaction boundary; False when not allowed."""
        if self._reconnect is None or self._pinned or not self._lost():
            return False
        log.warning("the state database connection was lost; reconnecting")
        self._conn = self._reconnect()
        return True

    def _run(self, doing: str, work: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        self._revive()
        try:
            return work(self._conn)
        except psycopg.OperationalError as exc:
            if not self._revive():
                raise _state_error(exc, doing, self._secret) from exc
        except psycopg.Error as exc:
            raise _state_error(exc, doing, self._secret) from exc
        try:
            return work(self._conn)
        except psycopg.Error as exc:
            raise _state_error(exc, doing, self._secret) from exc

    @contextmanager
    def _pin(self) -> Iterator[None]:
        self._pinned += 1
        try:
            yield
        finally:
            self._pinned -= 1

    def reusable(self) -> bool:
        """Whether another session may take this connection as it is: alive, idle (no transaction),
        and holding no name lock (every lock taken was released by a statement that succeeded)."""
        conn = self._conn
        return (
            not self._pinned
            and not self._lock_in_doubt
            and not conn.closed
            and not conn.broken
            and conn.pgconn.transaction_status == _IDLE  # not conn.info: that builds an object per call
        )

    def _in_transaction(self) -> bool:
        return self._conn.pgconn.transaction_status != _IDLE

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """One consistent read snapshot for several queries (or the caller's transaction)."""
        if self._in_transaction():
            yield
            return
        self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # The current-row sort of 100k+ rows spills to disk with the default 4MB.
        self._conn.execute("SET LOCAL work_mem = '64MB'")
        try:
            with self._pin():
                yield
        finally:
            if not self._conn.closed:
                self._conn.execute("COMMIT")

    @contextmanager
    def _lock_name(self, name: str) -> Iterator[None]:
        key = name_lock_key(name)
        self._run(
            f"locking {name}",
            lambda conn: conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,)),
        )
        with self._lock_held(name, key):
            yield

    @contextmanager
    def _try_lock_name(self, name: str) -> Iterator[bool]:
        key = name_lock_key(name)
        row = self._run(
            f"locking {name}",
            lambda conn: conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone(),
        )
        if row is None or not row[0]:
            yield False
            return
        with self._lock_held(name, key):
            yield True

    @contextmanager
    def _lock_held(self, name: str, key: str) -> Iterator[None]:
        try:
            with self._pin():
                yield
        finally:
            if not self._conn.closed and not self._conn.broken:  # (a lost connection holds nothing)
                try:
                    if self._conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                        self._conn.rollback()
                    self._run(
                        f"unlocking {name}",
                        lambda conn: conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,)),
                    )
                except BaseException:
                    self._lock_in_doubt = True
                    raise

    def try_lock_name(self, name: str) -> AbstractContextManager[bool]:
        """:meth:`lock_name` without waiting: yields False (holding nothing) when another session holds it."""
        return self._try_lock_name(name)

    def lock_name(self, name: str) -> AbstractContextManager[None]:
        """Session-level advisory lock; re-entrant within this session, blocks other sessions."""
        return self._lock_name(name)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._revive()
        try:
            with self._pin(), self._conn.transaction():
                yield
        except psycopg.Error as exc:
            raise _state_error(exc, "committing a transaction", self._secret) from exc

    def transaction(self) -> AbstractContextManager[None]:
        """Nested calls become savepoints."""
        return self._transaction()

    @contextmanager
    def _batch(self) -> Iterator[None]:
        if self._conn.pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF or self._in_transaction():
            with self._transaction():  # inside another transaction or batch: a savepoint, as transaction() does
                yield
            return
        self._revive()
        try:
            with self._pin():
                try:
                    with self._conn.pipeline():
                        self._conn.execute("BEGIN")
                        yield
                        self._conn.execute("COMMIT")
                finally:  # the block raised, or a write failed: nothing of it stays
                    if not self._lost() and self._in_transaction():
                        self._conn.rollback()
        except psycopg.Error as exc:
            raise _state_error(exc, "writing a batch of rows", self._secret) from exc

    def batch(self) -> AbstractContextManager[None]:
        """``transaction()`` in one round trip: the writes inside are pipelined, sent with BEGIN and
        COMMIT at the end of the block (a read inside waits for its answer). A failing write fails the
        block as a whole: its error is raised at the end of the block, where nothing was committed.
        Code inside must not look at a write's row count (not known before the end of the block)."""
        return self._batch()
