"""The GitHub workflows: the project's CI and the ready-to-copy ones for a certificate repository.

actionlint (with shellcheck on every `run:` script when shellcheck is installed) must pass on all of
them, and the rules that make them safe to copy are checked structurally: every action pinned to a
full commit SHA, `permissions` on every workflow and job, applies never cancelled half-way. The examples
install certreconcile from a pinned commit that exists in this repository (pip builds it with the very
requirement the workflows use) and whose CLI knows every option they pass; each job says which runner
it needs (the plan on a hosted runner, apply and renew on a self-hosted runner inside the network).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import require_binary
from kms_servers import find_binary

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted([*ROOT.glob(".github/workflows/*.yml"), *ROOT.glob("examples/github-workflows/*.yml")])
EXAMPLES = ROOT / "examples" / "github-workflows"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
PINNED_LINE = re.compile(r"uses: \S+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")
IDS = [str(path.relative_to(ROOT)) for path in WORKFLOWS]
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yml"))
INSTALL = 'python -m pip install --quiet "certreconcile @ git+${CERTRECONCILE_GIT_URL}@${CERTRECONCILE_COMMIT}"'


def load(path: Path) -> dict[Any, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def triggers(doc: dict[Any, Any]) -> dict[str, Any]:
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
    assert isinstance(on, dict)
    return on


def test_the_examples_are_there() -> None:
    assert {p.name for p in EXAMPLES.glob("*.yml")} == {
        "certreconcile-plan.yml",
        "certreconcile-apply.yml",
        "certreconcile-renew.yml",
    }


def test_actionlint_passes_on_every_workflow() -> None:
    actionlint = find_binary("actionlint")  # fails on CI when missing, skips elsewhere
    result = subprocess.run(
        [actionlint, "-color=false", *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=IDS)
def test_actions_are_pinned_to_full_shas(path: Path) -> None:
    doc = load(path)
    for job in doc["jobs"].values():
        for step in job.get("steps", []):
            if "uses" in step:
                assert PINNED.match(step["uses"]), f"{path.name}: {step['uses']} is not pinned to a commit SHA"
    for line in path.read_text().splitlines():
        if re.match(r"\s*(- )?uses:", line):
            assert PINNED_LINE.search(line), f"{path.name}: say which release the SHA is: {line.strip()}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=IDS)
def test_permissions_are_explicit_and_least(path: Path) -> None:
    doc = load(path)
    assert "permissions" in doc, f"{path.name}: no top-level permissions"
    for name, job in doc["jobs"].items():
        permissions = job.get("permissions", doc["permissions"])
        assert isinstance(permissions, dict), f"{path.name}:{name}: permissions must be a map, not {permissions!r}"
        assert "write-all" not in str(permissions)
        uses = " ".join(str(step.get("uses", "")) + str(step.get("run", "")) for step in job.get("steps", []))
        if permissions.get("id-token") == "write":
            assert "configure-aws-credentials" in uses, f"{path.name}:{name}: id-token without OIDC"
        if permissions.get("pull-requests") == "write":
            assert "/comments" in uses, f"{path.name}:{name}: pull-requests: write without commenting"
        if permissions.get("statuses") == "write":
            assert "/statuses/" in uses, f"{path.name}:{name}: statuses: write without a commit status"
        assert set(permissions.values()) <= {"read", "write", "none"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=IDS)
def test_secrets_only_reach_steps_through_env(path: Path) -> None:
    doc = load(path)
    for job in doc["jobs"].values():
        for step in job.get("steps", []):
            assert "secrets." not in str(step.get("run", "")), f"{path.name}: a secret interpolated into a script"
            assert "${{" not in str(step.get("run", "")), f"{path.name}: an expression inside a script: {step}"


def test_plan_workflow() -> None:
    doc = load(EXAMPLES / "certreconcile-plan.yml")
    assert "pull_request" in triggers(doc)
    text = (EXAMPLES / "certreconcile-plan.yml").read_text()
    assert "--comment-dir" in text
    assert "<!-- certreconcile-plan -->" in text  # finds its own comments by the marker
    assert "--method PATCH" in text
    assert "--method DELETE" in text
    (job,) = doc["jobs"].values()
    assert job["permissions"] == {"contents": "read", "pull-requests": "write"}


def test_apply_workflow_is_bound_to_the_review_and_never_cancelled() -> None:
    doc = load(EXAMPLES / "certreconcile-apply.yml")
    assert triggers(doc)["push"]["branches"] == ["main"]
    assert doc["concurrency"] == {"group": "certreconcile-apply", "cancel-in-progress": False}
    text = (EXAMPLES / "certreconcile-apply.yml").read_text()
    assert "--expect-changes" in text
    assert "--reviewed-plan" in text
    (job,) = doc["jobs"].values()
    assert job["permissions"] == {
        "contents": "read",
        "id-token": "write",
        "pull-requests": "write",
        "statuses": "write",
    }


def test_renew_workflow_only_renews_and_queues_with_apply() -> None:
    doc = load(EXAMPLES / "certreconcile-renew.yml")
    assert {"schedule", "workflow_dispatch"} <= set(triggers(doc))
    assert doc["concurrency"] == {"group": "certreconcile-apply", "cancel-in-progress": False}
    assert "--only-renewals" in (EXAMPLES / "certreconcile-renew.yml").read_text()


def test_no_pin_to_a_release_that_does_not_exist() -> None:
    """certreconcile has no registry release: a version pin (the old `certreconcile==0.1.0`) installs nothing."""
    for path in [*EXAMPLE_FILES, ROOT / "README.md"]:
        pins = re.findall(r"certreconcile\s*(?:\[[^\]]*\])?\s*(?:==|~=|>=)\s*[\w.${}]+", path.read_text())
        assert not pins, f"{path.name}: {pins}"


def pinned_commit() -> str:
    commits = {str(load(path)["env"].get("CERTRECONCILE_COMMIT")) for path in EXAMPLE_FILES}
    assert len(commits) == 1, f"the examples pin different commits: {commits}"
    (commit,) = commits
    assert re.fullmatch(r"[0-9a-f]{40}", commit), f"CERTRECONCILE_COMMIT is not a full commit SHA: {commit}"
    return commit


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_examples_install_the_pinned_commit(path: Path) -> None:
    doc = load(path)
    assert pinned_commit() == doc["env"]["CERTRECONCILE_COMMIT"]
    (job,) = doc["jobs"].values()
    installs = [step for step in job["steps"] if "pip install" in str(step.get("run", ""))]
    assert len(installs) == 1, f"{path.name}: one install step"
    assert INSTALL in installs[0]["run"]
    assert installs[0]["env"] == {"CERTRECONCILE_GIT_URL": "${{ vars.CERTRECONCILE_GIT_URL }}"}


def test_each_job_names_the_runner_it_needs() -> None:
    """The plan needs only the read-only role: a hosted runner. Apply and renew reach the database with the
    apply role, the KMS and the agents: a self-hosted runner inside the network."""
    for path in EXAMPLE_FILES:
        doc = load(path)
        (job,) = doc["jobs"].values()
        runs_on = job["runs-on"]
        text = path.read_text()
        comment = text[: text.index("    runs-on:")].rsplit("\n    timeout-minutes", 1)[0].splitlines()[-3:]
        assert any("runner" in line and line.strip().startswith("#") for line in comment), (path.name, comment)
        if path.name == "certreconcile-plan.yml":
            assert isinstance(runs_on, str) and runs_on.startswith("ubuntu-"), runs_on
            assert "CERTRECONCILE_PLAN_DATABASE_URL" in text and "CERTRECONCILE_DATABASE_URL }}" not in text
        else:
            assert isinstance(runs_on, list) and "self-hosted" in runs_on, f"{path.name}: {runs_on}"


def _commands_used(path: Path) -> dict[str, set[str]]:
    """certreconcile subcommand -> the options the workflow passes to it."""
    used: dict[str, set[str]] = {}
    for job in load(path)["jobs"].values():
        for step in job["steps"]:
            script = str(step.get("run", "")).replace("\\\n", " ")
            for command, rest in re.findall(r"(?m)^\s*certreconcile (plan|apply) ([^\n|]*)", script):
                used.setdefault(command, set()).update(re.findall(r"(--[a-z][a-z-]*)", rest))
    return used


def test_the_pinned_commit_builds_and_knows_every_option_the_workflows_pass(tmp_path: Path) -> None:
    """What the workflows' install step does, with this repository as CERTRECONCILE_GIT_URL: pip builds the
    pinned commit (it must exist here, on this history), and that commit's CLI accepts every option used."""
    require_binary("git")
    commit = pinned_commit()
    ancestor = subprocess.run(
        ["git", "-C", str(ROOT), "merge-base", "--is-ancestor", commit, "HEAD"], capture_output=True, check=False
    )
    assert ancestor.returncode == 0, f"{commit} is not in this repository's history"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "CERTRECONCILE_"))}
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path / "wheels"),
         f"certreconcile @ git+file://{ROOT}@{commit}"],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-4000:]
    (wheel,) = (tmp_path / "wheels").glob("certreconcile-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "pinned")
    used: dict[str, set[str]] = {}
    for path in EXAMPLE_FILES:
        for command, options in _commands_used(path).items():
            used.setdefault(command, set()).update(options)
    assert {"plan", "apply"} <= set(used), used
    for command, options in used.items():
        helped = subprocess.run(
            [sys.executable, "-m", "certreconcile", command, "--help"],
            capture_output=True, text=True, timeout=120, check=False,
            env={**env, "PYTHONPATH": str(tmp_path / "pinned"), "COLUMNS": "200", "NO_COLOR": "1"},
        )  # fmt: skip
        assert helped.returncode == 0, helped.stderr
        missing = sorted(option for option in options if option not in helped.stdout)
        assert not missing, f"the pinned commit's `certreconcile {command}` lacks {missing}"
