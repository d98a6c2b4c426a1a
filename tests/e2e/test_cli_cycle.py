"""The main job end to end: the real command, a real PostgreSQL, local KMS, local CA, files target."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certreconcile.actual.embedded import postgres_bin_dir
from e2e.conftest import Runner

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "desired-state"


@pytest.fixture
def desired_dir(tmp_path: Path) -> Path:
    target = tmp_path / "desired"
    shutil.copytree(EXAMPLES, target, ignore=shutil.ignore_patterns(".certreconcile"))
    return target


def snapshot(url: str) -> dict[str, object]:
    """Everything apply could change, cheaply comparable."""
    with psycopg.connect(url) as conn:
        tables = ["Certificate", "CertRotation", "CertAudit", "Distribution", "ApplyRun", "ApplyStep", "LocalCa"]
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone() for t in tables}
        counts["serial"] = conn.execute("SELECT serial FROM StateMeta").fetchone()
    return counts


def test_plan_apply_status_audit_cycle(run_cli: Runner, desired_dir: Path, database_url: str) -> None:
    d = str(desired_dir)
    out = run_cli("validate", "--dir", d, check_code=0)
    assert out.stdout.startswith("Valid: 4 certificates")
    first = run_cli("plan", "--dir", d, "--detailed-exitcode", check_code=2)
    assert len(re.findall(r"^  \+ issue ", first.stdout, re.M)) == 4
    assert "Plan: 4 to issue, 0 to rotate, 0 to revoke, 0 to redistribute." in first.stdout
    assert "\x1b[" not in first.stdout  # NO_COLOR and not a terminal

    as_json = run_cli("plan", "--dir", d, "--format", "json", check_code=0)
    schema = json.loads((ROOT / "schemas" / "plan.schema.json").read_text())
    jsonschema.validate(json.loads(as_json.stdout), schema)
    md = run_cli("plan", "--dir", d, "--format", "markdown", check_code=0)
    assert "<details>" in md.stdout

    applied = run_cli("apply", "--dir", d, "--auto-approve", check_code=0)
    assert "Apply complete: 4 done, 0 skipped, 0 failed." in applied.stdout
    again = run_cli("plan", "--dir", d, "--detailed-exitcode", check_code=0)
    assert "No changes. Certificates match the desired state." in again.stdout
    noop = run_cli("apply", "--dir", d, "--auto-approve", check_code=0)
    assert "No changes." in noop.stdout

    status = run_cli("status", "--dir", d, check_code=0)
    assert status.stdout.count(" active ") == 4
    status_json = json.loads(run_cli("status", "--dir", d, "--format", "json", check_code=0).stdout)
    assert {c["status"] for c in status_json["certificates"]} == {"active"}
    assert all(c["targets_verified"] == c["targets_total"] for c in status_json["certificates"])

    audit = json.loads(run_cli("audit", "--dir", d, "--format", "json", check_code=0).stdout)
    assert {e["actor"] for e in audit} == {"user:e2e-tester"}
    assert sorted(e["name"] for e in audit if e["action"] == "issued") == sorted(
        c["name"] for c in status_json["certificates"]
    )
    served = "shop"  # deployed to the `web` files target
    rotated = run_cli("rotate", served, "--dir", d, check_code=0)
    assert "rotate" not in rotated.stderr
    assert run_cli("plan", "--dir", d, "--detailed-exitcode").returncode == 0
    refused = run_cli("revoke", served, "--dir", d, "--reason", "keyCompromise", check_code=1)
    assert "error[revoke-still-served]" in refused.stderr and "--force" in refused.stderr
    bad_reason = run_cli("revoke", served, "--dir", d, "--reason", "because", check_code=1)
    assert "not an RFC 5280 revocation reason" in bad_reason.stderr
    revoked = run_cli("revoke", served, "--dir", d, "--reason", "keyCompromise", "--force", check_code=0)
    assert "revoked" in revoked.stdout
    after_revoke = run_cli("plan", "--dir", d, "--detailed-exitcode", check_code=2)
    assert "~ rotate " + served in after_revoke.stdout
    assert "was revoked" in after_revoke.stdout


def test_saved_plan_refused_when_stale(run_cli: Runner, desired_dir: Path, database_url: str, tmp_path: Path) -> None:
    d = str(desired_dir)
    saved = tmp_path / "plan.json"
    run_cli("plan", "--dir", d, "--out", str(saved), check_code=0)
    run_cli("apply", "--dir", d, "--auto-approve", check_code=0)
    before = snapshot(database_url)
    refused = run_cli("apply", str(saved), "--dir", d, check_code=1)
    assert "error[stale-plan]" in refused.stderr
    assert "plan --out" in refused.stderr
    assert snapshot(database_url) == before


def test_saved_plan_applies_when_fresh(run_cli: Runner, desired_dir: Path, database_url: str, tmp_path: Path) -> None:
    d = str(desired_dir)
    saved = tmp_path / "plan.json"
    run_cli("plan", "--dir", d, "--out", str(saved), check_code=0)
    run_cli("apply", str(saved), "--dir", d, check_code=0)
    assert run_cli("plan", "--dir", d, "--detailed-exitcode").returncode == 0


def test_apply_without_terminal_needs_auto_approve(run_cli: Runner, desired_dir: Path, database_url: str) -> None:
    before = snapshot(database_url)
    refused = run_cli("apply", "--dir", str(desired_dir), check_code=1)
    assert "error[approval-required]" in refused.stderr
    assert snapshot(database_url) == before


def test_no_private_key_in_dump_logs_or_plan(
    run_cli: Runner, desired_dir: Path, database_url: str, tmp_path: Path
) -> None:
    d = str(desired_dir)
    outputs = [run_cli("plan", "--dir", d, "--format", "json", check_code=0)]
    outputs.append(run_cli("apply", "--dir", d, "--auto-approve", check_code=0))
    outputs.append(run_cli("status", "--dir", d, "--format", "json", check_code=0))
    outputs.append(run_cli("audit", "--dir", d, "--format", "json", check_code=0))
    pg_dump = postgres_bin_dir() / "pg_dump"
    dump = subprocess.run([str(pg_dump), "--dbname", database_url], capture_output=True, check=True).stdout
    key_files = list((desired_dir / ".certreconcile" / "deploy").rglob("privkey.pem"))
    assert len(key_files) == 4
    for key_file in key_files:
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # The secret part alone (a PKCS#8 blob also holds the public key, which the certificate carries).
        if isinstance(key, ec.EllipticCurvePrivateKey):
            value = key.private_numbers().private_value
        else:
            assert isinstance(key, rsa.RSAPrivateKey)
            value = key.private_numbers().d
        scalar = value.to_bytes((value.bit_length() + 7) // 8, "big")
        secret_forms = [der, base64.b64encode(der), scalar, scalar.hex().encode(), base64.b64encode(scalar)[4:-4]]
        for form in secret_forms:
            assert form not in dump
            for out in outputs:
                assert form.decode("latin-1") not in out.stdout + out.stderr
    assert b"PRIVATE KEY" not in dump
    for out in outputs:
        assert "PRIVATE KEY" not in out.stdout + out.stderr
    # Only the configured target holds a plaintext key.
    found = subprocess.run(
        ["grep", "-rl", "PRIVATE KEY", str(tmp_path)], capture_output=True, text=True, check=False
    ).stdout
    assert sorted(found.split()) == sorted(str(p) for p in key_files)


def test_two_applies_at_once_issue_each_certificate_once(
    cli_env: dict[str, str], desired_dir: Path, database_url: str
) -> None:
    command = [
        sys.executable,
        "-m",
        "certreconcile",
        "apply",
        "--dir",
        str(desired_dir),
        "--auto-approve",
        "--concurrency",
        "2",
    ]
    procs = [
        subprocess.Popen(command, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    with psycopg.connect(database_url) as conn:
        issued = conn.execute("SELECT name, count(*) FROM CertAudit WHERE action = 'issued' GROUP BY name").fetchall()
        rows = conn.execute("SELECT count(*) FROM Certificate").fetchone()
    assert sorted(count for _, count in issued) == [1, 1, 1, 1]
    assert rows == (4,)
