"""`certreconcile audit verify` end to end: rows written by a real apply, tampered by a superuser."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg
import pytest

from e2e.conftest import Runner

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "desired-state"


def tamper(url: str, *statements: str) -> None:
    """As a superuser: every audit trigger disabled, the rows edited, the triggers enabled again."""
    with psycopg.connect(url, autocommit=True) as conn:
        triggers = conn.execute(
            "SELECT tgrelid::regclass::text, tgname FROM pg_trigger"
            " WHERE tgrelid IN ('certaudit'::regclass, 'certaudithead'::regclass) AND NOT tgisinternal"
        ).fetchall()
        conn.execute("ALTER TABLE CertAudit DISABLE TRIGGER USER")
        conn.execute("ALTER TABLE CertAuditHead DISABLE TRIGGER USER")
        for statement in statements:
            conn.execute(statement.encode())
        for table, trigger in triggers:
            conn.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {trigger}".encode())


@pytest.fixture
def applied(run_cli: Runner, tmp_path: Path) -> Path:
    desired = tmp_path / "desired"
    shutil.copytree(EXAMPLES, desired, ignore=shutil.ignore_patterns(".certreconcile"))
    run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=0)
    return desired


def test_verify_exports_a_head_and_detects_tampering(
    run_cli: Runner, applied: Path, database_url: str, tmp_path: Path
) -> None:
    d = str(applied)
    head = tmp_path / "audit-head.json"
    intact = run_cli("audit", "verify", "--dir", d, "--export-head", str(head), check_code=0)
    assert intact.stdout.startswith("Audit chain intact: "), intact.stdout
    exported = json.loads(head.read_text(encoding="utf-8"))
    events = json.loads(run_cli("audit", "--dir", d, "--format", "json", check_code=0).stdout)
    assert exported["seq"] == len(events) > 0  # every row apply wrote is in the chain
    assert json.loads(run_cli("audit", "--dir", d, "--name", events[0]["name"], "--format", "json",
                              check_code=0).stdout)  # fmt: skip

    # A deleted last row, with the chain head moved back: consistent inside the database ...
    last = exported["seq"]
    tamper(
        database_url,
        f"DELETE FROM CertAudit WHERE seq = {last}",
        f"UPDATE CertAuditHead SET seq = {last - 1},"
        f" row_hash = (SELECT row_hash FROM CertAudit WHERE seq = {last - 1})",
    )
    run_cli("audit", "verify", "--dir", d, check_code=0)
    # ... but not against the head exported before.
    truncated = run_cli("audit", "verify", "--dir", d, "--head", str(head), "--format", "json", check_code=1)
    report = json.loads(truncated.stdout)
    assert report["intact"] is False
    assert report["problem"]["kind"] == "truncated"
    assert report["problem"]["seq"] == last
    assert "error[audit-tampered]" in truncated.stderr

    # A changed row is found without any exported head; no new head is written for a tampered chain.
    tamper(database_url, "UPDATE CertAudit SET actor = 'user:mallory' WHERE seq = 2")
    again = tmp_path / "again.json"
    changed = run_cli("audit", "verify", "--dir", d, "--export-head", str(again), check_code=1)
    assert "TAMPERED (changed at seq 2)" in changed.stdout, changed.stdout
    assert not again.exists()


def test_verify_refuses_a_bad_head_file(run_cli: Runner, tmp_path: Path) -> None:
    bad = tmp_path / "head.json"
    bad.write_text('{"seq": "x"}', encoding="utf-8")
    result = run_cli("audit", "verify", "--dir", str(tmp_path), "--head", str(bad), check_code=1)
    assert "error[audit-head-invalid]" in result.stderr
    assert result.stdout == ""
