"""ACME accounts, orders and ARI renewal info (``AcmeStore``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg

from certreconcile.actual.postgres.connection import (
    PostgresConnection,
    _not_found,
    decode_key_ref,
    encode_key_ref,
)
from certreconcile.actual.store import (
    AcmeAccountRecord,
    AcmeOrderRecord,
    RenewalInfoRecord,
)


class PostgresAcme(PostgresConnection):
    """ACME accounts, orders and ARI renewal info (``AcmeStore``)."""

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
            return _order_record(row)

        return self._run(f"reading the ACME order of {idempotency_key}", work)

    def save_acme_order(self, record: AcmeOrderRecord, at: datetime) -> AcmeOrderRecord | None:
        def work(conn: psycopg.Connection[Any]) -> AcmeOrderRecord | None:
            # One statement: the CTE reads the row as it was before the upsert (the statement's snapshot).
            row = conn.execute(
                "WITH previous AS (SELECT idempotency_key, name, order_url, state, directory_url, cert_id::text"
                " FROM AcmeOrder WHERE idempotency_key = %(key)s AND order_url IS NOT NULL),"
                " saved AS (INSERT INTO AcmeOrder (idempotency_key, name, order_url, state, directory_url, cert_id,"
                " created_at, updated_at) VALUES (%(key)s, %(name)s, %(url)s, %(state)s, %(directory)s,"
                " %(cert)s::uuid, %(at)s, %(at)s)"
                " ON CONFLICT (idempotency_key) DO UPDATE SET order_url = EXCLUDED.order_url,"
                " state = EXCLUDED.state, directory_url = EXCLUDED.directory_url, cert_id = EXCLUDED.cert_id,"
                " updated_at = EXCLUDED.updated_at RETURNING 1)"
                " SELECT previous.*, (SELECT count(*) FROM saved) FROM (SELECT 1) one LEFT JOIN previous ON true",
                {
                    "key": record.idempotency_key,
                    "name": record.name,
                    "url": record.order_url,
                    "state": record.state,
                    "directory": record.directory_url,
                    "cert": record.cert_id,
                    "at": at,
                },
            ).fetchone()
            if row is None or row[0] is None:
                return None
            return _order_record(row)

        return self._run(f"recording the ACME order of {record.name}", work)

    def renewal_infos(self, cert_ids: Sequence[str]) -> Mapping[str, RenewalInfoRecord]:
        def work(conn: psycopg.Connection[Any]) -> dict[str, RenewalInfoRecord]:
            rows = conn.execute(
                "SELECT cert_id::text, window_start, window_end, retry_after, fetched_at, explanation_url"
                " FROM AcmeRenewalInfo WHERE cert_id = ANY(%b::uuid[])",
                (list(cert_ids),),
            ).fetchall()
            return {row[0]: RenewalInfoRecord(*row) for row in rows}

        return self._run(f"reading the renewal info of {len(cert_ids)} certificates", work)

    def save_renewal_infos(self, records: Sequence[RenewalInfoRecord]) -> None:
        """One upsert of every record (an ARI refresh answers for every live certificate of a fleet); none for a
        certificate superseded meanwhile (its row went with it: migration 0020)."""
        if not records:
            return
        columns = (
            [record.cert_id for record in records],
            [record.window_start for record in records],
            [record.window_end for record in records],
            [record.retry_after for record in records],
            [record.fetched_at for record in records],
            [record.explanation_url for record in records],
        )
        self._run(
            f"recording the renewal info of {len(records)} certificates",
            lambda conn: conn.execute(
                "INSERT INTO AcmeRenewalInfo (cert_id, window_start, window_end, retry_after, fetched_at,"
                " explanation_url) SELECT r.cert_id, r.window_start, r.window_end, r.retry_after, r.fetched_at,"
                " r.explanation_url FROM unnest(%b::uuid[], %b::timestamptz[], %b::timestamptz[],"
                " %b::timestamptz[], %b::timestamptz[], %b::text[])"
                " AS r(cert_id, window_start, window_end, retry_after, fetched_at, explanation_url)"
                " JOIN Certificate c ON c.id = r.cert_id AND c.status <> 'superseded'"  # migration 0020
                " ON CONFLICT (cert_id) DO UPDATE SET window_start = EXCLUDED.window_start,"
                " window_end = EXCLUDED.window_end, retry_after = EXCLUDED.retry_after,"
                " fetched_at = EXCLUDED.fetched_at, explanation_url = EXCLUDED.explanation_url",
                columns,
            ),
        )

    def save_unchanged_renewal_infos(
        self, cert_ids: Sequence[str], retry_after: datetime, fetched_at: datetime
    ) -> None:
        """One UPDATE of the stored answers' Retry-After (no window rewritten, no certificate joined)."""
        if not cert_ids:
            return
        self._run(
            f"recording the renewal info of {len(cert_ids)} certificates",
            lambda conn: conn.execute(
                "UPDATE AcmeRenewalInfo SET retry_after = %s, fetched_at = %s, explanation_url = NULL"
                " WHERE cert_id = ANY(%b::uuid[])",
                (retry_after, fetched_at, list(cert_ids)),
            ),
        )


def _order_record(row: Sequence[Any]) -> AcmeOrderRecord:
    return AcmeOrderRecord(
        idempotency_key=row[0],
        name=row[1],
        order_url=row[2],
        state=row[3],
        directory_url=row[4] or "",
        cert_id=row[5],
    )
