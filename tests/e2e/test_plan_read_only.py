"""``plan`` needs no write access and no KMS: it runs with a read-only database role."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg

from e2e.conftest import Runner
from helpers import login_url

ROOT = Path(__file__).resolve().parents[2]


def test_plan_runs_with_a_read_only_role_and_no_kms_key(
    run_cli: Runner, cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    desired = tmp_path / "desired"
    shutil.copytree(ROOT / "examples" / "desired-state", desired, ignore=shutil.ignore_patterns(".certreconcile"))
    run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=0)
    (desired / "more.yaml").write_text(
        "certificates:\n  - name: extra\n    domains: [extra.example.test]\n    issuer: demo-ca\n"
    )
    role = f"ro_{tmp_path.name[-20:].replace('-', '_').lower()}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
        conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
        conn.execute(f'GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO "{role}"')  # the key-usage counts
    try:
        missing_key = tmp_path / "no-such-dir" / "kms.key"
        env = dict(cli_env)
        env["CERTRECONCILE_DATABASE_URL"] = login_url(database_url, role)
        env["CERTRECONCILE_LOCAL_KMS_KEY_FILE"] = str(missing_key)
        result = run_cli("plan", "--dir", str(desired), "--detailed-exitcode", env=env, check_code=2)
        assert "+ issue extra" in result.stdout
        assert "Plan: 1 to issue, 0 to rotate, 0 to revoke, 0 to redistribute." in result.stdout
        assert not missing_key.exists()
        # The same role cannot apply: the write is refused with a clear one-line error.
        refused = run_cli("apply", "--dir", str(desired), "--auto-approve", env=env, check_code=1)
        assert "Traceback" not in refused.stderr
        assert "error[" in refused.stderr
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role}"')
            conn.execute(f'REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM "{role}"')
            conn.execute(f'REVOKE ALL ON SCHEMA public FROM "{role}"')
            conn.execute(f'DROP ROLE "{role}"')
