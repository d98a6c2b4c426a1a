"""Destructive changes need intent: `apply --allow-destroy N` beyond the destroy threshold (design §5c).

The real command, a real PostgreSQL, local KMS and CA, a files target. A refusal must leave the database
exactly as it was: no journal rows, no state serial bump, no audit rows, no certificate revoked or retired.
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


def declarations(*names: str, revoke: tuple[str, ...] = ()) -> str:
    doc = {
        "kms": {"local": {}},
        "issuers": {"internal": {"local_ca": {"common_name": "Destroy Test CA", "lifetime": "90d"}}},
        "targets": {"deploy": {"files": {"dir": ".certreconcile/deploy"}}},
        "policy": {"allowed_domains": ["example.com", "*.example.com"]},
        "certificates": [
            {
                "name": name,
                "domains": [f"{name}.example.com"],
                "issuer": "internal",
                "targets": ["deploy"],
                "on_delete": "revoke" if name in revoke else "retire",
            }
            for name in names
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def snapshot(url: str) -> dict[str, Any]:
    """Everything an apply could change: the journal, the audit trail, the serial and each certificate's state."""
    with psycopg.connect(url) as conn:
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            for table in ("ApplyRun", "ApplyStep", "CertAudit", "Certificate", "CertRotation", "Distribution")
        }
        return {
            **counts,
            "serial": conn.execute("SELECT serial FROM StateMeta").fetchone(),
            "certificates": conn.execute(
                "SELECT name, status, retired_at FROM Certificate ORDER BY name, id"
            ).fetchall(),
        }


class Desired:
    def __init__(self, directory: Path, run_cli: Runner) -> None:
        self.directory = directory
        self.run_cli = run_cli

    def declare(self, *names: str, revoke: tuple[str, ...] = ()) -> None:
        (self.directory / "certificates.yaml").write_text(declarations(*names, revoke=revoke))

    def cli(self, *args: str, code: int | None = None, env: dict[str, str] | None = None) -> Any:
        return self.run_cli(*args, "--dir", str(self.directory), check_code=code, env=env)

    def managed(self) -> list[str]:
        status = json.loads(self.cli("status", "--format", "json", code=0).stdout)
        return sorted(c["name"] for c in status["certificates"])

    def audit_actions(self, name: str) -> list[str]:
        events = json.loads(self.cli("audit", "--name", name, "--format", "json", code=0).stdout)
        return [e["action"] for e in events]


@pytest.fixture
def desired(tmp_path: Path, run_cli: Runner) -> Desired:
    directory = tmp_path / "certs"
    directory.mkdir()
    return Desired(directory, run_cli)


FOUR = ("shop", "api", "legacy", "blog")


def test_apply_over_the_threshold_needs_the_exact_count(desired: Desired, database_url: str) -> None:
    desired.declare(*FOUR, revoke=("legacy",))
    desired.cli("apply", "--auto-approve", code=0)
    desired.declare("shop", "api", revoke=("legacy",))  # legacy (revoke) and blog (retire) removed: 2 of 4

    as_json = json.loads(desired.cli("plan", "--format", "json", code=0).stdout)
    assert as_json["destroy"] == {
        "count": 2,
        "managed": 4,
        "max_count": 1,
        "max_percent": 10,
        "allow_destroy_required": True,
    }
    markdown = desired.cli("plan", "--format", "markdown", code=0).stdout
    warning = markdown.index("> [!WARNING]\n> **This plan revokes or retires 2 certificates**")
    assert warning < markdown.index("| action | count |") < markdown.index("<details>")
    assert "without `--allow-destroy 2`" in markdown

    before = snapshot(database_url)
    refused = desired.cli("apply", "--auto-approve", code=1)
    assert (
        "error[destroy-needs-intent]: apply refused, nothing was changed: this plan revokes or retires "
        "2 certificates (legacy, blog), more than the destroy threshold allows without intent "
        "(at most 1 certificate and at most 10% of the 4 managed) "
        "(review the destructive changes, then re-run with --allow-destroy 2)"
    ) in refused.stderr
    assert "Traceback" not in refused.stderr
    assert snapshot(database_url) == before

    for wrong in ("1", "3", "0"):
        mismatch = desired.cli("apply", "--auto-approve", "--allow-destroy", wrong, code=1)
        assert f"error[allow-destroy-mismatch]: apply refused, nothing was changed: --allow-destroy {wrong} " in (
            mismatch.stderr
        )
        assert "which revokes or retires 2 certificates (legacy, blog)" in mismatch.stderr
        assert "re-run with --allow-destroy 2" in mismatch.stderr
        assert snapshot(database_url) == before

    applied = desired.cli("apply", "--auto-approve", "--allow-destroy", "2", code=0)
    assert "Apply complete: 2 done, 0 skipped, 0 failed." in applied.stdout
    assert desired.managed() == ["api", "shop"]
    assert desired.audit_actions("legacy")[-2:] == ["revoked", "retired"]
    assert desired.audit_actions("blog")[-1] == "retired"


