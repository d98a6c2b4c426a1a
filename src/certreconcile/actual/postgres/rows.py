"""The certificate queries and the fast row-to-model conversions of ``load_actual``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from certreconcile.actual.model import (
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
from certreconcile.actual.postgres.connection import (
    _JSON_LOADS,
    _KEY_TYPE,
    _ON_DELETE,
    _ORIGIN,
    _STATUS,
    _T,
)
from certreconcile.domain.records import slot_constructor

# The columns every current-row query reads, in the order _row_to_certificate expects.
# Never key_ref (has_key is generated from it): `plan` runs under a role that may not read it.
# AcmeRenewalInfo has at most one row per certificate (its primary key): the join adds none.
# The current rows are chosen first, in idx_cert_name_current's order (an index-only scan, no sort), and joined
# after: joined first, PostgreSQL scanned the table (its history rows included) and sorted the join (10,000
# certificates, a month into bench/simulate.py's year: 29 ms on the server, 15 ms this way).
_SQL_CURRENT_ALL = (
    "SELECT c.id::text, c.name, c.domain, c.san_domains::text, c.issuer, c.key_type,"
    " c.serial_number, c.not_before, c.not_after, c.status, c.fingerprint, c.on_delete, c.has_key,"
    " c.issuer_fingerprint, ari.window_start, ari.window_end, c.origin, ari.retry_after"
    " FROM (SELECT DISTINCT ON (name) id, name, domain, san_domains, issuer, key_type, serial_number, not_before,"
    " not_after, status, fingerprint, on_delete, has_key, issuer_fingerprint, origin FROM Certificate"
    " WHERE retired_at IS NULL AND status <> 'superseded'"
    " ORDER BY name, (status IN ('issued','active','expiring_soon')) DESC,"
    " created_at DESC, not_before DESC, id DESC) c"
    " LEFT JOIN AcmeRenewalInfo ari ON ari.cert_id = c.id ORDER BY c.name"
)


_SQL_CURRENT_ONE = (
    "SELECT id::text, name, domain, san_domains::text, issuer, key_type,"
    " serial_number, not_before, not_after, status, fingerprint, on_delete, has_key,"
    " issuer_fingerprint, ari.window_start, ari.window_end, origin, ari.retry_after"
    " FROM Certificate LEFT JOIN AcmeRenewalInfo ari ON ari.cert_id = Certificate.id"
    " WHERE name = %s AND retired_at IS NULL AND status <> 'superseded'"
    " ORDER BY name, (status IN ('issued','active','expiring_soon')) DESC,"
    " created_at DESC, not_before DESC, Certificate.id DESC LIMIT 1"
)


# Rows still active or expiring_soon past not_after (apply/lifecycle.py moves them to expired):
# idx_cert_not_after's predicate, so few rows are visited (each leaves the index when moved).
_SQL_LAPSED = (
    "SELECT id::text, name, status, not_after FROM Certificate"
    " WHERE status IN ('active','expiring_soon') AND not_after <= %s ORDER BY not_after, id LIMIT %s"
)


# set_status in one statement: the row locked and read as it was, moved only from ``sources``.
_SQL_SET_STATUS = (
    "WITH old AS (SELECT status FROM Certificate WHERE id = %(id)s FOR UPDATE),"
    " moved AS (UPDATE Certificate SET status = %(new)s FROM old WHERE Certificate.id = %(id)s"
    " AND old.status = ANY(%(sources)s) AND old.status <> %(new)s RETURNING 1)"
    " SELECT old.status, (SELECT count(*) FROM moved) FROM old"
)


# compare_and_set_statuses in one statement: the rows still in their expected status locked in id order (two
# replicas moving overlapping batches never wait on each other in a cycle), then moved; the ids moved.
_SQL_COMPARE_AND_SET_MANY = (
    "WITH m AS (SELECT * FROM unnest(%b::uuid[], %b::text[], %b::text[]) AS m(id, expected, new)),"
    " locked AS (SELECT c.id, m.new FROM Certificate c JOIN m ON c.id = m.id AND c.status = m.expected"
    " ORDER BY c.id FOR UPDATE OF c)"
    " UPDATE Certificate c SET status = locked.new FROM locked, m WHERE c.id = locked.id AND m.id = c.id"
    " AND c.status = m.expected RETURNING c.id::text"
)


# complete_rotation in one statement (idempotent): closed only when it has its replacement.
_SQL_COMPLETE_ROTATION = (
    "WITH r AS (SELECT new_cert_id IS NOT NULL AS has_new, completed_at IS NOT NULL AS completed"
    " FROM CertRotation WHERE id = %(id)s FOR UPDATE),"
    " closed AS (UPDATE CertRotation SET completed_at = %(at)s FROM r WHERE CertRotation.id = %(id)s"
    " AND NOT r.completed AND r.has_new RETURNING 1)"
    " SELECT r.has_new, r.completed, (SELECT count(*) FROM closed) FROM r"
)


_SQL_DISTRIBUTIONS_ALL = (
    "SELECT cert_name, target, fingerprint, pushed_at, verified_at, last_error, target_fingerprint,"
    " verified_fingerprint"
    " FROM Distribution ORDER BY cert_name, target"
)


# record_distributions' rows (certreconcile.actual.postgres.batches.rows_source).
_DISTRIBUTION_COLUMNS = (
    ("cert_id", "uuid"), ("target", "text"), ("fingerprint", "text"), ("pushed_at", "timestamptz"),
    ("verified_at", "timestamptz"), ("last_error", "text"), ("target_fingerprint", "text"),
)  # fmt: skip


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
# index, and the order's own time): an order is placed before its certificate, and ACME
# orders expire within days, so one window more on the order's side loses nothing. The
# orders are looked up per certificate (idx_acmeorder_cert; OFFSET 0 keeps the planner
# from turning it into a hash join that reads every order ever placed: 27 ms for 83,000
# orders at day 250 of the simulated year, growing with the history).
_SQL_RECENT_ISSUANCES = (
    "SELECT o.directory_url, c.domain, c.san_domains::text, c.created_at, c.ari_replaces IS NOT NULL,"
    " EXISTS (SELECT 1 FROM Certificate p WHERE p.domain = c.domain AND p.san_domains = c.san_domains"
    " AND p.issuer = c.issuer AND p.created_at < c.created_at)"
    " FROM Certificate c JOIN LATERAL (SELECT o.directory_url FROM AcmeOrder o WHERE o.cert_id = c.id"
    " AND o.directory_url IS NOT NULL AND o.created_at >= coalesce(%(now)s::timestamptz, now()) - 2 * %(window)s"
    " OFFSET 0) o ON true"
    " WHERE c.created_at >= coalesce(%(now)s::timestamptz, now()) - %(window)s"
    " ORDER BY c.created_at, c.id"
)


_SQL_RECENT_ORDERS = (
    "SELECT o.directory_url, o.created_at, coalesce(c.ari_replaces IS NOT NULL, false)"
    " FROM AcmeOrder o LEFT JOIN Certificate c ON c.id = o.cert_id"
    " WHERE o.created_at >= coalesce(%(now)s::timestamptz, now()) - %(window)s AND o.directory_url IS NOT NULL"
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


# current_certificate in one statement: the current row, its open rotation (at most one row) and
# one row per distribution (none: one row of NULLs). Columns: the 18 of _SQL_CURRENT_ONE, then
# _SQL_DISTRIBUTIONS_ONE's 8, then _SQL_OPEN_ROTATION_ONE's 5 (the slices _CURRENT_DIST, _CURRENT_ROTATION).
_SQL_CURRENT_WHOLE = (
    "WITH cur AS (SELECT id::text, name, domain, san_domains::text, issuer, key_type,"
    " serial_number, not_before, not_after, status, fingerprint, on_delete, has_key,"
    " issuer_fingerprint, ari.window_start, ari.window_end, origin, ari.retry_after"
    " FROM Certificate LEFT JOIN AcmeRenewalInfo ari ON ari.cert_id = Certificate.id"
    " WHERE name = %s AND retired_at IS NULL AND status <> 'superseded'"
    " ORDER BY name, (status IN ('issued','active','expiring_soon')) DESC,"
    " created_at DESC, not_before DESC, Certificate.id DESC LIMIT 1)"
    " SELECT cur.*, d.cert_name, d.target, d.fingerprint, d.pushed_at, d.verified_at, d.last_error,"
    " d.target_fingerprint, d.verified_fingerprint, r.name, r.id, r.cert_id, r.new_cert_id, r.triggered_at"
    " FROM cur LEFT JOIN LATERAL (SELECT c.name, r.id, r.cert_id::text, r.new_cert_id::text, r.triggered_at"
    " FROM CertRotation r JOIN Certificate c ON c.id = r.cert_id"
    " WHERE r.completed_at IS NULL AND c.name = cur.name ORDER BY r.id DESC LIMIT 1) r ON true"
    " LEFT JOIN Distribution d ON d.cert_name = cur.name ORDER BY d.target"
)


_CURRENT_DIST = slice(18, 26)


_CURRENT_ROTATION = slice(26, 31)


def _fast_constructor(cls: type[_T]) -> Callable[..., _T]:
    """A constructor taking every field positionally, skipping the frozen ``__init__``.

    A frozen slotted dataclass sets each field through ``object.__setattr__``; building
    100k of them that way costs more than the query. Writing the slots directly through
    their descriptors gives the same object (the contract tests compare with ``==``)
    at a third of the cost (:func:`certreconcile.domain.records.slot_constructor`).
    Only for classes without ``__post_init__``.
    """
    return slot_constructor(cls)


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
    # open_rotation, issuer_fingerprint, renewal_window (with row[17], its retry_after), origin.
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
        None if row[14] is None else RenewalWindow(row[14], row[15], row[17]),
        _ORIGIN[row[16]],
    )


def _row_to_distribution(row: Sequence[Any]) -> DistributionState:
    # target, fingerprint, pushed_at, verified_at, last_error, target_fingerprint, verified_fingerprint
    return _new_distribution(row[1], row[2], row[3], row[4], row[5], row[6], row[7])


def _row_to_rotation(row: Sequence[Any]) -> OpenRotation:
    return OpenRotation(rotation_id=row[1], old_cert_id=row[2], new_cert_id=row[3], triggered_at=row[4])


def distributions_by_name(rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """Each name's distributions by target (rows of ``_SQL_DISTRIBUTIONS_ALL``). A target last proven to serve
    what was pushed (the usual case) keeps one string for both fingerprints: one comparison, no hashing."""
    by_name: dict[str, dict[str, DistributionState]] = {}
    new = _new_distribution
    for name, target, fingerprint, pushed, verified, error, declared, served in rows:
        by_name.setdefault(name, {})[target] = new(
            target, fingerprint, pushed, verified, error, declared, fingerprint if served == fingerprint else served
        )
    return by_name


def certificates_from_rows(
    rows: Iterable[Sequence[Any]],
    by_name: Mapping[str, Mapping[str, DistributionState]],
    rotations: Mapping[str, OpenRotation],
) -> dict[str, ActualCertificate]:
    """The current certificates by name (rows of ``_SQL_CURRENT_ALL``), as :func:`_row_to_certificate` builds them."""
    empty: Mapping[str, DistributionState] = {}
    return {row[1]: _row_to_certificate(row, by_name.get(row[1], empty), rotations.get(row[1])) for row in rows}


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
        issuance_history=history_from_rows(issuance_rows, order_rows),
    )


def history_from_rows(
    issuance_rows: Sequence[Sequence[Any]], order_rows: Sequence[Sequence[Any]]
) -> IssuanceHistory:
    """The rows of ``_SQL_RECENT_ISSUANCES`` and ``_SQL_RECENT_ORDERS``."""
    return IssuanceHistory(
        issuances=tuple(
            PastIssuance(row[0], frozenset(_domains(row[1], row[2])), row[3], row[4], row[5]) for row in issuance_rows
        ),
        orders=tuple(PastOrder(row[0], row[1], row[2]) for row in order_rows),
    )
