"""Certificates, rotations, distributions, backoffs and the state serial (``CertificateStore``)."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from functools import partial
from itertools import chain
from typing import Any

import psycopg

from certreconcile.actual.model import (
    BACKOFF_CAP,
    BACKOFF_INITIAL,
    HISTORY_ORDERS_WINDOW,
    HISTORY_WINDOW,
    ActualCertificate,
    ActualState,
    IssuanceHistory,
    OpenRotation,
    StateMeta,
)
from certreconcile.actual.postgres.batches import rows_source
from certreconcile.actual.postgres.connection import (
    _STATUS,
    CODE_INVALID,
    PostgresConnection,
    _missing_meta,
    _not_found,
    decode_key_ref,
    encode_key_ref,
)
from certreconcile.actual.postgres.fleet import SQL_AGENTS_ALL, agents_from_rows
from certreconcile.actual.postgres.rows import (
    _CURRENT_DIST,
    _CURRENT_ROTATION,
    _DISTRIBUTION_COLUMNS,
    _SQL_BACKOFFS_ALL,
    _SQL_COMPARE_AND_SET_MANY,
    _SQL_COMPLETE_ROTATION,
    _SQL_CURRENT_ALL,
    _SQL_CURRENT_WHOLE,
    _SQL_DISTRIBUTIONS_ALL,
    _SQL_LAPSED,
    _SQL_OPEN_ROTATIONS_ALL,
    _SQL_RECENT_ISSUANCES,
    _SQL_RECENT_ORDERS,
    _SQL_RECORD_FAILURE,
    _SQL_SET_STATUS,
    _build_state,
    _row_to_certificate,
    _row_to_distribution,
    _row_to_rotation,
    certificates_from_rows,
    distributions_by_name,
    history_from_rows,
)
from certreconcile.actual.store import (
    CertificateRow,
    DistributionRecord,
    FollowedCommit,
    LapsedCertificate,
)
from certreconcile.domain.keys import KeyRef
from certreconcile.domain.status import CertStatus, allowed_transitions, check_moves, check_transition
from certreconcile.errors import StateError


def _history_rows(cursor: psycopg.Cursor[Any], now: datetime | None) -> tuple[list[Any], list[Any]]:
    """The recent issuances and orders, back from ``now`` (None: the database's clock)."""
    issuances = cursor.execute(_SQL_RECENT_ISSUANCES, {"window": HISTORY_WINDOW, "now": now}).fetchall()
    orders = cursor.execute(_SQL_RECENT_ORDERS, {"window": HISTORY_ORDERS_WINDOW, "now": now}).fetchall()
    return issuances, orders


_CHUNK = 10_000  # rows turned into tuples at a time: the tuples of 100,000 rows at once would add 40 MiB to the peak


def _rows(cursor: psycopg.Cursor[Any]) -> Iterator[Any]:
    """The rows of the cursor's last query, converted a chunk at a time (the result is already here)."""
    return chain.from_iterable(iter(partial(cursor.fetchmany, _CHUNK), []))


def _load_state(conn: psycopg.Connection[Any], now: datetime | None) -> ActualState:
    """Every query of ``load_actual`` (one round trip each, in one snapshot); the two big ones built as they
    are read, so their rows' tuples never all exist at once (at 100,000 certificates: a lower peak)."""
    meta_row = conn.execute("SELECT lineage::text, serial FROM StateMeta").fetchone()
    if meta_row is None:
        raise _missing_meta()
    with conn.cursor(binary=True) as cursor:
        rotations = {row[0]: _row_to_rotation(row) for row in cursor.execute(_SQL_OPEN_ROTATIONS_ALL).fetchall()}
        by_name = distributions_by_name(_rows(cursor.execute(_SQL_DISTRIBUTIONS_ALL)))
        certificates = certificates_from_rows(_rows(cursor.execute(_SQL_CURRENT_ALL)), by_name, rotations)
        backoff_rows = cursor.execute(_SQL_BACKOFFS_ALL).fetchall()
        issuance_rows, order_rows = _history_rows(cursor, now)
        agent_rows = cursor.execute(SQL_AGENTS_ALL).fetchall()
    state = dataclasses.replace(
        _build_state(meta_row, (), (), (), backoff_rows, issuance_rows, order_rows), certificates=certificates
    )
    return dataclasses.replace(state, agents=agents_from_rows(agent_rows)) if agent_rows else state


class PostgresCertificates(PostgresConnection):
    """Certificates, rotations, distributions, backoffs and the state serial (``CertificateStore``)."""

    def load_actual(self, now: datetime | None = None) -> ActualState:
        def work(conn: psycopg.Connection[Any]) -> ActualState:
            # Hundreds of thousands of new objects would trigger many useless GC passes.
            collecting = gc.isenabled()
            gc.disable()
            try:
                with self._snapshot():
                    return _load_state(conn, now)
            finally:
                if collecting:
                    gc.enable()

        return self._run("loading the actual state", work)

    def issuance_history(self, now: datetime) -> IssuanceHistory:
        def work(conn: psycopg.Connection[Any]) -> IssuanceHistory:
            with self._snapshot(), conn.cursor(binary=True) as cursor:
                return history_from_rows(*_history_rows(cursor, now))

        return self._run("reading the recent ACME orders", work)

    def meta(self) -> StateMeta:
        def work(conn: psycopg.Connection[Any]) -> StateMeta:
            row = conn.execute("SELECT lineage::text, serial FROM StateMeta").fetchone()
            if row is None:
                raise _missing_meta()
            return StateMeta(lineage=row[0], serial=row[1])

        return self._run("reading the state serial", work)

    def current_certificate(self, name: str) -> ActualCertificate | None:
        """One statement (one snapshot): the current row, its distributions and its open rotation."""

        def work(conn: psycopg.Connection[Any]) -> ActualCertificate | None:
            rows = conn.execute(_SQL_CURRENT_WHOLE, (name,)).fetchall()
            if not rows:
                return None
            first = rows[0]
            distributions = {
                row[19]: _row_to_distribution(row[_CURRENT_DIST]) for row in rows if row[19] is not None
            }
            rotation = _row_to_rotation(first[_CURRENT_ROTATION]) if first[27] is not None else None
            return _row_to_certificate(first, distributions, rotation)

        return self._run(f"reading certificate {name}", work)

    def certificate_pems(self, cert_id: str) -> tuple[str, str]:
        def work(conn: psycopg.Connection[Any]) -> tuple[str, str]:
            row = conn.execute("SELECT cert_pem, chain_pem FROM Certificate WHERE id = %s", (cert_id,)).fetchone()
            if row is None:
                raise _not_found("certificate", cert_id)
            return (row[0], row[1])

        return self._run(f"reading certificate {cert_id}", work)

    def leaf_pems(self, cert_ids: Sequence[str]) -> Mapping[str, str]:
        def work(conn: psycopg.Connection[Any]) -> dict[str, str]:
            rows = conn.execute(
                "SELECT id::text, cert_pem FROM Certificate WHERE id = ANY(%b::uuid[])", (list(cert_ids),)
            ).fetchall()
            return {row[0]: row[1] for row in rows}

        return self._run(f"reading {len(cert_ids)} certificates", work)

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
            row.origin.value,
            row.created_at,
        )
        self._run(
            f"storing certificate {row.id} of {row.name}",
            lambda conn: conn.execute(
                "INSERT INTO Certificate (id, domain, san_domains, serial_number, not_before, not_after,"
                " status, fingerprint, key_ref, name, issuer, key_type, cert_pem, chain_pem, on_delete,"
                " issuer_fingerprint, ari_replaces, origin, created_at)"
                " VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " coalesce(%s, clock_timestamp()))",
                params,
            ),
        )

    def set_status(self, cert_id: str, new: CertStatus) -> CertStatus:
        # One statement: the row is locked and read, and moved only from a status allowed to become
        # ``new`` (the transition rules, checked here again on the status read, raise otherwise).
        old = self.set_status_if_allowed(cert_id, new)
        check_transition(old, new)
        return old

    def set_status_if_allowed(self, cert_id: str, new: CertStatus) -> CertStatus:
        sources = [old.value for old in CertStatus if new in allowed_transitions(old)]

        def work(conn: psycopg.Connection[Any]) -> CertStatus:
            row = conn.execute(_SQL_SET_STATUS, {"id": cert_id, "new": new.value, "sources": sources}).fetchone()
            if row is None:
                raise _not_found("certificate", cert_id)
            return _STATUS[row[0]]

        return self._run(f"changing the status of certificate {cert_id} to {new.value}", work)

    def compare_and_set_status(self, cert_id: str, expected: CertStatus, new: CertStatus) -> bool:
        check_transition(expected, new)
        updated = self._run(
            f"changing the status of certificate {cert_id} to {new.value}",
            lambda conn: conn.execute(
                "UPDATE Certificate SET status = %s WHERE id = %s AND status = %s RETURNING 1",
                (new.value, cert_id, expected.value),
            ).fetchone(),
        )
        return updated is not None

    def compare_and_set_statuses(self, moves: Sequence[tuple[str, CertStatus, CertStatus]]) -> set[str]:
        check_moves(moves)
        if not moves:
            return set()
        ids = [cert_id for cert_id, _, _ in moves]
        columns = (ids, [old.value for _, old, _ in moves], [new.value for _, _, new in moves])
        rows = self._run(
            f"changing the status of {len(moves)} certificates",
            lambda conn: conn.execute(_SQL_COMPARE_AND_SET_MANY, columns).fetchall(),
        )
        return {row[0] for row in rows}

    def lapsed_certificates(self, now: datetime, limit: int) -> list[LapsedCertificate]:
        def work(conn: psycopg.Connection[Any]) -> list[LapsedCertificate]:
            rows = conn.execute(_SQL_LAPSED, (now, limit)).fetchall()
            return [LapsedCertificate(row[0], row[1], _STATUS[row[2]], row[3]) for row in rows]

        return self._run("reading the certificates past their not_after", work)

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
                "UPDATE CertRotation SET new_cert_id = %s WHERE id = %s AND completed_at IS NULL RETURNING 1",
                (new_cert_id, rotation_id),
            ).fetchone()
            if updated is None:
                raise _not_found("open rotation", rotation_id)

        self._run(f"attaching certificate {new_cert_id} to rotation {rotation_id}", work)

    def complete_rotation(self, rotation_id: int, at: datetime) -> None:
        """Close the rotation (idempotent). The status changes are the caller's to make."""

        def work(conn: psycopg.Connection[Any]) -> None:
            row = conn.execute(_SQL_COMPLETE_ROTATION, {"id": rotation_id, "at": at}).fetchone()
            if row is None:
                raise _not_found("rotation", rotation_id)
            has_new, completed = row[0], row[1]
            if not completed and not has_new:
                raise StateError(
                    f"rotation {rotation_id} has no replacement certificate yet",
                    code=CODE_INVALID,
                    hint="attach the new certificate before completing the rotation",
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
                (
                    target,
                    fingerprint,
                    pushed_at,
                    verified_at,
                    last_error,
                    target_fingerprint,
                    verified_at,
                    fingerprint,
                    cert_id,
                ),
            )
            if inserted.rowcount != 1:
                raise _not_found("certificate", cert_id)

        self._run(f"recording the distribution of certificate {cert_id} to {target}", work)

    def remove_distribution(self, name: str, target: str) -> None:
        self._run(
            f"removing the distribution of {name} to {target}",
            lambda conn: conn.execute("DELETE FROM Distribution WHERE cert_name = %s AND target = %s", (name, target)),
        )

    def record_distributions(self, records: Sequence[DistributionRecord]) -> None:
        """One upsert of every record (``record_distribution``'s, row for row); none if a certificate is missing."""
        if not records:
            return
        rows = [(r.cert_id, r.target, r.fingerprint, r.pushed_at, r.verified_at, r.last_error, r.target_fingerprint)
                for r in records]  # fmt: skip
        source, params = rows_source("d", _DISTRIBUTION_COLUMNS, rows)

        def work(conn: psycopg.Connection[Any]) -> None:
            # A missing certificate writes nothing: the caller's transaction, else one of its own.
            with contextlib.nullcontext() if self._in_transaction() else conn.transaction():
                inserted = conn.execute(
                    "INSERT INTO Distribution (cert_name, target, cert_id, fingerprint, pushed_at, verified_at,"  # noqa: S608  source: placeholders only
                    " last_error, target_fingerprint, verified_fingerprint)"
                    " SELECT c.name, d.target, c.id, d.fingerprint, d.pushed_at, d.verified_at, d.last_error,"
                    " d.target_fingerprint, CASE WHEN d.verified_at IS NULL THEN NULL ELSE d.fingerprint END"
                    f" FROM {source} JOIN Certificate c ON c.id = d.cert_id ORDER BY d.n"
                    " ON CONFLICT (cert_name, target) DO UPDATE SET cert_id = EXCLUDED.cert_id,"
                    " fingerprint = EXCLUDED.fingerprint, pushed_at = EXCLUDED.pushed_at,"
                    " verified_at = EXCLUDED.verified_at, last_error = EXCLUDED.last_error,"
                    " target_fingerprint = EXCLUDED.target_fingerprint, verified_fingerprint ="
                    " coalesce(EXCLUDED.verified_fingerprint, Distribution.verified_fingerprint) RETURNING 1",
                    params,
                )
                # The rows returned, not rowcount: inside a batch (pipeline) a fetch waits for the answer.
                if len(inserted.fetchall()) != len(records):
                    missing = sorted({record.cert_id for record in records})
                    raise _not_found("certificate", ", ".join(missing))

        self._run(f"recording the distribution of {len(records)} targets", work)

    def bump_serial(self) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("UPDATE StateMeta SET serial = serial + 1 RETURNING serial").fetchone()
            if row is None:
                raise _missing_meta()
            return int(row[0])

        return self._run("advancing the state serial", work)

    def followed_commit(self) -> FollowedCommit | None:
        def work(conn: psycopg.Connection[Any]) -> FollowedCommit | None:
            row = conn.execute("SELECT git_source, git_commit FROM StateMeta").fetchone()
            return None if row is None or row[0] is None else FollowedCommit(source=row[0], commit=row[1])

        return self._run("reading the followed git commit", work)

    def follow_commit(self, expected: FollowedCommit | None, new: FollowedCommit) -> bool:
        old = (None, None) if expected is None else (expected.source, expected.commit)

        def work(conn: psycopg.Connection[Any]) -> bool:
            updated = conn.execute(
                "UPDATE StateMeta SET git_source = %s, git_commit = %s"
                " WHERE git_source IS NOT DISTINCT FROM %s AND git_commit IS NOT DISTINCT FROM %s",
                (new.source, new.commit, *old),
            )
            return updated.rowcount == 1

        return self._run("recording the followed git commit", work)

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

    def failure_count(self, name: str) -> int:
        """How many failures in a row ``name`` has had (0 when none): drives the backoff length."""

        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("SELECT failures FROM IssuanceBackoff WHERE name = %s", (name,)).fetchone()
            return 0 if row is None else int(row[0])

        return self._run(f"reading the failures of {name}", work)
