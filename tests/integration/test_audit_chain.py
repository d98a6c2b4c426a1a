"""The CertAudit hash chain against a real PostgreSQL: the trigger, its Python twin, the verifier.

Tampering is done as an attacker with superuser rights would: the append-only triggers are
ENABLE ALWAYS (session_replication_role does not skip them), so the tests disable them with
``ALTER TABLE ... DISABLE TRIGGER USER``, change the rows, and enable them again.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from certreconcile.actual.migrate import available_migrations, upgrade
from certreconcile.actual.repository import PostgresStore
from certreconcile.audit.chain import GENESIS_HASH, encode_row, row_hash
from certreconcile.audit.events import AuditChainHead, AuditChainRow, AuditEvent
from certreconcile.audit.head import export_head, load_head
from certreconcile.audit.verify import Anchor, Tampering, VerifyReport, verify_chain
from certreconcile.errors import CertReconcileError

pytestmark = pytest.mark.integration

ROWS = 12
ENABLE_TRIGGERS = (
    "ALTER TABLE CertAudit ENABLE ALWAYS TRIGGER certaudit_chain",
    "ALTER TABLE CertAudit ENABLE ALWAYS TRIGGER certaudit_no_update",
    "ALTER TABLE CertAudit ENABLE ALWAYS TRIGGER certaudit_no_delete",
    "ALTER TABLE CertAudit ENABLE ALWAYS TRIGGER certaudit_no_truncate",
    "ALTER TABLE CertAuditHead ENABLE ALWAYS TRIGGER certaudit_head_guard",
    "ALTER TABLE CertAuditHead ENABLE ALWAYS TRIGGER certaudit_head_no_truncate",
)
# What an attacker who knows the encoding runs after editing rows: every hash from seq
# `from_seq` on recomputed in order, and the head moved, so the chain is consistent again.
REHASH_FROM = """
DO $$
DECLARE
    r RECORD;
    previous TEXT := coalesce((SELECT row_hash FROM CertAudit WHERE seq = {from_seq} - 1), repeat('0', 64));
BEGIN
    FOR r IN SELECT * FROM CertAudit WHERE seq >= {from_seq} ORDER BY seq LOOP
        UPDATE CertAudit SET prev_hash = previous,
               row_hash = certaudit_row_hash(r.seq, r.id, r.cert_id, r.name, r.action, r.actor, r.timestamp,
                                             r.detail, previous)
         WHERE id = r.id RETURNING row_hash INTO previous;
    END LOOP;
    UPDATE CertAuditHead SET seq = coalesce((SELECT max(seq) FROM CertAudit), 0), row_hash = previous;
END;
$$"""


def insert_events(url: str, count: int, *, actor: str = "user:alice") -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for number in range(count):
            conn.execute(
                "INSERT INTO CertAudit (name, action, actor, detail) VALUES (%s, 'failed', %s, %s::jsonb)",
                (f"cert-{number}", actor, f'{{"attempt": "{number}", "reason": "CA refused"}}'),
            )


def tamper(url: str, *statements: str) -> None:
    """Run ``statements`` with every audit trigger disabled (as a superuser), then enable them again."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE CertAudit DISABLE TRIGGER USER")
        conn.execute("ALTER TABLE CertAuditHead DISABLE TRIGGER USER")
        for statement in statements:
            conn.execute(statement.encode())
        for statement in ENABLE_TRIGGERS:
            conn.execute(statement)


def swap_seq(a: int, b: int) -> tuple[str, ...]:
    return (
        f"UPDATE CertAudit SET seq = -1 WHERE seq = {a}",
        f"UPDATE CertAudit SET seq = {a} WHERE seq = {b}",
        f"UPDATE CertAudit SET seq = {b} WHERE seq = -1",
    )


def verify(url: str, *heads: Anchor, page_size: int = 5) -> VerifyReport:
    with PostgresStore(url).session() as session:
        return verify_chain(session, heads, page_size=page_size)


