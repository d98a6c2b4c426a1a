"""The current-row query of ``load_actual``: the rows it chooses, and how PostgreSQL finds them.

It picks each name's current row first (walking idx_cert_name_current) and joins the renewal windows after;
the reference below is the same choice written join-first, as it was before (PostgreSQL then read the
whole table, history rows included, and sorted the join).
"""

from __future__ import annotations

import base64
import random
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from certreconcile.actual.postgres.rows import _SQL_CURRENT_ALL

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, tzinfo=UTC)
STATUSES = ("issued", "active", "expiring_soon", "rotating", "superseded", "expired", "revoked")
REFERENCE = (
    "SELECT DISTINCT ON (name) id::text, name, domain, san_domains::text, issuer, key_type,"
    " serial_number, not_before, not_after, status, fingerprint, on_delete, has_key,"
    " issuer_fingerprint, ari.window_start, ari.window_end, origin, ari.retry_after"
    " FROM Certificate LEFT JOIN AcmeRenewalInfo ari ON ari.cert_id = Certificate.id"
    " WHERE retired_at IS NULL AND status <> 'superseded'"
    " ORDER BY name, (status IN ('issued','active','expiring_soon')) DESC,"
    " created_at DESC, not_before DESC, Certificate.id DESC"
)


def _fill(conn: psycopg.Connection[tuple[object, ...]], names: int, seed: int) -> None:
    """Several rows per name in every status, some retired, some sharing created_at (ties broken by not_before,
    then id), about half with a stored renewal window; each row as wide as a stored certificate."""
    rng = random.Random(seed)
    pem = base64.b64encode(rng.randbytes(900)).decode()  # as wide as a certificate, and as incompressible
    with conn.pipeline():  # in order, without a round trip each
        for number in range(names):
            name = f"cert-{number:04d}"
            for version in range(rng.randint(1, 6)):
                ident = uuid.UUID(int=rng.getrandbits(128), version=4)
                created = T0 + timedelta(days=rng.choice((version, version, 0)))
                status = rng.choice(STATUSES)
                live = status in ("issued", "active", "expiring_soon")
                if live:  # at most one live row per name (uq_cert_name_live): the older live row is superseded
                    conn.execute(
                        "UPDATE Certificate SET status = 'superseded'"
                        " WHERE name = %s AND status IN ('issued','active','expiring_soon')",
                        (name,),
                    )
                conn.execute(
                    "INSERT INTO Certificate (id, name, domain, serial_number, not_before, not_after, status,"
                    " fingerprint, key_ref, cert_pem, chain_pem, issuer, key_type, created_at, retired_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, '', 'ca', 'ecdsa-p256', %s, %s)",
                    (ident, name, f"{name}.example.com", f"s-{ident}", created + timedelta(hours=rng.randint(0, 3)),
                     created + timedelta(days=90), status, f"fp-{ident}", '{"kms":"local"}', pem, created,
                     None if live or rng.random() < 0.8 else created + timedelta(days=1)),
                )  # fmt: skip
                if rng.random() < 0.5:
                    conn.execute(
                        "INSERT INTO AcmeRenewalInfo (cert_id, window_start, window_end, retry_after, fetched_at)"
                        " VALUES (%s, %s, %s, %s, %s)",
                        (ident, created + timedelta(days=60), created + timedelta(days=62), created, created),
                    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_current_rows_are_the_join_first_choice(database_url: str, seed: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        _fill(conn, 300, seed)
        chosen = conn.execute(_SQL_CURRENT_ALL).fetchall()
        reference = conn.execute(REFERENCE).fetchall()
    assert len(chosen) > 200  # most names have a row neither superseded nor retired
    assert chosen == reference  # the same rows, in the same order (by name)


def test_the_current_rows_come_from_the_index_without_sorting_the_table(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        _fill(conn, 2000, 4)
        conn.execute("VACUUM ANALYZE Certificate")
        conn.execute("VACUUM ANALYZE AcmeRenewalInfo")
        plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + _SQL_CURRENT_ALL).fetchall())
    assert "Index Only Scan using idx_cert_name_current" in plan, plan
    assert "Seq Scan on certificate" not in plan, plan
    sort_keys = [line.strip() for line in plan.splitlines() if "Sort Key" in line]
    assert all("created_at" not in key for key in sort_keys), plan  # only the final order by name, if any
