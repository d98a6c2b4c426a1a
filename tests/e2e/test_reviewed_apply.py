"""`apply --expect-changes DIGEST --reviewed-plan COMMENTS`: apply only what the pull request's plan showed.

The PR job writes the sticky comments (`plan --comment-dir`); after the merge, apply re-plans and goes ahead
only for the reviewed change set, or one that differs by renewals that fell due in between.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.conftest import Runner
from helpers import require_binary

DIGEST = re.compile(r"<!-- certreconcile-change-digest: ([0-9a-f]{64}) -->")
# Issued with a 1h lifetime, it falls due about 30 minutes later. Every command runs on the test
# clock (CERTRECONCILE_TEST_NOW): the tests move it on instead of waiting.
SOON_RENEW_BEFORE = "30m"
FALLEN_DUE = timedelta(minutes=45)


def declarations(*certificates: dict[str, Any]) -> str:
    doc = {
        "kms": {"local": {}},
        "issuers": {
            "internal": {"local_ca": {"common_name": "Review Test CA", "lifetime": "90d"}},
            "short": {"local_ca": {"common_name": "Short Test CA", "lifetime": "1h"}},
        },
        "targets": {"deploy": {"files": {"dir": ".certreconcile/deploy"}}},
        "policy": {"allowed_domains": ["example.com", "*.example.com"]},
        "certificates": list(certificates),
    }
    return yaml.safe_dump(doc, sort_keys=False)


def cert(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "domains": [f"{name}.example.com"], "issuer": "internal", "targets": ["deploy"], **extra}


class Repo:
    def __init__(self, root: Path, run_cli: Runner, cli_env: dict[str, str]) -> None:
        self.root = root
        self.certs = root / "certs"
        self.run_cli = run_cli
        self.cli_env = cli_env
        self.now = datetime.now(UTC).replace(microsecond=0)  # the commands' clock; tests move it

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=self.root, capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip()

    def commit(self, text: str) -> str:
        (self.certs / "certificates.yaml").write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "change")
        return self.git("rev-parse", "HEAD")

    def cli(self, *args: str, code: int | None = None) -> subprocess.CompletedProcess[str]:
        env = {**self.cli_env, "CERTRECONCILE_TEST_NOW": self.now.isoformat()}
        return self.run_cli(*args, "--dir", str(self.certs), check_code=code, env=env)

    def review(self) -> tuple[str, Path]:
        """What the PR job does: plan into comment files; what the apply job does: read them back."""
        comments = self.root.parent / "comments"
        self.cli("plan", "--comment-dir", str(comments), code=0)
        parts = sorted(comments.glob("comment-*.md"), key=lambda p: int(p.stem.split("-")[1]))
        reviewed = self.root.parent / "reviewed.md"
        reviewed.write_text("\n".join(p.read_text() for p in parts))
        match = DIGEST.search(reviewed.read_text())
        assert match is not None
        return match.group(1), reviewed

    def planned(self) -> list[tuple[str, str]]:
        plan = json.loads(self.cli("plan", "--format", "json", code=0).stdout)
        return sorted((c["action"], c["name"]) for c in plan["changes"])

    def audit(self) -> list[dict[str, Any]]:
        return json.loads(self.cli("audit", "--format", "json", code=0).stdout)  # type: ignore[no-any-return]


@pytest.fixture
def repo(tmp_path: Path, run_cli: Runner, cli_env: dict[str, str]) -> Repo:
    require_binary("git")
    r = Repo(tmp_path / "repo", run_cli, cli_env)
    r.certs.mkdir(parents=True)
    r.git("init", "-q", "-b", "main")
    r.git("config", "user.email", "alice@example.com")
    r.git("config", "user.name", "Alice")
    r.git("config", "commit.gpgsign", "false")
    (r.root / ".gitignore").write_text(".certreconcile/\n")
    return r


def test_the_reviewed_change_set_applies(repo: Repo) -> None:
    repo.commit(declarations(cert("shop"), cert("api")))
    digest, reviewed = repo.review()
    applied = repo.cli("apply", "--auto-approve", "--expect-changes", digest, "--reviewed-plan", str(reviewed), code=0)
    assert "is the reviewed one" in applied.stderr
    assert {e["name"] for e in repo.audit() if e["action"] == "issued"} == {"shop", "api"}
    # Nothing left to do: the empty change set has its own digest, and it is not the reviewed one.
    again = repo.cli("apply", "--auto-approve", "--expect-changes", digest, "--reviewed-plan", str(reviewed), code=1)
    assert "- issue api (reviewed, no longer planned)" in again.stderr
    assert "error[plan-differs-from-review]" in again.stderr


def test_a_different_declaration_is_refused_and_nothing_changes(repo: Repo) -> None:
    repo.commit(declarations(cert("shop"), cert("old")))
    digest, reviewed = repo.review()
    # Merged after more commits than the ones reviewed: shop's domains, one more name, one less.
    repo.commit(declarations(cert("shop", domains=["shop.example.com", "www.shop.example.com"]), cert("api")))
    refused = repo.cli("apply", "--auto-approve", "--expect-changes", digest, "--reviewed-plan", str(reviewed), code=1)
    assert "+ issue api (new since the review)" in refused.stderr
    assert "- issue old (reviewed, no longer planned)" in refused.stderr
    assert "~ issue shop: domains changed" in refused.stderr
    assert "error[plan-differs-from-review]: refusing to apply: 3 changes not in the reviewed plan" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert repo.audit() == []
    status = json.loads(repo.cli("status", "--format", "json", code=0).stdout)
    # No certificate exists: status lists the declared names as not issued, pending.
    assert [(c["name"], c["status"], c["fingerprint"], c["pending"]) for c in status["certificates"]] == [
        ("api", "not-issued", None, ["issue"]),
        ("shop", "not-issued", None, ["issue"]),
    ]
    # Without the reviewed change set the digest alone decides, and says so.
    bare = repo.cli("apply", "--auto-approve", "--expect-changes", digest, code=1)
    assert "error[plan-differs-from-review]" in bare.stderr
    assert "--reviewed-plan" in bare.stderr
    # A reviewed-plan file of another change set is no proof of review.
    other = repo.cli("apply", "--auto-approve", "--expect-changes", "0" * 64, "--reviewed-plan", str(reviewed), code=1)
    assert "error[reviewed-plan-mismatch]" in other.stderr
    assert repo.audit() == []


def test_a_renewal_that_fell_due_since_the_review_is_applied(repo: Repo) -> None:
    soon = cert("soon", issuer="short", renew_before=SOON_RENEW_BEFORE)
    repo.commit(declarations(soon))
    repo.cli("apply", "--auto-approve", code=0)

    repo.commit(declarations(soon, cert("shop")))
    digest, reviewed = repo.review()
    assert repo.planned() == [("issue", "shop")]  # at review time, soon is not due yet
    repo.now += FALLEN_DUE  # merged later: soon fell due in between
    assert repo.planned() == [("issue", "shop"), ("rotate", "soon")]

    applied = repo.cli("apply", "--auto-approve", "--expect-changes", digest, "--reviewed-plan", str(reviewed), code=0)
    assert "only by renewals that fell due since" in applied.stderr
    assert "+ rotate soon (renewal due since the review)" in applied.stderr
    names = {(e["action"], e["name"]) for e in repo.audit()}
    assert ("issued", "shop") in names
    assert len([e for e in repo.audit() if e["name"] == "soon" and e["action"] in ("issued", "renewed")]) >= 2


def test_only_renewals_leaves_declared_changes_for_review(repo: Repo) -> None:
    soon = cert("soon", issuer="short", renew_before=SOON_RENEW_BEFORE)
    repo.commit(declarations(soon))
    repo.cli("apply", "--auto-approve", code=0)
    repo.commit(declarations(soon, cert("shop")))
    early = repo.cli("apply", "--auto-approve", "--only-renewals", code=0)
    assert "+ issue shop" in early.stderr
    assert not [e for e in repo.audit() if e["name"] == "shop"]
    assert repo.planned() == [("issue", "shop")]  # soon is not due yet
    repo.now += FALLEN_DUE
    assert ("rotate", "soon") in repo.planned()
    repo.cli("apply", "--auto-approve", "--only-renewals", code=0)
    assert len([e for e in repo.audit() if e["name"] == "soon" and e["action"] in ("issued", "renewed")]) >= 2
    assert not [e for e in repo.audit() if e["name"] == "shop"]
    assert repo.planned() == [("issue", "shop")]
    bad = repo.cli("apply", "--auto-approve", "--only-renewals", "--expect-changes", "0" * 64, code=1)
    assert "error[usage]" in bad.stderr


def test_invalid_declarations_still_get_a_comment(repo: Repo) -> None:
    comments = repo.root.parent / "comments"
    repo.commit(declarations(cert("shop", issuer="nowhere")))
    failed = repo.cli("plan", "--comment-dir", str(comments), code=1)
    assert "nowhere" in failed.stderr
    (only,) = comments.glob("comment-*.md")
    body = only.read_text()
    assert body.startswith("<!-- certreconcile-plan -->")
    assert "nowhere" in body
    assert "change-digest" not in body  # nothing an apply could be bound to