def head_of(url: str) -> Anchor:
    report = verify(url)
    assert report.intact, report.problem
    return Anchor(report.head, "exported.json")


def id_at(url: str, seq: int) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT id FROM CertAudit WHERE seq = %s", (seq,)).fetchone()
    assert row is not None
    return int(row[0])


def test_an_intact_chain_verifies_page_by_page(database_url: str) -> None:
    insert_events(database_url, ROWS)
    report = verify(database_url, page_size=5)
    assert report.intact, report.problem
    assert report.rows == ROWS
    with psycopg.connect(database_url) as conn:
        first = conn.execute("SELECT prev_hash FROM CertAudit WHERE seq = 1").fetchone()
        head = conn.execute("SELECT seq, row_hash FROM CertAuditHead").fetchone()
        last = conn.execute("SELECT seq, row_hash FROM CertAudit ORDER BY seq DESC LIMIT 1").fetchone()
    assert first == (GENESIS_HASH,)
    assert head == last == (report.head.seq, report.head.row_hash)


def test_one_statement_inserting_many_rows_chains_each(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO CertAudit (name, action, actor) SELECT 'n' || g, 'failed', 'user:x'"
                     " FROM generate_series(1, 6) AS g")  # fmt: skip
        seqs = conn.execute("SELECT seq FROM CertAudit ORDER BY id").fetchall()
    assert seqs == [(n,) for n in range(1, 7)]
    report = verify(database_url)
    assert report.intact and report.rows == 6


def test_an_empty_chain_verifies(database_url: str) -> None:
    report = verify(database_url)
    assert report.intact and report.rows == 0
    assert report.head == AuditChainHead(0, GENESIS_HASH)


def test_the_python_hash_equals_the_trigger_hash_for_awkward_content(database_url: str) -> None:
    """Unicode, NULL and real cert_id, nested JSON, microseconds, before 1970, any session time zone."""
    cert_id = str(uuid.uuid4())
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO Certificate (id, domain, serial_number, not_before, not_after, fingerprint, key_ref, name,"
            " issuer, key_type, cert_pem) VALUES (%s, 'a.example', 's1', '2026-01-01Z', '2026-04-01Z', 'f',"
            " '{\"kms\":\"local\",\"key_id\":\"k\"}', 'shop', 'internal', 'ecdsa-p256', 'PEM')",
            (cert_id,),
        )
        conn.execute("SET TimeZone = 'America/New_York'")
        conn.execute("SET DateStyle = 'SQL, DMY'")
        rows = [
            (cert_id, "shop", "user:zoë ☃", "2026-12-06 10:11:12.123456+01", '{"b": [1, 2.50, {"z": null}], "a": "é"}'),
            (None, "naïve-名前", "git:4f2a a@b.c", "1969-12-31 23:59:59.999999+00", "{}"),
            (None, "x", "user:12:34", "2026-01-01 00:00:00+00", '{"1:": "~", "": ""}'),
        ]
        for row in rows:
            conn.execute(
                "INSERT INTO CertAudit (cert_id, name, action, actor, timestamp, detail)"
                " VALUES (%s, %s, 'issued', %s, %s, %s::jsonb)",
                row,
            )
    with PostgresStore(database_url).session() as session:
        stored = list(session.audit_chain_page(0, 10))
    assert [row_hash(row) for row in stored] == [row.row_hash for row in stored]
    assert stored[1].at == datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert verify(database_url).intact


def test_the_encoding_is_length_prefixed_and_pinned() -> None:
    row = AuditChainRow(
        seq=1, id=7, cert_id=None, name="shop", action="issued", actor="user:zoë",
        at=datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC), detail='{"a": "b"}', prev_hash=GENESIS_HASH, row_hash="",
    )  # fmt: skip
    expected = b"12:certaudit-v11:11:7~4:shop6:issued9:user:zo\xc3\xab7:100000510:" + b'{"a": "b"}' + b"64:" + b"0" * 64
    assert encode_row(row) == expected
    assert row_hash(row) == hashlib.sha256(expected).hexdigest()


