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
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict

from certreconcile.actual import migrate
from certreconcile.actual.model import (
    BACKOFF_CAP,
    BACKOFF_INITIAL,
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
)
from certreconcile.actual.store import (
    AcmeAccountRecord,
    AcmeOrderRecord,
    AuditAction,
    AuditChainHead,
    AuditChainRow,
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
from certreconcile.domain.keys import KeyRef, KeyType
from certreconcile.domain.policy import OnDelete
from certreconcile.domain.status import CertStatus, check_transition
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

CODE_CONFLICT = "state-conflict"
CODE_NOT_FOUND = "state-not-found"
CODE_INVALID = "state-invalid"
CODE_UNAVAILABLE = "database-unavailable"
CODE_SCHEMA_MISSING = "schema-missing"
CODE_AUDIT_APPEND_ONLY = "audit-append-only"

_T = TypeVar("_T")

log = logging.getLogger("certreconcile.state")

# Enum lookups by value are slow in a 100k-row loop; dictionaries are not.
_STATUS = {status.value: status for status in CertStatus}
_KEY_TYPE = {key_type.value: key_type for key_type in KeyType}
_ON_DELETE = {on_delete.value: on_delete for on_delete in OnDelete}
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


# The columns every current-row query reads, in the order _row_to_certificate expects.
# Never key_ref (has_key is generated from it): `plan` runs under a role that may not read it.
# AcmeRenewalInfo has at most one row per certificate (its primary key): the join adds none.
_SQL_CURRENT_ALL = (
    "SELECT DISTINCT ON (name) id::text, name, domain, san_domains::text, issuer, key_type,"
    " serial_number, not_before, not_after, status, fingerprint, on_delete, has_key,"
    " issuer_fingerprint, ari.window_start, ari.window_end"
    " FROM Certificate LEFT JOIN AcmeRenewalInfo ari ON ari.cert_id = Certificate.id"
    " WHERE retired_at IS NULL AND status <> 'superseded'"
    " ORDER BY name, (status IN ('issued','active','expiring_soon')) DESC,"
    " created_at DESC, not_before DESC, Certificate.id DESC"
)
_SQL_CURRENT_ONE = (
    "SELECT id::text, name, domain, san_domains::text, issuer, key_type,"
    " serial_number, not_before, not_after, status, fingerprint, on_delete, has_key,"
    " issuer_fingerprint, ari.window_start, ari.window_end"
    " FROM Certificate LEFT JOIN AcmeRenewalInfo ari ON ari.cert_id = Certificate.id"
    " WHERE name = %s AND retired_at IS NULL AND status <> 'superseded'"
    " ORDER BY name, (status IN ('issued','active','expiring_soon')) DESC,"
    " created_at DESC, not_before DESC, Certificate.id DESC LIMIT 1"
)
_SQL_DISTRIBUTIONS_ALL = (
    "SELECT cert_name, target, fingerprint, pushed_at, verified_at, last_error, target_fingerprint,"
    " verified_fingerprint"
    " FROM Distribution ORDER BY cert_name, target"
)
_SQL_DISTRIBUTIONS_ONE = (
    "SELECT cert_name, target, fingerprint, pushed_at, verified_at, last_error, target_fingerprint,"
    " verified_fingerprint"
    " FROM Distribution WHERE cert_name = %s ORDER BY target"
)
_SQL_OPEN_ROTATIONS_ALL = (
    "SELECT c.name, r.id, r.cert_id::text, r.new_cert_id::text, r.triggered_at"
    " FROM CertRotation r JOIN Certificate c ON c.id = r.cert_id WHERE r.completed_at IS NULL"
)
_SQL_BACKOFFS_ALL = (
    "SELECT name, failures, last_failure_at, until, declaration_digest FROM IssuanceBackoff ORDER BY name"
)
# Certificates ACME CAs issued in the window (the join to their order gives the directory;
# certificates of other issuers have no order). `renewal`: an earlier certificate of the
# same issuer had the same names (idx_cert_domain). Both sides bounded by time (0005's
# index, and idx_acmeorder_directory_created): an order is placed before its certificate,
# and ACME orders expire within days, so one window more on the order's side loses nothing.
_SQL_RECENT_ISSUANCES = (
    "SELECT o.directory_url, c.domain, c.san_domains::text, c.created_at, c.ari_replaces IS NOT NULL,"
    " EXISTS (SELECT 1 FROM Certificate p WHERE p.domain = c.domain AND p.san_domains = c.san_domains"
    " AND p.issuer = c.issuer AND p.created_at < c.created_at)"
    " FROM Certificate c JOIN AcmeOrder o ON o.cert_id = c.id"
    " WHERE c.created_at >= now() - %(window)s AND o.directory_url IS NOT NULL"
    " AND o.created_at >= now() - 2 * %(window)s"
    " ORDER BY c.created_at, c.id"
)
_SQL_RECENT_ORDERS = (
    "SELECT o.directory_url, o.created_at, coalesce(c.ari_replaces IS NOT NULL, false)"
    " FROM AcmeOrder o LEFT JOIN Certificate c ON c.id = o.cert_id"
    " WHERE o.created_at >= now() - %s AND o.directory_url IS NOT NULL"
    " ORDER BY o.created_at, o.id"
)
# One statement: a failure under the same declaration doubles the wait (capped), another
# declaration starts again at one failure.
_SQL_RECORD_FAILURE = (
    "INSERT INTO IssuanceBackoff AS b (name, failures, last_failure_at, until, declaration_digest)"
    " VALUES (%(name)s, 1, %(at)s, %(at)s + %(initial)s, %(digest)s)"
    " ON CONFLICT (name) DO UPDATE SET"
    " failures = CASE WHEN b.declaration_digest IS NOT DISTINCT FROM EXCLUDED.declaration_digest"
    " THEN b.failures + 1 ELSE 1 END,"
    " last_failure_at = EXCLUDED.last_failure_at,"
    " until = EXCLUDED.last_failure_at + least(%(initial)s * power(2, CASE WHEN b.declaration_digest"
    " IS NOT DISTINCT FROM EXCLUDED.declaration_digest THEN least(b.failures, 16) ELSE 0 END), %(cap)s),"
    " declaration_digest = EXCLUDED.declaration_digest"
    " RETURNING until"
)
_SQL_OPEN_ROTATION_ONE = (
    "SELECT c.name, r.id, r.cert_id::text, r.new_cert_id::text, r.triggered_at"
    " FROM CertRotation r JOIN Certificate c ON c.id = r.cert_id"
    " WHERE r.completed_at IS NULL AND c.name = %s ORDER BY r.id DESC LIMIT 1"
)


# kms rewrap: one page of each table's envelopes in row-key order (key sets, never OFFSET).
# Certificate ids are UUIDs, whose order is that of their text; issuer names compare in "C".
_SQL_KEY_REFS: dict[KeyRefTable, tuple[str, str, str]] = {  # select, after, order
    KeyRefTable.CERTIFICATE: (
        "SELECT id::text, key_ref, name, id::text FROM Certificate WHERE key_ref <> ''",
        " AND id > %s::uuid",
        " ORDER BY Certificate.id LIMIT %s",  # qualified: a bare `id` would sort the id::text output
    ),
    KeyRefTable.LOCAL_CA: (
        "SELECT issuer_name, key_ref, issuer_name, NULL FROM LocalCa WHERE true",
        ' AND issuer_name COLLATE "C" > %s',
        ' ORDER BY issuer_name COLLATE "C" LIMIT %s',
    ),
    KeyRefTable.ACME_ACCOUNT: (
        "SELECT id::text, key_ref, directory_url, NULL FROM AcmeAccount WHERE true",
        " AND id > %s::bigint",
        " ORDER BY AcmeAccount.id LIMIT %s",
    ),
    KeyRefTable.APPLY_STEP: (
        "SELECT id::text, detail->>'key_ref', name, detail->>'cert_id' FROM ApplyStep"
        " WHERE step = 'key-generated' AND detail ? 'key_ref'",  # JournalStep.KEY_GENERATED (a test holds them)
        " AND id > %s::bigint",
        " ORDER BY ApplyStep.id LIMIT %s",
    ),
}
_SQL_REPLACE_KEY_REF: dict[KeyRefTable, str] = {
    KeyRefTable.CERTIFICATE: "UPDATE Certificate SET key_ref = %s WHERE id = %s::uuid AND key_ref = %s",
    KeyRefTable.LOCAL_CA: "UPDATE LocalCa SET key_ref = %s WHERE issuer_name = %s AND key_ref = %s",
    KeyRefTable.ACME_ACCOUNT: "UPDATE AcmeAccount SET key_ref = %s WHERE id = %s::bigint AND key_ref = %s",
    KeyRefTable.APPLY_STEP: (
        "UPDATE ApplyStep SET detail = jsonb_set(detail, '{key_ref}', to_jsonb(%s::text))"
        " WHERE id = %s::bigint AND detail->>'key_ref' = %s"
    ),
}
# Rows still active or expiring_soon past not_after (apply/lifecycle.py moves them to expired):
# idx_cert_not_after's predicate, so few rows are visited (each leaves the index when moved).
_SQL_LAPSED = (
    "SELECT id::text, name, status, not_after FROM Certificate"
    " WHERE status IN ('active','expiring_soon') AND not_after <= %s ORDER BY not_after, id LIMIT %s"
)
# Counts per KMS and master key, from a SECURITY DEFINER function (migration 0008): the
# plan role may call it without being allowed to read any key envelope.
_SQL_KEY_REF_USAGE = (
    'SELECT kms, key_id, keys FROM certreconcile_key_ref_usage() ORDER BY kms COLLATE "C", key_id COLLATE "C"'
)


def _fast_constructor(cls: type[_T]) -> Callable[..., _T]:
    """A constructor taking every field positionally, skipping the frozen ``__init__``.

    A frozen slotted dataclass sets each field through ``object.__setattr__``; building
    100k of them that way costs more than the query. Writing the slots directly through
    their descriptors gives the same object (the contract tests compare with ``==``)
    at less than half the cost. Only for classes without ``__post_init__``.
    """
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__; use its constructor")
    setters = tuple(getattr(cls, field.name).__set__ for field in dataclasses.fields(cls))  # type: ignore[arg-type]
    new = object.__new__

    def construct(*values: object) -> _T:
        instance = new(cls)
        for setter, value in zip(setters, values, strict=True):
            setter(instance, value)
        return instance

    return construct


_new_certificate = _fast_constructor(ActualCertificate)
_new_distribution = _fast_constructor(DistributionState)


def _domains(primary: str, sans: str) -> tuple[str, ...]:
    if sans == "[]":
        return (primary,)
    if "\\" not in sans:
        # Fast path: jsonb prints string arrays as ["a", "b"] and escapes any quote
        # inside an element as \", so without a backslash the split is exact.
        return (primary, *sans[2:-2].split('", "'))
    return (primary, *_JSON_LOADS(sans))


def _row_to_certificate(
    row: Sequence[Any],
    distributions: Mapping[str, DistributionState],
    open_rotation: OpenRotation | None,
) -> ActualCertificate:
    # Field order of ActualCertificate: id, name, domains, issuer, key_type, serial_number,
    # not_before, not_after, status, fingerprint, on_delete, has_key, distributions,
    # open_rotation, issuer_fingerprint, renewal_window.
    return _new_certificate(
        row[0],
        row[1],
        _domains(row[2], row[3]),
        row[4],
        _KEY_TYPE[row[5]],
        row[6],
        row[7],
        row[8],
        _STATUS[row[9]],
        row[10],
        _ON_DELETE[row[11]],
        row[12],
        distributions,
        open_rotation,
        row[13],
        None if row[14] is None else RenewalWindow(row[14], row[15]),
    )


def _row_to_distribution(row: Sequence[Any]) -> DistributionState:
    # target, fingerprint, pushed_at, verified_at, last_error, target_fingerprint, verified_fingerprint
    return _new_distribution(row[1], row[2], row[3], row[4], row[5], row[6], row[7])


def _row_to_rotation(row: Sequence[Any]) -> OpenRotation:
    return OpenRotation(rotation_id=row[1], old_cert_id=row[2], new_cert_id=row[3], triggered_at=row[4])


def _build_state(
    meta_row: Sequence[Any],
    cert_rows: Sequence[Sequence[Any]],
    dist_rows: Sequence[Sequence[Any]],
    rotation_rows: Sequence[Sequence[Any]],
    backoff_rows: Sequence[Sequence[Any]],
    issuance_rows: Sequence[Sequence[Any]] = (),
    order_rows: Sequence[Sequence[Any]] = (),
) -> ActualState:
    by_name: dict[str, dict[str, DistributionState]] = {}
    for row in dist_rows:
        by_name.setdefault(row[0], {})[row[1]] = _row_to_distribution(row)
    rotations = {row[0]: _row_to_rotation(row) for row in rotation_rows}
    empty: Mapping[str, DistributionState] = {}
    certificates = {
        row[1]: _row_to_certificate(row, by_name.get(row[1], empty), rotations.get(row[1])) for row in cert_rows
    }
    return ActualState(
        meta=StateMeta(lineage=meta_row[0], serial=meta_row[1]),
        certificates=certificates,
        backoffs={row[0]: IssuanceBackoff(row[1], row[2], row[3], row[4]) for row in backoff_rows},
        issuance_history=IssuanceHistory(
            issuances=tuple(
                PastIssuance(row[0], frozenset(_domains(row[1], row[2])), row[3], row[4], row[5])
                for row in issuance_rows
            ),
            orders=tuple(PastOrder(row[0], row[1], row[2]) for row in order_rows),
        ),
    )


_SQL_CHAIN = "SELECT seq, id, cert_id, name, action, actor, timestamp, detail::text, prev_hash, row_hash FROM CertAudit"


def _row_to_chain(row: Sequence[Any]) -> AuditChainRow:
    return AuditChainRow(
        seq=row[0],
        id=row[1],
        cert_id=None if row[2] is None else str(row[2]),
        name=row[3],
        action=row[4],
        actor=row[5],
        at=row[6],
        detail=row[7],
        prev_hash=row[8],
        row_hash=row[9],
    )


class PostgresSession:
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

    # --- plumbing ------------------------------------------------------------------
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

    def _in_transaction(self) -> bool:
        return self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

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

    # --- reading -------------------------------------------------------------------
    def load_actual(self) -> ActualState:
        def work(conn: psycopg.Connection[Any]) -> ActualState:
            with self._snapshot():
                meta_row = conn.execute("SELECT lineage::text, serial FROM StateMeta").fetchone()
                with conn.cursor(binary=True) as cursor:
                    cert_rows = cursor.execute(_SQL_CURRENT_ALL).fetchall()
                    dist_rows = cursor.execute(_SQL_DISTRIBUTIONS_ALL).fetchall()
                    rotation_rows = cursor.execute(_SQL_OPEN_ROTATIONS_ALL).fetchall()
                    backoff_rows = cursor.execute(_SQL_BACKOFFS_ALL).fetchall()
                    issuance_rows = cursor.execute(_SQL_RECENT_ISSUANCES, {"window": HISTORY_WINDOW}).fetchall()
                    order_rows = cursor.execute(_SQL_RECENT_ORDERS, (HISTORY_ORDERS_WINDOW,)).fetchall()
            if meta_row is None:
                raise _missing_meta()
            # Hundreds of thousands of new objects would trigger many useless GC passes.
            collecting = gc.isenabled()
            gc.disable()
            try:
                return _build_state(
                    meta_row, cert_rows, dist_rows, rotation_rows, backoff_rows, issuance_rows, order_rows
                )
            finally:
                if collecting:
                    gc.enable()

        return self._run("loading the actual state", work)

    def meta(self) -> StateMeta:
        def work(conn: psycopg.Connection[Any]) -> StateMeta:
            row = conn.execute("SELECT lineage::text, serial FROM StateMeta").fetchone()
            if row is None:
                raise _missing_meta()
            return StateMeta(lineage=row[0], serial=row[1])

        return self._run("reading the state serial", work)

    def current_certificate(self, name: str) -> ActualCertificate | None:
        def work(conn: psycopg.Connection[Any]) -> ActualCertificate | None:
            with self._snapshot():
                row = conn.execute(_SQL_CURRENT_ONE, (name,)).fetchone()
                if row is None:
                    return None
                dist_rows = conn.execute(_SQL_DISTRIBUTIONS_ONE, (name,)).fetchall()
                rotation_row = conn.execute(_SQL_OPEN_ROTATION_ONE, (name,)).fetchone()
            distributions = {dist[1]: _row_to_distribution(dist) for dist in dist_rows}
            rotation = _row_to_rotation(rotation_row) if rotation_row is not None else None
            return _row_to_certificate(row, distributions, rotation)

        return self._run(f"reading certificate {name}", work)

    def certificate_pems(self, cert_id: str) -> tuple[str, str]:
        def work(conn: psycopg.Connection[Any]) -> tuple[str, str]:
            row = conn.execute("SELECT cert_pem, chain_pem FROM Certificate WHERE id = %s", (cert_id,)).fetchone()
            if row is None:
                raise _not_found("certificate", cert_id)
            return (row[0], row[1])

        return self._run(f"reading certificate {cert_id}", work)

    def key_ref(self, cert_id: str) -> KeyRef:
        def work(conn: psycopg.Connection[Any]) -> KeyRef:
            row = conn.execute("SELECT key_ref FROM Certificate WHERE id = %s", (cert_id,)).fetchone()
            if row is None:
                raise _not_found("certificate", cert_id)
            return decode_key_ref(row[0])

        return self._run(f"reading the key reference of certificate {cert_id}", work)

    def certificate_status(self, cert_id: str) -> CertStatus:
        def work(conn: psycopg.Connection[Any]) -> CertStatus:
            row = conn.execute("SELECT status FROM Certificate WHERE id = %s", (cert_id,)).fetchone()
            if row is None:
                raise _not_found("certificate", cert_id)
            return _STATUS[row[0]]

        return self._run(f"reading the status of certificate {cert_id}", work)

    def rotation_replacing(self, new_cert_id: str) -> OpenRotation | None:
        def work(conn: psycopg.Connection[Any]) -> OpenRotation | None:
            row = conn.execute(
                "SELECT id, cert_id::text, new_cert_id::text, triggered_at FROM CertRotation"
                " WHERE new_cert_id = %s AND completed_at IS NULL ORDER BY id DESC LIMIT 1",
                (new_cert_id,),
            ).fetchone()
            if row is None:
                return None
            return OpenRotation(rotation_id=row[0], old_cert_id=row[1], new_cert_id=row[2], triggered_at=row[3])

        return self._run(f"reading the rotation replaced by certificate {new_cert_id}", work)

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
        actor_prefix = None if actor is None else _like_prefix(actor)

        def work(conn: psycopg.Connection[Any]) -> list[AuditEvent]:
            rows = conn.execute(
                "SELECT id, cert_id::text, name, action, actor, timestamp, detail FROM CertAudit"
                " WHERE (%(name)s::text IS NULL OR name = %(name)s)"
                " AND (%(action)s::text IS NULL OR action = %(action)s)"
                " AND (%(actor)s::text IS NULL OR actor LIKE %(actor)s)"
                " AND (%(since)s::timestamptz IS NULL OR timestamp >= %(since)s)"
                " AND (%(until)s::timestamptz IS NULL OR timestamp < %(until)s)"
                " ORDER BY id DESC LIMIT %(limit)s",
                {"name": name, "action": action, "limit": limit, "actor": actor_prefix, "since": since,
                 "until": until},
            ).fetchall()
            rows.reverse()
            return [
                AuditEvent(
                    id=row[0],
                    cert_id=row[1],
                    name=row[2],
                    action=row[3],
                    actor=row[4],
                    at=row[5],
                    detail={str(key): str(value) for key, value in row[6].items()},
                )
                for row in rows
            ]

        return self._run("reading the audit trail", work)

    # The audit chain, read by certreconcile.audit.verify (the AuditChainReader protocol).
    def audit_chain_head(self) -> AuditChainHead:
        """The head the insert trigger last moved (CertAuditHead)."""

        def work(conn: psycopg.Connection[Any]) -> AuditChainHead:
            row = conn.execute("SELECT seq, row_hash FROM CertAuditHead").fetchone()
            if row is None:
                raise StateError(
                    "the audit chain head (CertAuditHead) is missing",
                    code="audit-tampered",
                    hint="the audit trail was tampered with; `certreconcile audit verify` shows where",
                )
            return AuditChainHead(seq=int(row[0]), row_hash=str(row[1]))

        return self._run("reading the audit chain head", work)

    def audit_chain_page(self, after_seq: int, limit: int) -> Sequence[AuditChainRow]:
        """The rows after ``after_seq`` in chain order, at most ``limit``."""

        def work(conn: psycopg.Connection[Any]) -> list[AuditChainRow]:
            rows = conn.execute(_SQL_CHAIN + " WHERE seq > %s ORDER BY seq LIMIT %s", (after_seq, limit))
            return [_row_to_chain(row) for row in rows]

        return self._run("reading the audit chain", work)

    def audit_chain_row_with_hash(self, row_hash: str) -> AuditChainRow | None:
        """The first row (by seq) whose stored hash is ``row_hash`` (a full scan: for diagnosis only)."""

        def work(conn: psycopg.Connection[Any]) -> AuditChainRow | None:
            row = conn.execute(_SQL_CHAIN + " WHERE row_hash = %s ORDER BY seq LIMIT 1", (row_hash,)).fetchone()
            return None if row is None else _row_to_chain(row)

        return self._run("looking up an audit chain hash", work)

    def journal_entries(self, idempotency_key: str) -> Sequence[JournalEntry]:
        def work(conn: psycopg.Connection[Any]) -> list[JournalEntry]:
            rows = conn.execute(
                "SELECT run_id, idempotency_key, name, step, state, detail, at FROM ApplyStep"
                " WHERE idempotency_key = %s ORDER BY id",
                (idempotency_key,),
            ).fetchall()
            return [
                JournalEntry(
                    run_id=row[0],
                    idempotency_key=row[1],
                    name=row[2],
                    step=row[3],
                    state=row[4],
                    detail={str(key): str(value) for key, value in row[5].items()},
                    at=row[6],
                )
                for row in rows
            ]

        return self._run(f"reading the journal of {idempotency_key}", work)

    def list_key_refs(self, table: KeyRefTable, after: str | None, limit: int) -> Sequence[StoredKeyRef]:
        select, after_row, order = _SQL_KEY_REFS[table]

        def work(conn: psycopg.Connection[Any]) -> list[StoredKeyRef]:
            if after is None:
                rows = conn.execute(select + order, (limit,))
            else:
                rows = conn.execute(select + after_row + order, (after, limit))
            return [
                StoredKeyRef(table=table, row_id=row[0], key_ref=decode_key_ref(row[1]), name=row[2], cert_id=row[3])
                for row in rows.fetchall()
            ]

        return self._run(f"listing the key references of {table.value}", work)

    def key_ref_usage(self) -> Sequence[KeyRefUsage]:
        def work(conn: psycopg.Connection[Any]) -> list[KeyRefUsage]:
            rows = conn.execute(_SQL_KEY_REF_USAGE).fetchall()
            return [KeyRefUsage(kms=str(row[0]), key_id=str(row[1]), count=int(row[2])) for row in rows]

        return self._run("reading which KMS keys wrap the stored keys", work)

    def lapsed_certificates(self, now: datetime, limit: int) -> Sequence[LapsedCertificate]:
        def work(conn: psycopg.Connection[Any]) -> list[LapsedCertificate]:
            rows = conn.execute(_SQL_LAPSED, (now, limit)).fetchall()
            return [LapsedCertificate(row[0], row[1], _STATUS[row[2]], row[3]) for row in rows]

        return self._run("reading the certificates past their not_after", work)

    # --- locking -------------------------------------------------------------------
    @contextmanager
    def _lock_name(self, name: str) -> Iterator[None]:
        key = name_lock_key(name)
        self._run(
            f"locking {name}",
            lambda conn: conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,)),
        )
        try:
            with self._pin():
                yield
        finally:
            if not self._conn.closed and not self._conn.broken:
                if self._conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                    self._conn.rollback()
                self._run(
                    f"unlocking {name}",
                    lambda conn: conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,)),
                )

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

    # --- writing -------------------------------------------------------------------
    def insert_certificate(self, row: CertificateRow) -> None:
        if not row.domains:
            raise StateError(
                f"certificate {row.id} has no domain", code=CODE_INVALID, hint="declare at least one domain"
            )
        key_ref_text = encode_key_ref(row.key_ref)
        params = (
            row.id,
            row.domains[0],
            json.dumps(list(row.domains[1:])),
            row.serial_number,
            row.not_before,
            row.not_after,
            row.status.value,
            row.fingerprint,
            key_ref_text,
            row.name,
            row.issuer,
            row.key_type.value,
            row.cert_pem,
            row.chain_pem,
            row.on_delete.value,
            row.issuer_fingerprint,
            row.ari_replaces,
            row.created_at,
        )
        self._run(
            f"storing certificate {row.id} of {row.name}",
            lambda conn: conn.execute(
                "INSERT INTO Certificate (id, domain, san_domains, serial_number, not_before, not_after,"
                " status, fingerprint, key_ref, name, issuer, key_type, cert_pem, chain_pem, on_delete,"
                " issuer_fingerprint, ari_replaces, created_at)"
                " VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " coalesce(%s, clock_timestamp()))",
                params,
            ),
        )

    def set_status(self, cert_id: str, new: CertStatus) -> CertStatus:
        def work(conn: psycopg.Connection[Any]) -> CertStatus:
            # Compare-and-set: re-read and retry if another session moved the row meanwhile.
            for _attempt in range(5):
                row = conn.execute("SELECT status FROM Certificate WHERE id = %s", (cert_id,)).fetchone()
                if row is None:
                    raise _not_found("certificate", cert_id)
                old = _STATUS[row[0]]
                check_transition(old, new)
                if old == new:
                    return old
                updated = conn.execute(
                    "UPDATE Certificate SET status = %s WHERE id = %s AND status = %s",
                    (new.value, cert_id, old.value),
                )
                if updated.rowcount == 1:
                    return old
            raise StateError(
                f"certificate {cert_id} kept changing status under us",
                code=CODE_CONFLICT,
                hint="another apply is working on this certificate; retry later",
            )

        return self._run(f"changing the status of certificate {cert_id} to {new.value}", work)

    def compare_and_set_status(self, cert_id: str, expected: CertStatus, new: CertStatus) -> bool:
        check_transition(expected, new)
        updated = self._run(
            f"changing the status of certificate {cert_id} to {new.value}",
            lambda conn: conn.execute(
                "UPDATE Certificate SET status = %s WHERE id = %s AND status = %s", (new.value, cert_id, expected.value)
            ),
        )
        return updated.rowcount == 1

    def retire(self, cert_id: str, at: datetime) -> None:
        """Retire every row of the certificate's name, so no older row becomes current."""

        def work(conn: psycopg.Connection[Any]) -> None:
            row = conn.execute("SELECT name FROM Certificate WHERE id = %s", (cert_id,)).fetchone()
            if row is None:
                raise _not_found("certificate", cert_id)
            conn.execute("UPDATE Certificate SET retired_at = %s WHERE name = %s AND retired_at IS NULL", (at, row[0]))

        self._run(f"retiring certificate {cert_id}", work)

    def open_rotation(self, old_cert_id: str, at: datetime) -> int:
        """Open a rotation of ``old_cert_id``; an already open one is returned instead."""

        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(
                "WITH inserted AS ("
                " INSERT INTO CertRotation (cert_id, triggered_at) VALUES (%(cert)s, %(at)s)"
                " ON CONFLICT (cert_id) WHERE completed_at IS NULL DO NOTHING RETURNING id)"
                " SELECT id FROM inserted"
                " UNION ALL SELECT id FROM CertRotation WHERE cert_id = %(cert)s AND completed_at IS NULL"
                " LIMIT 1",
                {"cert": old_cert_id, "at": at},
            ).fetchone()
            if row is None:  # lost a race with a concurrent open: read it now
                row = conn.execute(
                    "SELECT id FROM CertRotation WHERE cert_id = %s AND completed_at IS NULL", (old_cert_id,)
                ).fetchone()
            if row is None:
                raise _not_found("open rotation of certificate", old_cert_id)
            return int(row[0])

        return self._run(f"opening a rotation of certificate {old_cert_id}", work)

    def attach_rotation(self, rotation_id: int, new_cert_id: str) -> None:
        def work(conn: psycopg.Connection[Any]) -> None:
            updated = conn.execute(
                "UPDATE CertRotation SET new_cert_id = %s WHERE id = %s AND completed_at IS NULL",
                (new_cert_id, rotation_id),
            )
            if updated.rowcount != 1:
                raise _not_found("open rotation", rotation_id)

        self._run(f"attaching certificate {new_cert_id} to rotation {rotation_id}", work)

    def complete_rotation(self, rotation_id: int, at: datetime) -> None:
        """Close the rotation (idempotent). The status changes are the caller's to make."""

        def work(conn: psycopg.Connection[Any]) -> None:
            row = conn.execute(
                "SELECT new_cert_id IS NOT NULL, completed_at IS NOT NULL FROM CertRotation WHERE id = %s",
                (rotation_id,),
            ).fetchone()
            if row is None:
                raise _not_found("rotation", rotation_id)
            has_new, completed = row
            if completed:
                return
            if not has_new:
                raise StateError(
                    f"rotation {rotation_id} has no replacement certificate yet",
                    code=CODE_INVALID,
                    hint="attach the new certificate before completing the rotation",
                )
            conn.execute(
                "UPDATE CertRotation SET completed_at = %s WHERE id = %s AND completed_at IS NULL",
                (at, rotation_id),
            )

        self._run(f"completing rotation {rotation_id}", work)

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
        def work(conn: psycopg.Connection[Any]) -> None:
            inserted = conn.execute(
                "INSERT INTO Distribution (cert_name, target, cert_id, fingerprint, pushed_at, verified_at,"
                " last_error, target_fingerprint, verified_fingerprint)"
                " SELECT name, %s, id, %s, %s, %s, %s, %s, CASE WHEN %s::timestamptz IS NULL THEN NULL ELSE %s END"
                " FROM Certificate WHERE id = %s"
                " ON CONFLICT (cert_name, target) DO UPDATE SET cert_id = EXCLUDED.cert_id,"
                " fingerprint = EXCLUDED.fingerprint, pushed_at = EXCLUDED.pushed_at,"
                " verified_at = EXCLUDED.verified_at, last_error = EXCLUDED.last_error,"
                " target_fingerprint = EXCLUDED.target_fingerprint,"
                " verified_fingerprint = coalesce(EXCLUDED.verified_fingerprint, Distribution.verified_fingerprint)",
                (target, fingerprint, pushed_at, verified_at, last_error, target_fingerprint, verified_at, fingerprint,
                 cert_id),
            )
            if inserted.rowcount != 1:
                raise _not_found("certificate", cert_id)

        self._run(f"recording the distribution of certificate {cert_id} to {target}", work)

    def remove_distribution(self, name: str, target: str) -> None:
        self._run(
            f"removing the distribution of {name} to {target}",
            lambda conn: conn.execute("DELETE FROM Distribution WHERE cert_name = %s AND target = %s", (name, target)),
        )

    def append_audit(self, event: AuditEvent) -> None:
        if event.action not in AuditAction.ALL:
            raise StateError(
                f"unknown audit action {event.action!r}",
                code=CODE_INVALID,
                hint=f"use one of {', '.join(AuditAction.ALL)}",
            )
        self._run(
            f"recording the audit event {event.action} of {event.name}",
            lambda conn: conn.execute(
                "INSERT INTO CertAudit (cert_id, name, action, actor, timestamp, detail)"
                " VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
                (
                    event.cert_id,
                    event.name,
                    event.action,
                    event.actor,
                    event.at,
                    json.dumps(dict(event.detail)),
                ),
            ),
        )

    def bump_serial(self) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("UPDATE StateMeta SET serial = serial + 1 RETURNING serial").fetchone()
            if row is None:
                raise _missing_meta()
            return int(row[0])

        return self._run("advancing the state serial", work)

    def start_run(self, git_commit: str | None, plan_digest: str, at: datetime) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(
                "INSERT INTO ApplyRun (git_commit, plan_digest, started_at) VALUES (%s, %s, %s) RETURNING id",
                (git_commit, plan_digest, at),
            ).fetchone()
            if row is None:  # impossible: RETURNING of a one-row INSERT
                raise _not_found("new apply run", plan_digest)
            return int(row[0])

        return self._run("recording the start of an apply", work)

    def finish_run(self, run_id: int, outcome: str, at: datetime) -> None:
        def work(conn: psycopg.Connection[Any]) -> None:
            updated = conn.execute(
                "UPDATE ApplyRun SET outcome = %s, finished_at = %s WHERE id = %s", (outcome, at, run_id)
            )
            if updated.rowcount != 1:
                raise _not_found("apply run", run_id)

        self._run(f"recording the end of apply run {run_id}", work)

    def journal(self, entry: JournalEntry) -> None:
        self._run(
            f"journalling {entry.step} of {entry.name}",
            lambda conn: conn.execute(
                "INSERT INTO ApplyStep (run_id, idempotency_key, name, step, state, detail, at)"
                " VALUES (%s, %s, %s, %s, %s, %s::jsonb, coalesce(%s, clock_timestamp()))",
                (
                    entry.run_id,
                    entry.idempotency_key,
                    entry.name,
                    entry.step,
                    entry.state,
                    json.dumps(dict(entry.detail)),
                    entry.at,
                ),
            ),
        )

    def get_local_ca(self, issuer_name: str) -> LocalCaRecord | None:
        def work(conn: psycopg.Connection[Any]) -> LocalCaRecord | None:
            row = conn.execute(
                "SELECT issuer_name, cert_pem, key_ref FROM LocalCa WHERE issuer_name = %s", (issuer_name,)
            ).fetchone()
            if row is None:
                return None
            return LocalCaRecord(name=row[0], cert_pem=row[1], key_ref=decode_key_ref(row[2]))

        return self._run(f"reading the local CA of {issuer_name}", work)

    def put_local_ca(self, record: LocalCaRecord) -> LocalCaRecord:
        key_ref_text = encode_key_ref(record.key_ref)

        def work(conn: psycopg.Connection[Any]) -> LocalCaRecord:
            conn.execute(
                "INSERT INTO LocalCa (issuer_name, cert_pem, key_ref) VALUES (%s, %s, %s)"
                " ON CONFLICT (issuer_name) DO NOTHING",
                (record.name, record.cert_pem, key_ref_text),
            )
            stored = self.get_local_ca(record.name)
            if stored is None:
                raise _not_found("local CA", record.name)
            return stored

        return self._run(f"storing the local CA of {record.name}", work)

    def replace_key_ref(self, table: KeyRefTable, row_id: str, old: KeyRef, new: KeyRef) -> bool:
        new_text = encode_key_ref(new)

        def work(conn: psycopg.Connection[Any]) -> bool:
            updated = conn.execute(_SQL_REPLACE_KEY_REF[table], (new_text, row_id, old.envelope_json))
            return updated.rowcount == 1

        return self._run(f"replacing the key reference of {table.value} {row_id}", work)

    # --- ACME ----------------------------------------------------------------------
    def get_acme_account(self, directory_url: str) -> AcmeAccountRecord | None:
        def work(conn: psycopg.Connection[Any]) -> AcmeAccountRecord | None:
            row = conn.execute(
                "SELECT directory_url, key_ref, account_url FROM AcmeAccount WHERE directory_url = %s",
                (directory_url,),
            ).fetchone()
            if row is None:
                return None
            return AcmeAccountRecord(directory_url=row[0], key_ref=decode_key_ref(row[1]), account_url=row[2])

        return self._run(f"reading the ACME account of {directory_url}", work)

    def put_acme_account(self, record: AcmeAccountRecord) -> AcmeAccountRecord:
        key_ref_text = encode_key_ref(record.key_ref)

        def work(conn: psycopg.Connection[Any]) -> AcmeAccountRecord:
            conn.execute(
                "INSERT INTO AcmeAccount (directory_url, key_ref, account_url) VALUES (%s, %s, %s)"
                " ON CONFLICT (directory_url) DO NOTHING",
                (record.directory_url, key_ref_text, record.account_url),
            )
            stored = self.get_acme_account(record.directory_url)
            if stored is None:
                raise _not_found("ACME account of", record.directory_url)
            return stored

        return self._run(f"storing the ACME account of {record.directory_url}", work)

    def acme_order(self, idempotency_key: str) -> AcmeOrderRecord | None:
        def work(conn: psycopg.Connection[Any]) -> AcmeOrderRecord | None:
            row = conn.execute(
                "SELECT idempotency_key, name, order_url, state, directory_url, cert_id::text"
                " FROM AcmeOrder WHERE idempotency_key = %s AND order_url IS NOT NULL",
                (idempotency_key,),
            ).fetchone()
            if row is None:
                return None
            return AcmeOrderRecord(
                idempotency_key=row[0], name=row[1], order_url=row[2], state=row[3], directory_url=row[4] or "",
                cert_id=row[5],
            )

        return self._run(f"reading the ACME order of {idempotency_key}", work)

    def save_acme_order(self, record: AcmeOrderRecord, at: datetime) -> None:
        self._run(
            f"recording the ACME order of {record.name}",
            lambda conn: conn.execute(
                "INSERT INTO AcmeOrder (idempotency_key, name, order_url, state, directory_url, cert_id,"
                " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s::uuid, %s, %s)"
                " ON CONFLICT (idempotency_key) DO UPDATE SET order_url = EXCLUDED.order_url,"
                " state = EXCLUDED.state, directory_url = EXCLUDED.directory_url, cert_id = EXCLUDED.cert_id,"
                " updated_at = EXCLUDED.updated_at",
                (record.idempotency_key, record.name, record.order_url, record.state, record.directory_url,
                 record.cert_id, at, at),
            ),
        )  # fmt: skip

    def renewal_info(self, cert_id: str) -> RenewalInfoRecord | None:
        def work(conn: psycopg.Connection[Any]) -> RenewalInfoRecord | None:
            row = conn.execute(
                "SELECT cert_id::text, window_start, window_end, retry_after, fetched_at, explanation_url"
                " FROM AcmeRenewalInfo WHERE cert_id = %s",
                (cert_id,),
            ).fetchone()
            if row is None:
                return None
            return RenewalInfoRecord(*row)

        return self._run(f"reading the renewal info of {cert_id}", work)

    def save_renewal_info(self, record: RenewalInfoRecord) -> None:
        self._run(
            f"recording the renewal info of {record.cert_id}",
            lambda conn: conn.execute(
                "INSERT INTO AcmeRenewalInfo (cert_id, window_start, window_end, retry_after, fetched_at,"
                " explanation_url) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (cert_id) DO UPDATE SET window_start = EXCLUDED.window_start,"
                " window_end = EXCLUDED.window_end, retry_after = EXCLUDED.retry_after,"
                " fetched_at = EXCLUDED.fetched_at, explanation_url = EXCLUDED.explanation_url",
                (record.cert_id, record.window_start, record.window_end, record.retry_after, record.fetched_at,
                 record.explanation_url),
            ),
        )  # fmt: skip

    def record_failure(self, name: str, at: datetime, declaration_digest: str | None) -> datetime:
        params = {"name": name, "at": at, "initial": BACKOFF_INITIAL, "cap": BACKOFF_CAP, "digest": declaration_digest}

        def work(conn: psycopg.Connection[Any]) -> datetime:
            row = conn.execute(_SQL_RECORD_FAILURE, params).fetchone()
            assert row is not None  # INSERT ... RETURNING always returns the row
            until: datetime = row[0]
            return until

        return self._run(f"recording a failed issuance of {name}", work)

    def clear_failures(self, name: str) -> None:
        self._run(
            f"clearing the failures of {name}",
            lambda conn: conn.execute("DELETE FROM IssuanceBackoff WHERE name = %s", (name,)),
        )

    # --- beyond the protocol ---------------------------------------------------------
    def failure_count(self, name: str) -> int:
        """How many failures in a row ``name`` has had (0 when none): drives the backoff length."""

        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("SELECT failures FROM IssuanceBackoff WHERE name = %s", (name,)).fetchone()
            return 0 if row is None else int(row[0])

        return self._run(f"reading the failures of {name}", work)


def _missing_meta() -> StateError:
    return StateError(
        "the StateMeta row is missing",
        code=CODE_SCHEMA_MISSING,
        hint="run `certreconcile db upgrade`; the database was not created by certreconcile",
    )


class PostgresStore:
    """Hands out :class:`PostgresSession` objects, one connection each."""

    def __init__(self, url: str, *, connect_timeout: int = 10, retry: RetryPolicy | None = None) -> None:
        self._url = url
        self._secret = _password_of(url)
        self._connect_timeout = connect_timeout
        self._retry = retry or RetryPolicy(attempts=6, total=20.0, first_delay=0.2, max_delay=5.0)

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

    @contextmanager
    def _session(self) -> Iterator[PostgresSession]:
        session = PostgresSession(self._connect(), self._secret, self._reconnect)
        try:
            yield session
        finally:
            session._conn.close()  # also releases any advisory lock still held

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
