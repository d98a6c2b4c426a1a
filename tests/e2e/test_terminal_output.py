"""Terminal behaviour: a progress bar on stderr only on a terminal; NO_COLOR means no escape codes at all."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import Runner

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def desired(tmp_path: Path) -> Path:
    target = tmp_path / "desired"
    shutil.copytree(ROOT / "examples" / "desired-state", target, ignore=shutil.ignore_patterns(".certreconcile"))
    return target


def run_on_terminal(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, bytes]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; return its exit code and everything it wrote."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "certreconcile", *args],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env=env,
        cwd=cwd,
    )
    os.close(terminal)
    output = bytearray()
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the terminal closed with the process
            break
        if not chunk:
            break
        output.extend(chunk)
    os.close(controller)
    return process.wait(timeout=120), bytes(output)


def test_no_color_on_a_terminal_writes_no_escape_codes(desired: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {**cli_env, "NO_COLOR": "1", "TERM": "xterm-256color", "COLUMNS": "120"}
    code, output = run_on_terminal(["apply", "--dir", str(desired), "--auto-approve"], env, tmp_path)
    assert code == 0, output.decode(errors="replace")
    assert b"\x1b" not in output
    assert b"  + shop: done" in output  # plain progress lines instead of a bar
    code, output = run_on_terminal(["status", "--dir", str(desired)], env, tmp_path)
    assert code == 0
    assert b"\x1b" not in output


def test_a_terminal_gets_a_progress_bar_and_a_pipe_does_not(
    desired: Path, cli_env: dict[str, str], run_cli: Runner, tmp_path: Path
) -> None:
    env = {k: v for k, v in cli_env.items() if k != "NO_COLOR"} | {"TERM": "xterm-256color", "COLUMNS": "120"}
    piped = run_cli("apply", "--dir", str(desired), "--auto-approve", env=env, check_code=0)
    assert "Apply complete: 4 done" in piped.stdout
    for stream in (piped.stdout, piped.stderr):
        assert "━" not in stream
        assert "\x1b" not in stream
    code, output = run_on_terminal(["rotate", "shop", "--dir", str(desired)], env, tmp_path)
    assert code == 0, output.decode(errors="replace")
    assert "━".encode() in output  # rich's bar, on stderr
    assert b"\x1b[" in output


def test_every_command_that_prints_data_speaks_json(desired: Path, run_cli: Runner, tmp_path: Path) -> None:
    d = str(desired)

    def document(*args: str, code: int = 0) -> Any:
        result = run_cli(*args, "--format", "json", check_code=code)
        return json.loads(result.stdout)

    assert document("validate", "--dir", d)["valid"] is True
    assert len(document("plan", "--dir", d)["changes"]) == 4
    assert {r["outcome"] for r in document("apply", "--dir", d, "--auto-approve")["results"]} == {"done"}
    assert {c["name"] for c in document("status", "--dir", d)["certificates"]} == {"shop", "api", "status",
                                                                                   "wildcard-internal"}  # fmt: skip
    assert {e["action"] for e in document("audit", "--dir", d, "--since", "1h")} >= {"issued", "verified"}
    assert document("rotate", "shop", "--dir", d)["outcome"] == "success"
    assert document("revoke", "status", "--dir", d, "--reason", "superseded")["reason"] == "superseded"
    rewrap = document("kms", "rewrap", "--dir", d)
    assert rewrap["failures"] == []
    assert document("db", "upgrade", "--dir", d)["applied"] == []
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "c.yaml").write_text("certificates:\n  - name: Bad Name\n    domains: [a.example.com]\n    issuer: x\n")
    invalid = document("validate", "--dir", str(broken), code=1)
    assert invalid["valid"] is False
    assert {(diag["file"], diag["line"]) for diag in invalid["diagnostics"]} >= {("c.yaml", 2)}