def test_rows_written_through_the_store_are_chained(postgres_store: PostgresStore) -> None:
    with postgres_store.session() as session:
        for action in ("issued", "distributed", "verified"):
            session.append_audit(
                AuditEvent(cert_id=None, name="shop", action=action, actor="user:bob", at=datetime.now(UTC),
                           detail={"target": "nginx"})
            )  # fmt: skip
        with session.transaction():  # several rows in one transaction
            for _ in range(2):
                session.append_audit(
                    AuditEvent(cert_id=None, name="api", action="failed", actor="user:bob", at=datetime.now(UTC))
                )
        report = verify_chain(session)
    assert report.intact and report.rows == 5


REHASH_ROW_5 = (
    "UPDATE CertAudit SET actor = 'user:mallory', row_hash = certaudit_row_hash(seq, id, cert_id, name, action,"
    " 'user:mallory', timestamp, detail, prev_hash) WHERE seq = 5"
)


@pytest.mark.parametrize(
    ("statements", "kind", "seq", "id_of"),
    [
        pytest.param(["UPDATE CertAudit SET actor = 'user:mallory' WHERE seq = 5"], Tampering.CHANGED, 5, 5,
                     id="changed-column"),
        pytest.param(["UPDATE CertAudit SET detail = '{}' WHERE seq = 1"], Tampering.CHANGED, 1, 1,
                     id="changed-detail"),
        pytest.param(["UPDATE CertAudit SET timestamp = timestamp + interval '1 microsecond' WHERE seq = 9"],
                     Tampering.CHANGED, 9, 9, id="changed-timestamp"),
        pytest.param([REHASH_ROW_5], Tampering.CHANGED, 5, 5, id="changed-and-its-hash-recomputed"),
        pytest.param(["DELETE FROM CertAudit WHERE seq = 6"], Tampering.DELETED, 6, 7, id="deleted-middle-row"),
        pytest.param(["DELETE FROM CertAudit WHERE seq IN (3, 4)"], Tampering.DELETED, 3, 5, id="deleted-two-rows"),
        pytest.param(["DELETE FROM CertAudit WHERE seq = 1"], Tampering.DELETED, 1, 2, id="deleted-first-row"),
        pytest.param(swap_seq(5, 6), Tampering.REORDERED, 5, 6, id="swapped-neighbours"),
        pytest.param(swap_seq(2, 10), Tampering.REORDERED, 2, 10, id="swapped-far-apart"),
        pytest.param([f"DELETE FROM CertAudit WHERE seq = {ROWS}"], Tampering.TRUNCATED, ROWS, None,
                     id="deleted-last-row-head-left-behind"),
    ],
)  # fmt: skip
def test_tampering_is_reported_at_the_first_affected_row(
    database_url: str, statements: list[str], kind: Tampering, seq: int, id_of: int | None
) -> None:
    """``id_of``: the original seq of the row the report names (for a deletion, the first row after the gap)."""
    insert_events(database_url, ROWS)
    assert verify(database_url).intact
    ids = {position: id_at(database_url, position) for position in range(1, ROWS + 1)}
    tamper(database_url, *statements)
    report = verify(database_url)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == (kind, seq), report.problem
    assert report.rows == seq - 1  # intact up to the row before
    assert report.problem.id == (None if id_of is None else ids[id_of]), report.problem
    if id_of is not None:
        assert f"row id {report.problem.id} " in report.problem.message


