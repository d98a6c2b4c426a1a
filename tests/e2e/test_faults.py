"""Database and target faults mid-apply, through the CLI on real servers; the next apply finishes.

Three certificates from a local CA: ``alpha`` deploys to a files target whose reload command
injects the fault (once) between its certificate being stored and its deployment being recorded,
``beta`` and ``gamma`` to a plain one. ``--concurrency 1`` runs them in that order on one
connection, so the fault lands on alpha's change and beta and gamma then need the same connection
again (the store replaces it at the next transaction boundary).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from certreconcile.actual.embedded import EmbeddedPostgres
from e2e.conftest import Runner
from e2e.faults import assert_converges, assert_isolated, fault_command, record, secrets_of
from helpers import server_scratch_dir

pytestmark = pytest.mark.integration

OTHERS = ("beta", "gamma")


def write_desired(directory: Path, reload_command: str) -> Path:
    doc: dict[str, Any] = {
        "kms": {"local": {}},
        "issuers": {"internal": {"local_ca": {"common_name": "Fault CA", "lifetime": "90d"}}},
        "targets": {
            "faulty": {"files": {"dir": "out/faulty", "reload_command": reload_command}},
            "deploy": {"files": {"dir": "out/deploy"}},
        },
        "certificates": [
            {
                "name": name,
                "domains": [f"{name}.example.com"],
                "issuer": "internal",
                "targets": ["faulty" if name == "alpha" else "deploy"],
            }
            for name in ("alpha", *OTHERS)
        ],
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "certificates.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory


def apply(run_cli: Runner, desired: Path, **kwargs: Any) -> Any:
    return run_cli("apply", "--dir", str(desired), "--auto-approve", "--concurrency", "1", **kwargs)


def served(desired: Path) -> set[str]:
    return {path.name for folder in ("faulty", "deploy") for path in (desired / "out" / folder).glob("*")}


def test_connection_terminated_mid_apply(run_cli: Runner, tmp_path: Path, database_url: str) -> None:
    marker = tmp_path / "terminated"
    desired = write_desired(tmp_path / "repo", fault_command("terminate", marker))
    result = apply(run_cli, desired)
    assert marker.exists()  # the fault fired
    assert_isolated(result, {"alpha": "database-unavailable"}, OTHERS, secrets_of(database_url))
    with psycopg.connect(database_url) as conn:  # alpha's failure was recorded on a new connection...
        failed = conn.execute("SELECT name FROM CertAudit WHERE action = 'failed'").fetchall()
        backoff = conn.execute("SELECT count(*) FROM IssuanceBackoff").fetchone()
    assert failed == [("alpha",)]
    assert backoff == (0,)  # ...and the name is not backed off: the fault was the database's
    assert_converges(run_cli, desired)
    assert served(desired) == {"alpha", *OTHERS}
    record("pg_terminate_backend mid-apply", failed=["alpha"], done=OTHERS, converged=True)


def test_statement_timeout_mid_apply(run_cli: Runner, tmp_path: Path, database_url: str) -> None:
    """Another session holds alpha's rows past ``statement_timeout``: alpha fails, the others do not wait."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        assert name is not None
        conn.execute(f"ALTER DATABASE \"{name[0]}\" SET statement_timeout = '1s'")
    marker = tmp_path / "held"
    desired = write_desired(tmp_path / "repo", fault_command("hold", marker, "alpha", "4"))
    result = apply(run_cli, desired)
    assert_isolated(result, {"alpha": "database-timeout"}, OTHERS, secrets_of(database_url))
    released = marker.with_suffix(".released")
    deadline = time.monotonic() + 15
    while not released.exists() and time.monotonic() < deadline:  # the fault goes away: the lock is released
        time.sleep(0.05)
    assert released.exists()
    assert_converges(run_cli, desired, "--concurrency", "1")  # statement_timeout is still set
    record("statement timeout (row lock held by another session)", failed=["alpha"], done=OTHERS, converged=True)


@pytest.fixture
def restartable_server() -> Iterator[tuple[Path, str]]:
    """An EmbeddedPostgres of this test alone (the shared session server is never restarted)."""
    with server_scratch_dir("crt-fault") as state_dir:
        server = EmbeddedPostgres(state_dir)
        url = server.ensure_running()
        try:
            yield state_dir, url
        finally:
            server.stop()


def test_server_restarted_mid_apply(
    run_cli: Runner, cli_env: dict[str, str], tmp_path: Path, restartable_server: tuple[Path, str]
) -> None:
    state_dir, url = restartable_server
    env = {**cli_env, "CERTRECONCILE_DATABASE_URL": url}
    marker = tmp_path / "restarted"
    desired = write_desired(tmp_path / "repo", fault_command("restart", marker, str(state_dir)))
    result = apply(run_cli, desired, env=env)
    assert marker.exists()
    assert_isolated(result, {"alpha": "database-unavailable"}, OTHERS, secrets_of(url))
    applied = run_cli("apply", "--dir", str(desired), "--auto-approve", env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert run_cli("plan", "--dir", str(desired), "--detailed-exitcode", env=env).returncode == 0
    assert served(desired) == {"alpha", *OTHERS}
    record("PostgreSQL restarted mid-apply", failed=["alpha"], done=OTHERS, converged=True)


def test_target_down(run_cli: Runner, tmp_path: Path, database_url: str) -> None:
    marker = tmp_path / "down"
    marker.write_text("down\n")
    desired = write_desired(tmp_path / "repo", fault_command("down", marker))
    result = apply(run_cli, desired)
    assert_isolated(result, {"alpha": "target-reload-failed"}, OTHERS, secrets_of(database_url))
    marker.unlink()  # the target is back
    applied = assert_converges(run_cli, desired)
    assert "> alpha: done: redistributed to faulty" in applied.stdout  # the certificate issued before, not a new one
    record("target down (reload fails)", failed=["alpha"], done=OTHERS, converged=True)
