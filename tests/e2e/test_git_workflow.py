"""GitOps end to end: declarations committed to a git repository, planned by ref, applied, audited by commit."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.conftest import Runner
from helpers import require_binary

EMAIL = "alice@example.com"
TARGETS = {"deploy": {"files": {"dir": ".certreconcile/deploy"}}}


def declarations(*certificates: dict[str, Any]) -> str:
    doc = {
        "kms": {"local": {}},
        "issuers": {"internal": {"local_ca": {"common_name": "Git Test CA", "lifetime": "90d"}}},
        "targets": TARGETS,
        "policy": {"allowed_domains": ["example.com", "*.example.com"]},
        "certificates": list(certificates),
    }
    return yaml.safe_dump(doc, sort_keys=False)


def cert(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "domains": [f"{name}.example.com"], "issuer": "internal", "targets": ["deploy"], **extra}


CHANGE_LINE = r"^  (\S) (issue|rotate|revoke|redistribute|retire) (\S+)$"
SHOP, API, LEGACY = cert("shop"), cert("api", key="rsa-2048"), cert("legacy", on_delete="revoke")


class Repo:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.certs = root / "certs"

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=self.root, capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip()

    def commit(self, text: str, message: str) -> str:
        (self.certs / "certificates.yaml").write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    require_binary("git")
    r = Repo(tmp_path / "repo")
    r.certs.mkdir(parents=True)
    r.git("init", "-q", "-b", "main")
    r.git("config", "user.email", EMAIL)
    r.git("config", "user.name", "Alice")
    r.git("config", "commit.gpgsign", "false")
    (r.root / ".gitignore").write_text(".certreconcile/\n")
    return r


def audit(run_cli: Runner, repo: Repo, *args: str) -> list[dict[str, Any]]:
    events = json.loads(run_cli("audit", "--dir", str(repo.certs), "--format", "json", *args, check_code=0).stdout)
    return sorted(events, key=lambda e: e["id"])


def test_git_workflow(run_cli: Runner, repo: Repo) -> None:
    d = str(repo.certs)
    sha1 = repo.commit(declarations(SHOP, API, LEGACY), "add certificates")

    # Plan from the commit: three new certificates, in every format.
    planned = run_cli("plan", "--dir", d, "--ref", "HEAD", "--detailed-exitcode", check_code=2)
    assert sorted(re.findall(r"^  \+ issue (\S+)", planned.stdout, re.M)) == ["api", "legacy", "shop"]
    markdown = run_cli("plan", "--dir", d, "--ref", "HEAD", "--format", "markdown", check_code=0)
    for name in ("shop", "api", "legacy"):
        assert name in markdown.stdout
    assert "\x1b" not in markdown.stdout
    as_json = json.loads(run_cli("plan", "--dir", d, "--ref", "HEAD", "--format", "json", check_code=0).stdout)
    assert as_json["git_commit"] == sha1
    # A clean checkout is a commit too, without --ref.
    clean = json.loads(run_cli("plan", "--dir", d, "--format", "json", check_code=0).stdout)
    assert clean["git_commit"] == sha1

    # Apply from the clean work tree: the actor is the commit and its author.
    run_cli("apply", "--dir", d, "--auto-approve", check_code=0)
    assert repo.git("status", "--porcelain") == ""  # deployed files are git-ignored
    events = audit(run_cli, repo)
    assert {e["action"] for e in events} >= {"issued", "distributed", "verified"}
    assert {e["actor"] for e in events} == {f"git:{sha1} {EMAIL}"}
    run_cli("plan", "--dir", d, "--ref", "HEAD", "--detailed-exitcode", check_code=0)

    # Commit 2 removes a certificate declared with on_delete: revoke.
    sha2 = repo.commit(declarations(SHOP, API), "drop legacy")
    removal = run_cli("plan", "--dir", d, "--ref", "HEAD", "--detailed-exitcode", check_code=2)
    assert "- revoke legacy" in removal.stdout
    assert re.findall(CHANGE_LINE, removal.stdout, re.M) == [("-", "revoke", "legacy")]
    assert json.loads(run_cli("plan", "--dir", d, "--ref", sha2, "--format", "json").stdout)["git_commit"] == sha2
    # 1 of 3 managed names is more than the destroy threshold's 10%: apply needs the intent, and the exact count.
    assert "error[destroy-needs-intent]" in run_cli("apply", "--dir", d, "--auto-approve", check_code=1).stderr
    run_cli("apply", "--dir", d, "--auto-approve", "--allow-destroy", "1", check_code=0)
    legacy = audit(run_cli, repo, "--name", "legacy")
    assert [e["action"] for e in legacy][-2:] == ["revoked", "retired"]
    assert {e["actor"] for e in legacy[-2:]} == {f"git:{sha2} {EMAIL}"}
    status = json.loads(run_cli("status", "--dir", d, "--format", "json", check_code=0).stdout)
    assert sorted(c["name"] for c in status["certificates"]) == ["api", "shop"]

    # The older commit still reads the older declarations (not the work tree).
    old = run_cli("plan", "--dir", d, "--ref", sha1, "--detailed-exitcode", check_code=2)
    assert re.findall(r"^  \+ issue (\S+)", old.stdout, re.M) == ["legacy"]
    assert json.loads(run_cli("plan", "--dir", d, "--ref", sha1, "--format", "json").stdout)["git_commit"] == sha1

    # A dirty work tree is not a commit: the actor is the user.
    (repo.certs / "certificates.yaml").write_text(declarations(SHOP, API, cert("extra")))
    dirty = json.loads(run_cli("plan", "--dir", d, "--format", "json", check_code=0).stdout)
    assert dirty["git_commit"] is None
    # ...but --ref HEAD still reads the commit, not the edit.
    run_cli("plan", "--dir", d, "--ref", "HEAD", "--detailed-exitcode", check_code=0)
    run_cli("apply", "--dir", d, "--auto-approve", check_code=0)
    extra = audit(run_cli, repo, "--name", "extra")
    assert extra
    assert {e["actor"] for e in extra} == {"user:e2e-tester"}


def test_untracked_file_makes_the_tree_dirty(run_cli: Runner, repo: Repo) -> None:
    d = str(repo.certs)
    repo.commit(declarations(SHOP), "shop")
    (repo.certs / "more.yaml").write_text(yaml.safe_dump({"certificates": [cert("api")]}))
    run_cli("apply", "--dir", d, "--auto-approve", check_code=0)
    assert {e["actor"] for e in audit(run_cli, repo)} == {"user:e2e-tester"}


def test_bad_ref_and_not_a_repository(run_cli: Runner, repo: Repo, tmp_path: Path) -> None:
    repo.commit(declarations(SHOP), "shop")
    missing = run_cli("plan", "--dir", str(repo.certs), "--ref", "no-such-branch", check_code=1)
    assert "error[git-ref-not-found]" in missing.stderr
    outside = tmp_path / "plain"
    outside.mkdir()
    (outside / "c.yaml").write_text(declarations(SHOP))
    not_repo = run_cli("plan", "--dir", str(outside), "--ref", "HEAD", check_code=1)
    assert "error[not-a-git-repository]" in not_repo.stderr
    for result in (missing, not_repo):
        assert "Traceback" not in result.stdout + result.stderr