def test_a_deleted_last_row_with_the_head_moved_back_is_caught_only_by_an_exported_head(database_url: str) -> None:
    insert_events(database_url, ROWS)
    exported = head_of(database_url)
    tamper(database_url, f"DELETE FROM CertAudit WHERE seq = {ROWS}", REHASH_FROM.format(from_seq=ROWS))
    assert verify(database_url).intact  # consistent again: nothing inside the database can tell
    report = verify(database_url, exported)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == (Tampering.TRUNCATED, ROWS)
    assert "exported.json recorded seq 12" in report.problem.message


def test_a_rewritten_tail_with_recomputed_hashes_is_caught_by_an_exported_head(database_url: str) -> None:
    insert_events(database_url, ROWS)
    middle = head_of(database_url)  # exported when the chain had 12 rows
    insert_events(database_url, 3)
    end = head_of(database_url)  # and again at 15
    # Row 5 removed, the rows after it renumbered, every hash from 5 on recomputed, the head moved.
    tamper(
        database_url,
        "DELETE FROM CertAudit WHERE seq = 5",
        "UPDATE CertAudit SET seq = -(seq - 1) WHERE seq > 5",
        "UPDATE CertAudit SET seq = -seq WHERE seq < 0",
        REHASH_FROM.format(from_seq=5),
    )
    assert verify(database_url).intact
    report = verify(database_url, middle)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == (Tampering.REWRITTEN, ROWS)
    assert report.rows == ROWS - 1
    # The attacker pads the chain back to its old length: the exported end no longer matches.
    insert_events(database_url, 1, actor="user:mallory")
    report = verify(database_url, end)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == (Tampering.REWRITTEN, ROWS + 3)


def test_an_exported_head_still_in_the_chain_passes(database_url: str) -> None:
    insert_events(database_url, 4)
    exported = head_of(database_url)
    insert_events(database_url, 4)
    report = verify(database_url, exported)
    assert report.intact and report.rows == 8
    assert [anchor.source for anchor in report.anchors] == ["CertAuditHead", "exported.json"]


