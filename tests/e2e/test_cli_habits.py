"""CLI habits through the real command: one --format vocabulary, status --fail-on, confirmations of rotate
and revoke on a terminal, CERTRECONCILE_DIR, `show PLANFILE`, and a directory without git."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from e2e.conftest import Runner
from e2e.test_cli_cycle import snapshot

ROOT = Path(__file__).resolve().parents[2]

# Every command with --format, and the vocabulary it takes: text|json everywhere, plus markdown for plans.
FORMAT_COMMANDS = {
    "validate": (["validate"], "'text', 'json'"),
    "plan": (["plan"], "'text', 'markdown', 'json'"),
    "apply": (["apply"], "'text', 'json'"),
    "status": (["status"], "'text', 'json'"),
    "audit": (["audit"], "'text', 'json'"),
    "audit verify": (["audit", "verify"], "'text', 'json'"),
    "rotate": (["rotate", "shop"], "'text', 'json'"),
    "revoke": (["revoke", "shop"], "'text', 'json'"),
    "kms rewrap": (["kms", "rewrap"], "'text', 'json'"),
    "db upgrade": (["db", "upgrade"], "'text', 'json'"),
    "check": (["check"], "'text', 'json'"),
    "import": (["import", "shop", "--cert", "c.pem", "--key", "k.pem"], "'text', 'json'"),
    "show": (["show", "plan.json"], "'text', 'markdown', 'json'"),
}


@pytest.fixture
def desired(tmp_path: Path) -> Path:
    target = tmp_path / "desired"
    shutil.copytree(ROOT / "examples" / "desired-state", target, ignore=shutil.ignore_patterns(".certreconcile"))
    return target


@pytest.mark.parametrize("command", FORMAT_COMMANDS.values(), ids=FORMAT_COMMANDS.keys())
@pytest.mark.parametrize("value", ["yaml", "table"])
def test_format_is_one_vocabulary_and_a_usage_error_lists_it(
    run_cli: Runner, desired: Path, database_url: str, command: tuple[list[str], str], value: str
) -> None:
    args, choices = command
    before = snapshot(database_url)
    where = [] if args[0] == "show" else ["--dir", str(desired)]  # show reads only its file
    result = run_cli(*args, *where, "--format", value, check_code=1)
    assert "Usage:" in result.stderr
    assert "Invalid value for '--format'" in result.stderr
    assert f"{value!r} is not one of {choices}" in result.stderr
    assert result.stdout == ""
    assert snapshot(database_url) == before


def test_help_shows_the_choices(run_cli: Runner) -> None:
    assert "--format <text|json>" in run_cli("status", "--help", check_code=0).stdout
    assert "--format <text|markdown|json>" in run_cli("show", "--help", check_code=0).stdout


def test_certreconcile_dir_is_honoured_like_dir(run_cli: Runner, cli_env: dict[str, str], desired: Path,
                                               tmp_path: Path) -> None:  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**cli_env, "CERTRECONCILE_DIR": str(desired)}
    assert run_cli("validate", env=env, cwd=elsewhere, check_code=0).stdout.startswith("Valid: 4 certificates")
    run_cli("apply", "--auto-approve", env=env, cwd=elsewhere, check_code=0)
    status = json.loads(run_cli("status", "--format", "json", env=env, cwd=elsewhere, check_code=0).stdout)
    assert len(status["certificates"]) == 4
    assert (desired / ".certreconcile" / "deploy" / "web").is_dir()  # relative target dirs: from the env's dir
    # --dir wins over the variable
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "c.yaml").write_text("certificates: 5\n")
    assert run_cli("validate", "--dir", str(broken), env=env, check_code=1).returncode == 1


def test_show_prints_a_saved_plan_as_plan_does(run_cli: Runner, cli_env: dict[str, str], desired: Path,
                                               tmp_path: Path) -> None:  # fmt: skip
    d = str(desired)
    saved = tmp_path / "plan.json"
    planned = run_cli("plan", "--dir", d, "--out", str(saved), check_code=0)
    # without a database: show reads only the file
    offline = {k: v for k, v in cli_env.items() if k != "CERTRECONCILE_DATABASE_URL"}
    offline["CERTRECONCILE_DATA_DIR"] = str(tmp_path / "no-state-here")
    shown = run_cli("show", str(saved), env=offline, check_code=0)
    assert shown.stdout == planned.stdout
    assert "Plan: 4 to issue" in shown.stdout
    assert json.loads(run_cli("show", str(saved), "--format", "json", env=offline, check_code=0).stdout) == (
        json.loads(saved.read_text())
    )
    assert "<details>" in run_cli("show", str(saved), "--format", "markdown", env=offline, check_code=0).stdout
    assert not (tmp_path / "no-state-here").exists()
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    bad = run_cli("show", str(garbage), env=offline, check_code=1)
    assert "error[plan-file-invalid]" in bad.stderr and "plan --out FILE" in bad.stderr
    missing = run_cli("show", str(tmp_path / "missing.json"), env=offline, check_code=1)
    assert "error[plan-file-invalid]" in missing.stderr


def _at(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_status_fail_on_exits_1_naming_the_certificates(run_cli: Runner, cli_env: dict[str, str],
                                                       desired: Path) -> None:  # fmt: skip
    d = str(desired)
    before = run_cli("status", "--dir", d, "--fail-on", "pending", check_code=1)
    assert "status --fail-on: pending: api, shop, status, wildcard-internal" in before.stderr
    assert "pending" in before.stdout  # the inventory is still printed
    run_cli("apply", "--dir", d, "--auto-approve", check_code=0)
    everything = ["--fail-on", "expiring,expired", "--fail-on", "unverified", "--fail-on", "pending"]
    clean = run_cli("status", "--dir", d, *everything, check_code=0)
    assert "fail-on" not in clean.stderr
    # wildcard-internal lives 7 days (renewal due after two thirds): expiring at +5 days, expired at +8
    soon = {**cli_env, "CERTRECONCILE_TEST_NOW": _at(5)}
    expiring = run_cli("status", "--dir", d, "--fail-on", "expiring", "--format", "json", env=soon, check_code=1)
    assert "status --fail-on: expiring: wildcard-internal" in expiring.stderr
    assert json.loads(expiring.stdout)["certificates"]  # still one JSON document on stdout
    run_cli("status", "--dir", d, "--fail-on", "expired", env=soon, check_code=0)
    later = {**cli_env, "CERTRECONCILE_TEST_NOW": _at(8)}
    expired = run_cli("status", "--dir", d, "--fail-on", "expired", env=later, check_code=1)
    assert "status --fail-on: expired: wildcard-internal" in expired.stderr
    # a target declared and never served: unverified
    certs = desired / "certificates.yaml"
    certs.write_text(certs.read_text().replace("targets: [web]\n", "targets: [web, internal]\n", 1))
    unverified = run_cli("status", "--dir", d, "--fail-on", "unverified", check_code=1)
    assert "status --fail-on: unverified: shop" in unverified.stderr


def test_status_fail_on_refuses_an_unknown_state(run_cli: Runner, desired: Path) -> None:
    result = run_cli("status", "--dir", str(desired), "--fail-on", "expired,late", check_code=1)
    assert "Invalid value for '--fail-on': 'late' is not one of expiring, expired, unverified, pending" in result.stderr
    assert result.stdout == ""


def run_on_terminal(args: list[str], env: dict[str, str], prompt: bytes, answer: bytes | None) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal; type ``answer`` when ``prompt`` shows (None: never answer)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "certreconcile", *args],
                               stdin=terminal, stdout=terminal, stderr=terminal, env=env, close_fds=True)  # fmt: skip
    os.close(terminal)
    output = b""
    answered = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if answer is not None and not answered and prompt in output:
                os.write(controller, answer)
                answered = True
        elif process.poll() is not None:
            break
    code = process.wait(timeout=60)
    os.close(controller)
    return code, output.decode(errors="replace")


@pytest.mark.parametrize(
    ("args", "prompt"),
    [
        (["rotate", "shop"], b"Rotate 'shop' now"),
        (["revoke", "status", "--reason", "superseded"], b"Revoke 'status' at its CA now"),
    ],
    ids=["rotate", "revoke"],
)
def test_rotate_and_revoke_ask_on_a_terminal(
    run_cli: Runner, cli_env: dict[str, str], desired: Path, database_url: str, args: list[str], prompt: bytes
) -> None:
    d = str(desired)
    run_cli("apply", "--dir", d, "--auto-approve", check_code=0)
    before = snapshot(database_url)
    code, output = run_on_terminal([*args, "--dir", d], cli_env, prompt, b"n\r")
    assert code == 1, output
    assert "Cancelled; nothing changed." in output
    assert snapshot(database_url) == before
    code, output = run_on_terminal([*args, "--dir", d], cli_env, prompt, b"y\r")
    assert code == 0, output
    assert snapshot(database_url) != before
    after_yes = snapshot(database_url)
    if args[0] == "rotate":  # --yes: no question at all (nobody answers here)
        code, output = run_on_terminal([*args, "--dir", d, "--yes"], cli_env, prompt, None)
        assert code == 0, output
        assert prompt.decode() not in output
        assert snapshot(database_url) != after_yes


def test_without_a_terminal_the_command_line_is_the_intent(run_cli: Runner, desired: Path) -> None:
    """A script, cron or CI cannot answer: rotate runs without asking (stdin is not a terminal)."""
    d = str(desired)
    run_cli("apply", "--dir", d, "--auto-approve", check_code=0)
    rotated = run_cli("rotate", "shop", "--dir", d, check_code=0)
    assert "Rotate 'shop'" not in rotated.stdout + rotated.stderr


def test_validate_works_without_git_installed(run_cli: Runner, cli_env: dict[str, str], desired: Path) -> None:
    """In a container without git, GitPython cannot load: the declarations still validate (no internal error)."""
    env = {**cli_env, "GIT_PYTHON_GIT_EXECUTABLE": str(desired / "no-git-here")}
    result = run_cli("validate", "--dir", str(desired), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Valid: 4 certificates")
