"""The schema against a real PostgreSQL: schema.sql, migrations, audit triggers, indexes."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from certreconcile.actual.migrate import available_migrations, render_schema, upgrade
from certreconcile.actual.repository import PostgresStore
from certreconcile.errors import StateError
from helpers import server_scratch_dir

pytestmark = pytest.mark.integration

SCHEMA_SQL = Path(__file__).resolve().parents[2] / "schema.sql"

# Rows for the renewal-window query: ~80% active, 5% expiring_soon, the rest history.
# not_after spreads over a year from 2026-01-01; names are unique so no live row collides.
FILL_CERTIFICATES = """
INSERT INTO Certificate (domain, serial_number, not_before, not_after, status, fingerprint, key_ref,
                         name, issuer, key_type, cert_pem)
SELECT 'host' || g || '.example.com', 'serial-' || g,
       t.not_after - interval '90 days', t.not_after,
       CASE WHEN mod(g, 100) < 80 THEN 'active' WHEN mod(g, 100) < 85 THEN 'expiring_soon'
            WHEN mod(g, 100) < 95 THEN 'superseded' WHEN mod(g, 100) < 98 THEN 'expired' ELSE 'revoked' END,
       md5(g::text), '{"kms":"local","key_id":"k"}', 'cert-' || g, 'letsencrypt', 'ecdsa-p256', 'PEM'
FROM generate_series(1, %(rows)s) AS g,
     LATERAL (SELECT timestamptz '2026-01-01 00:00+00'
                     + ((hashint4(g) & 2147483647) %% 525600) * interval '1 minute' AS not_after) AS t
"""
RENEWAL_QUERY = (
    "SELECT id, name, not_after FROM Certificate WHERE status IN ('active','expiring_soon') AND not_after < %s"
)

CATALOG_QUERIES = {
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), coll.collname, a.attnum
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_collation coll ON coll.oid = a.attcollation AND a.attcollation <> 100
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'S') AND a.attnum > 0
          AND NOT a.attisdropped
        ORDER BY 1, 2""",
    "relations": """
        SELECT c.relname, c.relkind, c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' ORDER BY 1""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, tgenabled, pg_get_triggerdef(oid)
        FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2""",
    "functions": """
        SELECT proname, pg_get_functiondef(p.oid) FROM pg_proc p
        WHERE pronamespace = 'public'::regnamespace ORDER BY 1""",
    "migrations": "SELECT version, name FROM SchemaMigration ORDER BY version",
    "state_meta_rows": "SELECT count(*) FROM StateMeta",
}

ALL_MIGRATIONS = [m.name for m in available_migrations()]
assert ALL_MIGRATIONS[0] == "0001_initial"