def test_a_saved_plan_is_judged_again_at_apply(desired: Desired, database_url: str, tmp_path: Path) -> None:
    desired.declare(*FOUR)
    desired.cli("apply", "--auto-approve", code=0)
    desired.declare("shop", "api")
    saved = tmp_path / "plan.json"
    desired.cli("plan", "--out", str(saved), code=0)
    # A saved plan cannot vouch for itself: apply judges with its own threshold and the state.
    document = json.loads(saved.read_text())
    document["destroy"].update(max_count=100, max_percent=100, allow_destroy_required=False)
    saved.write_text(json.dumps(document))

    before = snapshot(database_url)
    refused = desired.cli("apply", str(saved), code=1)
    assert "error[destroy-needs-intent]" in refused.stderr
    assert "--allow-destroy 2" in refused.stderr
    assert "error[allow-destroy-mismatch]" in desired.cli("apply", str(saved), "--allow-destroy", "1", code=1).stderr
    assert snapshot(database_url) == before

    desired.cli("apply", str(saved), "--allow-destroy", "2", code=0)
    assert desired.managed() == ["api", "shop"]


def test_within_the_threshold_no_flag_is_needed(desired: Desired, database_url: str) -> None:
    ten = tuple(f"site{index}" for index in range(10))
    desired.declare(*ten)
    desired.cli("apply", "--auto-approve", code=0)
    desired.declare(*ten[1:])  # 1 of 10: not more than 1, not more than 10%
    markdown = desired.cli("plan", "--format", "markdown", code=0).stdout
    assert "> **This plan revokes or retires 1 certificate**; within the destroy threshold" in markdown
    assert "--allow-destroy" not in markdown
    desired.cli("apply", "--auto-approve", code=0)
    assert desired.managed() == sorted(ten[1:])


def test_the_operator_sets_the_threshold_in_the_environment(
    desired: Desired, database_url: str, cli_env: dict[str, str]
) -> None:
    desired.declare(*FOUR)
    desired.cli("apply", "--auto-approve", code=0)
    desired.declare("shop", "api")
    bad = desired.cli("apply", "--auto-approve", env={**cli_env, "CERTRECONCILE_DESTROY_MAX_PERCENT": "150"}, code=1)
    assert "error[config-invalid]: CERTRECONCILE_DESTROY_MAX_PERCENT='150' is not a whole number from 0 to 100" in (
        bad.stderr
    )
    before = snapshot(database_url)
    count_only = {**cli_env, "CERTRECONCILE_DESTROY_MAX_COUNT": "2"}  # 2 of 4 is still more than 10%
    assert "error[destroy-needs-intent]" in desired.cli("apply", "--auto-approve", env=count_only, code=1).stderr
    assert snapshot(database_url) == before
    wide = {**count_only, "CERTRECONCILE_DESTROY_MAX_PERCENT": "50%"}
    plan = json.loads(desired.cli("plan", "--format", "json", env=wide, code=0).stdout)
    assert plan["destroy"]["allow_destroy_required"] is False
    desired.cli("apply", "--auto-approve", env=wide, code=0)
    assert desired.managed() == ["api", "shop"]


def test_run_applies_the_other_changes_and_leaves_the_destruction(desired: Desired, database_url: str) -> None:
    desired.declare(*FOUR)
    desired.cli("apply", "--auto-approve", code=0)
    desired.declare("shop", "api", "new")  # one to issue, two to retire
    ran = desired.cli("run", "--once", "--apply-changes", "--interval", "1s", code=0)
    assert re.search(
        r"not applied: 2 destructive changes \(blog, legacy\) exceed the destroy threshold \(at most 1 certificate "
        r"and at most 10% of the 4 managed\); run does not revoke or retire them: review the plan and run "
        r"`certreconcile apply --allow-destroy 2`",
        ran.stderr,
    ), ran.stderr
    assert "2 declaration change(s) not applied" in ran.stderr
    assert desired.managed() == ["api", "blog", "legacy", "new", "shop"]
    assert "retired" not in desired.audit_actions("blog")
    desired.cli("apply", "--auto-approve", "--allow-destroy", "2", code=0)
    assert desired.managed() == ["api", "new", "shop"]
