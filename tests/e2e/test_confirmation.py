"""``apply`` without a plan file asks on a terminal: 'no' changes nothing, 'yes' applies."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e.test_cli_cycle import snapshot

ROOT = Path(__file__).resolve().parents[2]


def run_on_terminal(args: list[str], env: dict[str, str], answer: bytes) -> tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "certreconcile", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    output = b""
    answered = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"Apply these changes?" in output:
                os.write(master, answer)
                answered = True
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=60)
    os.close(master)
    return code, output.decode(errors="replace")


@pytest.mark.parametrize(("answer", "expected_code"), [(b"n\r", 1), (b"y\r", 0)], ids=["no", "yes"])
def test_apply_asks_on_a_terminal(
    cli_env: dict[str, str], database_url: str, tmp_path: Path, answer: bytes, expected_code: int
) -> None:
    desired = tmp_path / "desired"
    shutil.copytree(ROOT / "examples" / "desired-state", desired, ignore=shutil.ignore_patterns(".certreconcile"))
    before = snapshot(database_url)
    code, output = run_on_terminal(["apply", "--dir", str(desired)], cli_env, answer)
    assert code == expected_code, output
    assert "Plan: 4 to issue" in output
    if expected_code == 1:
        assert "Apply cancelled; nothing changed." in output
        assert snapshot(database_url) == before
    else:
        assert "Apply complete: 4 done" in output
        assert "\x1b[" not in output  # NO_COLOR is set in cli_env, even on a terminal