def describe_catalog(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {key: conn.execute(query).fetchall() for key, query in CATALOG_QUERIES.items()}


@pytest.fixture
def empty_database(pg_server: str) -> Iterator[str]:
    from helpers import with_database

    name = f"crt_empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(pg_server, name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def second_empty_database(pg_server: str) -> Iterator[str]:
    from helpers import with_database

    name = f"crt_empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(pg_server, name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_schema_sql_file_is_generated_from_the_migrations() -> None:
    assert SCHEMA_SQL.read_text(encoding="utf-8") == render_schema(), (
        "schema.sql is stale: PYTHONPATH=src python -m certreconcile.actual.migrate schema > schema.sql"
    )


def test_schema_sql_equals_migrated_database(empty_database: str, second_empty_database: str) -> None:
    with psycopg.connect(empty_database, autocommit=True) as conn:
        assert upgrade(conn) == [migration.name for migration in available_migrations()]
    with psycopg.connect(second_empty_database, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL.read_bytes())
    migrated = describe_catalog(empty_database)
    from_file = describe_catalog(second_empty_database)
    for key in CATALOG_QUERIES:
        assert migrated[key] == from_file[key], key
    assert migrated["triggers"], "the audit triggers are missing"


def test_migration_is_idempotent(empty_database: str) -> None:
    with psycopg.connect(empty_database, autocommit=True) as conn:
        assert upgrade(conn) == ALL_MIGRATIONS
        lineage = conn.execute("SELECT lineage FROM StateMeta").fetchone()
        assert upgrade(conn) == []
        assert conn.execute("SELECT lineage FROM StateMeta").fetchone() == lineage
    assert PostgresStore(empty_database).upgrade() == []


def test_concurrent_migrations_apply_once(empty_database: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def migrate() -> None:
        try:
            with psycopg.connect(empty_database, autocommit=True) as conn:
                start.wait(5)
                results.append(upgrade(conn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(results) == [[], [], [], ALL_MIGRATIONS]
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT count(*) FROM SchemaMigration").fetchone() == (len(ALL_MIGRATIONS),)
        assert conn.execute("SELECT count(*) FROM StateMeta").fetchone() == (1,)


def test_failed_migration_is_rolled_back_and_reported(empty_database: str) -> None:
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE Certificate (id int)")  # makes 0001 fail half-way
        with pytest.raises(StateError) as caught:
            upgrade(conn)
        assert caught.value.code == "migration-failed"
        assert "0001_initial" in caught.value.message
        assert conn.execute("SELECT to_regclass('schemamigration')").fetchone() == (None,)


def _audit_row(conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO CertAudit (cert_id, name, action, actor) VALUES (NULL, 'shop', 'failed', 'user:alice')")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE CertAudit SET actor = 'user:mallory'",
        "DELETE FROM CertAudit",
        "TRUNCATE CertAudit",
        "TRUNCATE CertAudit CASCADE",
    ],
)
@pytest.mark.parametrize("replica_mode", [False, True], ids=["origin", "replica"])
def test_audit_is_append_only_even_for_a_superuser(database_url: str, statement: str, replica_mode: bool) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
        _audit_row(conn)
        if replica_mode:
            conn.execute("SET session_replication_role = replica")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute(statement)
        assert conn.execute("SELECT count(*), min(actor) FROM CertAudit").fetchone() == (1, "user:alice")


def test_audit_violation_surfaces_as_state_error(postgres_store: PostgresStore) -> None:
    with postgres_store.session() as session:
        conn = session._conn
        _audit_row(conn)
        with pytest.raises(StateError) as caught:
            session._run("tampering", lambda c: c.execute("DELETE FROM CertAudit"))
        assert caught.value.code == "audit-append-only"


def test_renewal_window_query_is_index_only(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(FILL_CERTIFICATES, {"rows": 20_000})
        conn.execute("VACUUM ANALYZE Certificate")
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "EXPLAIN (ANALYZE, COSTS OFF) " + RENEWAL_QUERY, ("2026-01-08 00:00+00",)
            ).fetchall()
        )
        assert "Index Only Scan using idx_cert_not_after" in plan, plan
        assert "Heap Fetches: 0" in plan, plan


def test_error_messages_hide_the_password() -> None:
    store = PostgresStore("postgresql://certreconcile:hunter2-secret@127.0.0.1:1/nowhere", connect_timeout=2)
    with pytest.raises(StateError) as caught, store.session():
        pass
    assert caught.value.code == "database-unavailable"
    assert "hunter2-secret" not in caught.value.one_line()
    assert "hunter2-secret" not in repr(store)


def test_missing_schema_says_to_upgrade(empty_database: str) -> None:
    with PostgresStore(empty_database).session() as session, pytest.raises(StateError) as caught:
        session.load_actual()
    assert caught.value.code == "schema-missing"
    assert "db upgrade" in caught.value.hint


@pytest.mark.slow
def test_embedded_server_starts_reuses_and_stops() -> None:
    from certreconcile.actual.embedded import resolve_database_url, stop_embedded

    with server_scratch_dir("crt-embedded") as scratch:
        # Longer than a unix socket path may be: the socket must move elsewhere.
        desired = scratch / ("d" * 120)
        desired.mkdir()
        env: dict[str, str] = {}
        try:
            url = resolve_database_url(desired, env)
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT current_database()").fetchone() == ("certreconcile",)
            assert (desired / ".certreconcile" / ".gitignore").read_text() == "*\n"
            assert resolve_database_url(desired, env) == url  # reused, not restarted
            assert PostgresStore(url).upgrade() == ALL_MIGRATIONS
        finally:
            assert stop_embedded(desired, env)
        assert not stop_embedded(desired, env)
        # Started again on the same data: the schema is still there.
        try:
            assert PostgresStore(resolve_database_url(desired, env)).upgrade() == []
        finally:
            stop_embedded(desired, env)


def test_configured_url_wins(tmp_path: Path) -> None:
    from certreconcile.actual.embedded import resolve_database_url

    url = "postgresql://app@db.example.com/certs"
    assert resolve_database_url(tmp_path, {"CERTRECONCILE_DATABASE_URL": url}) == url
    assert not (tmp_path / ".certreconcile").exists()


def test_migration_0020_deletes_the_renewal_info_of_certificates_already_superseded(pg_server: str) -> None:
    from test_audit_chain import _database_before

    ids = {status: str(uuid.uuid4()) for status in ("superseded", "active")}
    with _database_before(pg_server, 20) as url, psycopg.connect(url, autocommit=True) as conn:
        for status, cert_id in ids.items():
            conn.execute(
                "INSERT INTO Certificate (id, domain, serial_number, not_before, not_after, status, fingerprint,"
                " key_ref, name, issuer, key_type, cert_pem) VALUES (%s, 'a.example.com', %s, now(),"
                " now() + interval '90 days', %s, 'fp', '{}', %s, 'le', 'ecdsa-p256', 'PEM')",
                (cert_id, f"serial-{status}", status, f"name-{status}"),
            )
            conn.execute(
                "INSERT INTO AcmeRenewalInfo (cert_id, window_start, window_end, retry_after, fetched_at)"
                " VALUES (%s, now(), now(), now(), now())",
                (cert_id,),
            )
        assert upgrade(conn) == ["0020_renewal_info_of_superseded"]
        kept = conn.execute("SELECT cert_id::text FROM AcmeRenewalInfo").fetchall()
        assert kept == [(ids["active"],)]
