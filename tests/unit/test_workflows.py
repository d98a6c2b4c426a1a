"""The GitHub workflows: the project's CI and the ready-to-copy ones for a certificate repository.

actionlint (with shellcheck on every `run:` script when shellcheck is installed) must pass on all of
them, and the rules that make them safe to copy are checked structurally: every action pinned to a
full commit SHA, `permissions` on every workflow and job, applies never cancelled half-way.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kms_servers import find_binary

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted([*ROOT.glob(".github/workflows/*.yml"), *ROOT.glob("examples/github-workflows/*.yml")])
EXAMPLES = ROOT / "examples" / "github-workflows"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
PINNED_LINE = re.compile(r"uses: \S+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")
IDS = [str(path.relative_to(ROOT)) for path in WORKFLOWS]


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