def test_concurrent_inserters_keep_one_chain(database_url: str) -> None:
    """Four connections insert at once, some in transactions that roll back: no fork, no gap."""
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        statement = "INSERT INTO CertAudit (name, action, actor) VALUES (%s, 'verified', %s)"
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                start.wait(10)
                for index in range(25):
                    with conn.transaction():
                        if index % 5 == 4:  # took a seq, then rolls back: the next inserter reuses it
                            conn.execute(statement, (f"w{number}", "user:rolled-back"))
                            raise psycopg.Rollback()
                        conn.execute(statement, (f"w{number}", f"user:w{number}"))
                        conn.execute(statement, (f"w{number}", f"user:w{number}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    report = verify(database_url, page_size=50)
    assert report.intact, report.problem
    assert report.rows == 4 * 20 * 2
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM CertAudit WHERE actor = 'user:rolled-back'").fetchone() == (0,)


def test_the_head_table_moves_only_with_the_chain(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for statement in (
            "UPDATE CertAuditHead SET seq = 0",
            "DELETE FROM CertAuditHead",
            "TRUNCATE CertAuditHead",
            "INSERT INTO CertAuditHead (singleton, seq, row_hash) VALUES (false, 0, '')",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="moved by the audit chain only"):
                conn.execute(statement)


def test_an_insert_only_role_chains_its_rows(database_url: str) -> None:
    """The application role gets INSERT and SELECT on CertAudit only: the trigger moves the head for it."""
    role = f"crt_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        try:
            conn.execute(sql.SQL("GRANT INSERT, SELECT ON CertAudit TO {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT USAGE ON SEQUENCE certaudit_id_seq TO {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            conn.execute("INSERT INTO CertAudit (name, action, actor) VALUES ('shop', 'issued', 'user:app')")
            conn.execute("INSERT INTO CertAudit (name, action, actor, seq, row_hash) VALUES ('shop', 'issued',"
                         " 'user:app', 99, 'forged')")  # fmt: skip
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("UPDATE CertAuditHead SET seq = 0")
        finally:
            conn.execute("RESET ROLE")
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    report = verify(database_url)
    assert report.intact and report.rows == 2  # the forged seq and hash were overwritten


@contextmanager
def _database_before(pg_server: str, version: int) -> Iterator[str]:
    """A scratch database with the migrations before ``version`` applied (``upgrade`` does the rest)."""
    from helpers import with_database

    name = f"crt_audit_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(pg_server, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for migration in available_migrations():
                if migration.version < version:
                    conn.execute(migration.sql.encode())
                    conn.execute("INSERT INTO SchemaMigration (version, name) VALUES (%s, %s)",
                                 (migration.version, migration.name))  # fmt: skip
        yield url
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database_at_0006(pg_server: str) -> Iterator[str]:
    with _database_before(pg_server, 7) as url:
        yield url


def test_the_migration_chains_existing_rows_in_id_order(database_at_0006: str) -> None:
    insert_events(database_at_0006, 7)
    with psycopg.connect(database_at_0006, autocommit=True) as conn:
        assert upgrade(conn) == [m.name for m in available_migrations() if m.version >= 7]
        order: list[Any] = conn.execute("SELECT id FROM CertAudit ORDER BY seq").fetchall()
    assert order == sorted(order)
    insert_events(database_at_0006, 2)  # new rows chain on the migrated ones
    report = verify(database_at_0006)
    assert report.intact and report.rows == 9


def test_rows_chained_before_the_plpgsql_hash_verify_after_it(pg_server: str) -> None:
    """Migration 0019 rewrites certaudit_row_hash: rows the 0007 body hashed, awkward ones included, still
    verify, both hash bodies agree on every row, and new rows chain on the old ones."""
    with _database_before(pg_server, 19) as url:
        insert_events(url, 3)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET TimeZone = 'Asia/Kolkata'")
            for name, actor, at, detail in [
                ("naïve-名前", "user:zoë ☃", "1969-12-31 23:59:59.999999+00", '{"b": [1, 2.50], "a": "é"}'),
                ("x", "user:12:34", "2026-01-01 00:00:00.000001+00", '{"1:": "~", "": ""}'),
            ]:
                conn.execute(
                    "INSERT INTO CertAudit (cert_id, name, action, actor, timestamp, detail)"
                    " VALUES (NULL, %s, 'issued', %s, %s, %s::jsonb)",
                    (name, actor, at, detail),
                )
            before = conn.execute("SELECT seq, row_hash FROM CertAudit ORDER BY seq").fetchall()
            applied = upgrade(conn)
            recomputed = conn.execute(
                "SELECT seq, certaudit_row_hash(seq, id, cert_id, name, action, actor, timestamp, detail, prev_hash)"
                " FROM CertAudit ORDER BY seq"
            ).fetchall()
        assert applied[0] == "0019_audit_hash_plpgsql"
        assert recomputed == before and len(before) == 5
        insert_events(url, 2)
        report = verify(url)
        assert report.intact and report.rows == 7


def test_the_head_file_round_trips_and_bad_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit-head.json"
    export_head(path, AuditChainHead(42, "ab" * 32), datetime(2026, 12, 6, tzinfo=UTC))
    assert load_head(path) == Anchor(AuditChainHead(42, "ab" * 32), str(path))
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    valid = {"format": "certreconcile-audit-head-v1", "seq": 1, "row_hash": "0" * 64}
    bad = ["not json", "[]", json.dumps({"seq": 1}), json.dumps(valid | {"seq": -1}), json.dumps(valid | {"seq": True}),
           json.dumps(valid | {"row_hash": "xyz"}), json.dumps(valid | {"format": "other"})]  # fmt: skip
    for text in bad:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(CertReconcileError) as caught:
            load_head(path)
        assert caught.value.code == "audit-head-invalid"
    with pytest.raises(CertReconcileError) as missing:
        load_head(tmp_path / "nowhere.json")
    assert missing.value.code == "audit-head-invalid"
