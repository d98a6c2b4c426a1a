"""`apply --workers N`: the changes of one apply run in N processes, coordinated through PostgreSQL.

The real command, a real PostgreSQL, the local KMS and CA, files targets. What must hold: every
certificate issued exactly once, in one apply run, by more than one process; the next plan empty; the
same output and exit code as with one process, a failing change and a dying worker included.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from e2e.conftest import Runner

ISSUED_LINE = re.compile(r"^\+ (c\d\d): done: issued serial [0-9a-f]+$")


def declarations(count: int, *, targets: dict[str, Any] | None = None, target_of: dict[str, str] | None = None,
                 issuer: dict[str, Any] | None = None) -> str:  # fmt: skip
    doc = {
        "kms": {"local": {}},
        "issuers": {"internal": issuer or {"local_ca": {"common_name": "Workers Test CA", "lifetime": "90d"}}},
        "targets": {"deploy": {"files": {"dir": ".certreconcile/deploy"}}, **(targets or {})},
        "certificates": [
            {
                "name": f"c{index:02d}",
                "domains": [f"c{index}.example.com"],
                "issuer": "internal",
                "targets": [(target_of or {}).get(f"c{index:02d}", "deploy")],
            }
            for index in range(count)
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def worker_shares(stderr: str) -> list[tuple[int, int]]:
    """(changes, pid) of each worker, from the line `apply: N worker processes: ...`."""
    line = next(line for line in stderr.splitlines() if line.startswith("apply: "))
    return [(int(changes), int(pid)) for changes, pid in re.findall(r"(\d+) changes? \(pid (\d+)\)", line)]


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "certs"
    path.mkdir()
    return path


def test_two_workers_issue_every_certificate_once(directory: Path, run_cli: Runner, database_url: str) -> None:
    (directory / "certificates.yaml").write_text(declarations(8))
    applied = run_cli("apply", "--dir", str(directory), "--auto-approve", "--workers", "2", "--concurrency", "2",
                      check_code=0)  # fmt: skip

    # The output of one process: a line per change in plan order, then the summary.
    lines = applied.stdout.splitlines()
    summary = lines.index("Apply complete: 8 done, 0 skipped, 0 failed.")
    issued = [ISSUED_LINE.match(line) for line in lines[summary - 8 : summary]]
    assert [match.group(1) for match in issued if match] == [f"c{index:02d}" for index in range(8)]
    # More than one process took changes, and together they took each exactly once.
    shares = worker_shares(applied.stderr)
    assert len(shares) == 2, applied.stderr
    assert len({pid for _, pid in shares}) == 2
    assert all(changes >= 1 for changes, _ in shares)
    assert sum(changes for changes, _ in shares) == 8

    # Exactly once: one certificate per name, one `issued` audit row each, all in the one run of this apply.
    assert rows(database_url, "SELECT name, count(*) FROM Certificate GROUP BY name ORDER BY name") == [
        (f"c{index:02d}", 1) for index in range(8)
    ]
    runs = rows(database_url, "SELECT id, outcome FROM ApplyRun")
    assert [outcome for _, outcome in runs] == ["success"]
    assert rows(database_url, "SELECT DISTINCT run_id FROM ApplyStep") == [(runs[0][0],)]
    audited = rows(database_url, "SELECT name, actor FROM CertAudit WHERE action = 'issued' ORDER BY name")
    assert audited == [(f"c{index:02d}", "user:e2e-tester") for index in range(8)]
    run_cli("plan", "--dir", str(directory), "--detailed-exitcode", check_code=0)

    # A later apply with one process prints the same lines (and no worker line).
    (directory / "certificates.yaml").write_text(declarations(10))
    single = run_cli("apply", "--dir", str(directory), "--auto-approve", check_code=0)
    assert [ISSUED_LINE.match(line) is not None for line in single.stdout.splitlines()[-3:-1]] == [True, True]
    assert single.stdout.splitlines()[-1] == "Apply complete: 2 done, 0 skipped, 0 failed."
    assert "worker processes" not in single.stderr


def test_a_saved_plan_with_workers_reports_each_worker_in_json(directory: Path, run_cli: Runner,
                                                              tmp_path: Path) -> None:  # fmt: skip
    (directory / "certificates.yaml").write_text(declarations(4))
    saved = tmp_path / "plan.json"
    run_cli("plan", "--dir", str(directory), "--out", str(saved), check_code=0)
    applied = run_cli("apply", str(saved), "--dir", str(directory), "--workers", "2", "--concurrency", "1",
                      "--target-concurrency", "2", "--format", "json", check_code=0)  # fmt: skip
    document = json.loads(applied.stdout)
    assert document["outcome"] == "success"
    assert [r["name"] for r in document["results"]] == ["c00", "c01", "c02", "c03"]
    assert {r["outcome"] for r in document["results"]} == {"done"}
    workers = document["workers"]
    assert len(workers) == 2
    assert sum(w["changes"] for w in workers) == 4
    assert all(w["changes"] >= 1 and w["cpu_seconds"] > 0 for w in workers)
    # The saved plan is stale now: refused before any worker starts, as with one process.
    stale = run_cli("apply", str(saved), "--dir", str(directory), "--workers", "2", check_code=1)
    assert "error[stale-plan]" in stale.stderr, stale.stderr


def test_a_failing_change_in_a_worker_exits_as_with_one_process(directory: Path, run_cli: Runner) -> None:
    blocker = directory / "not-a-directory"
    blocker.write_text("a file where the target wants a directory\n")
    broken = {"broken": {"files": {"dir": str(blocker / "deploy")}}}
    (directory / "certificates.yaml").write_text(declarations(4, targets=broken, target_of={"c01": "broken"}))
    applied = run_cli("apply", "--dir", str(directory), "--auto-approve", "--workers", "2", "--concurrency", "1",
                      check_code=1)  # fmt: skip
    assert "Apply complete: 3 done, 0 skipped, 1 failed." in applied.stdout
    assert re.search(r"^\+ c01: failed: ", applied.stdout, re.MULTILINE)
    assert "error[apply-failed]: c01 failed (the other changes were applied" in applied.stderr
    assert "Traceback" not in applied.stderr


def test_a_worker_that_dies_fails_the_change_it_held(directory: Path, run_cli: Runner, database_url: str) -> None:
    # c00's target reloads by killing its caller: the worker process applying c00 dies mid-change.
    killer = {"killer": {"files": {"dir": ".certreconcile/killer", "reload_command": "sh -c 'kill -9 $PPID'"}}}
    (directory / "certificates.yaml").write_text(declarations(5, targets=killer, target_of={"c00": "killer"}))
    applied = run_cli("apply", "--dir", str(directory), "--auto-approve", "--workers", "2", "--concurrency", "1",
                      check_code=1)  # fmt: skip
    assert "Apply complete: 4 done, 0 skipped, 1 failed." in applied.stdout, applied.stdout
    failed = re.search(r"^\+ c00: failed: (.*)$", applied.stdout, re.MULTILINE)
    assert failed is not None
    died = r"error\[worker-died\]: the worker process \d+ ended \(exit code -9\) while applying it"
    assert re.search(died, failed[1]), failed[1]
    assert "error[apply-failed]: c00 failed" in applied.stderr
    shares = worker_shares(applied.stderr)
    assert sorted(changes for changes, _ in shares) == [0, 4]  # the survivor applied all the others
    # Audited as failed, not backed off: the next apply finishes c00 (its certificate exists: a redistribution).
    assert rows(database_url, "SELECT count(*) FROM CertAudit WHERE name = 'c00' AND action = 'failed'") == [(1,)]
    (directory / "certificates.yaml").write_text(declarations(5))
    again = run_cli("apply", "--dir", str(directory), "--auto-approve", check_code=0)
    assert "c00: done" in again.stdout


def test_workers_must_be_positive(directory: Path, run_cli: Runner, database_url: str) -> None:
    (directory / "certificates.yaml").write_text(declarations(2))
    for value in ("0", "-1"):
        refused = run_cli("apply", "--dir", str(directory), "--auto-approve", "--workers", value, check_code=1)
        assert "Invalid value for '--workers'" in refused.stderr
        assert "Traceback" not in refused.stderr
    assert rows(database_url, "SELECT count(*) FROM ApplyRun") == [(0,)]


def test_http01_standalone_is_refused_before_anything_changes(
    directory: Path, run_cli: Runner, database_url: str
) -> None:
    acme = {"acme": {"directory": "https://127.0.0.1:9/dir", "http01": {"standalone": {"listen": "127.0.0.1:5002"}}}}
    (directory / "certificates.yaml").write_text(declarations(2, issuer=acme))
    refused = run_cli("apply", "--dir", str(directory), "--auto-approve", "--workers", "2", check_code=1)
    assert "error[workers-http01-standalone]: apply --workers: issuer 'internal' answers HTTP-01 on a standalone" in (
        refused.stderr
    )
    assert "(use --workers 1, or give the issuer http01.webroot" in refused.stderr
    assert rows(database_url, "SELECT count(*) FROM ApplyRun") == [(0,)]
