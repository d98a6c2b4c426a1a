"""The command line imports what the command needs, not more (timing is the benchmark's: bench/cli_plan.py).

Every command is one process: a module imported for nothing is paid by every `certreconcile --help`,
every `plan` in CI. These tests run the real command in a fresh interpreter and look at
``sys.modules`` when it is done.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Nothing of the engine, the state store, the SDKs or the renderers: --help only builds the typer app.
NOT_FOR_HELP = (
    "pydantic",
    "psycopg",
    "yaml",
    "yaml_rs",
    "git",
    "cryptography",
    "boto3",
    "botocore",
    "hvac",
    "acme",
    "josepy",
    "httpx",
    "rich",
    "prometheus_client",
    "certreconcile.desired",
    "certreconcile.actual",
    "certreconcile.plan",
    "certreconcile.render",
    "certreconcile.wiring",
    "certreconcile.engine",
    "certreconcile.plugins",
    "certreconcile.apply",
    "certreconcile.crypto",
)

# `plan` reads the declarations and the state and renders: no issuing, no SDK, no git outside a checkout.
NOT_FOR_PLAN = (
    "git",
    "cryptography.x509",
    "boto3",
    "botocore",
    "hvac",
    "acme",
    "josepy",
    "httpx",
    "rich",
    "prometheus_client",
    "certreconcile.apply.executor",
    "certreconcile.apply.issuance",
    "certreconcile.crypto.keys",
    "certreconcile.plugins.issuers.local_ca",
    "certreconcile.plugins.targets.files",
    # the wire models of kinds the declarations do not use (local_ca, files and the local KMS only)
    "certreconcile.plugins.issuers.acme_config",
    "certreconcile.plugins.issuers.vault_pki_config",
    "certreconcile.plugins.kms.aws_config",
    "certreconcile.plugins.kms.gcp_config",
    "certreconcile.plugins.dns01",
    "certreconcile.plugins.targets.webhook_config",
    "certreconcile.plugins.targets.ssh_config",
    "certreconcile.plugins.targets.nginx_config",
)

# Runs the command in-process in a fresh interpreter, then writes the imported modules to argv[1].
PROBE = """
import contextlib, io, json, sys
from certreconcile.cli.main import main
out = io.StringIO()
code = None
with contextlib.redirect_stdout(out):
    try:
        main(sys.argv[2:])
    except SystemExit as exc:
        code = exc.code
with open(sys.argv[1], "w") as sink:
    json.dump({"code": code, "stdout": out.getvalue(), "modules": sorted(sys.modules)}, sink)
"""


def imported_by(args: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> tuple[object, str, set[str]]:
    report = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(report), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text())
    return result["code"], result["stdout"], set(result["modules"])


def loaded(modules: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(name for name in forbidden if any(m == name or m.startswith(name + ".") for m in modules))


def test_importing_the_command_line_loads_no_engine(tmp_path: Path) -> None:
    report = tmp_path / "modules.json"
    code = f"import json, sys, certreconcile.cli.main; json.dump(sorted(sys.modules), open({str(report)!r}, 'w'))"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert loaded(set(json.loads(report.read_text())), NOT_FOR_HELP) == []


@pytest.mark.parametrize("args", [["--help"], ["plan", "--help"], ["apply", "--help"], ["db", "--help"]])
def test_help_loads_no_engine(args: list[str], tmp_path: Path) -> None:
    code, stdout, modules = imported_by(args, tmp_path)
    assert code == 0
    assert "Usage:" in stdout
    # typer itself converts a command's options with pydantic (its own dependency), not the top-level help
    forbidden = NOT_FOR_HELP if args == ["--help"] else tuple(name for name in NOT_FOR_HELP if name != "pydantic")
    assert loaded(modules, forbidden) == []


def write_desired(directory: Path, deploy: Path) -> None:
    directory.mkdir()
    (directory / "desired.yaml").write_text(
        "kms:\n  local: {}\n"
        "issuers:\n  ca:\n    local_ca: {common_name: imports test CA}\n"
        f"targets:\n  web:\n    files: {{dir: {deploy}}}\n"
        "policy:\n  allowed_domains: [example.test]\n"
        "certificates:\n  - name: shop\n    domains: [example.test]\n    issuer: ca\n    targets: [web]\n"
    )


def test_plan_loads_no_issuing_machinery_no_sdk_and_no_git_outside_a_checkout(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    desired = tmp_path / "desired"
    write_desired(desired, tmp_path / "deploy")
    code, stdout, modules = imported_by(["plan", "--dir", str(desired)], tmp_path, env=cli_env)
    assert code == 0, stdout
    assert "+ issue shop" in stdout  # the plan ran, against the real database
    assert "psycopg" in modules
    assert loaded(modules, NOT_FOR_PLAN) == []


def test_plan_in_a_checkout_still_records_the_commit(cli_env: dict[str, str], tmp_path: Path) -> None:
    """The git probe skips GitPython outside a repository only: in one, plan reads HEAD as before."""
    git = pytest.importorskip("git")
    from helpers import require_binary

    require_binary("git")
    desired = tmp_path / "repo" / "desired"
    desired.parent.mkdir()
    write_desired(desired, tmp_path / "deploy")
    repo = git.Repo.init(desired.parent)
    repo.index.add([str(desired / "desired.yaml")])
    commit = repo.index.commit("declarations", author=git.Actor("Dev", "dev@example.test"))
    code, stdout, modules = imported_by(["plan", "--dir", str(desired), "--format", "json"], tmp_path, env=cli_env)
    assert code == 0, stdout
    assert "git" in modules
    assert json.loads(stdout)["git_commit"] == commit.hexsha
