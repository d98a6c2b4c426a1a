"""The embedded defaults, as `make demo` uses them: no database URL, no KMS key configured."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from certreconcile.actual.embedded import stop_embedded
from helpers import server_scratch_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_dir() -> Iterator[Path]:
    with server_scratch_dir("crt-demo") as scratch:
        target = scratch / "d"
        shutil.copytree(ROOT / "examples" / "desired-state", target, ignore=shutil.ignore_patterns(".certreconcile"))
        try:
            yield target
        finally:
            stop_embedded(target, {})


def run(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTRECONCILE_")}
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "certreconcile", *args, "--dir", str(directory)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_demo_flow_on_embedded_postgres(demo_dir: Path) -> None:
    first = run(demo_dir, "apply", "--auto-approve")
    assert first.returncode == 0, first.stderr
    assert "Plan: 4 to issue" in first.stdout
    data = demo_dir / ".certreconcile"
    assert (data / "pgdata").is_dir()
    key_file = data / "local-kms.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    status = run(demo_dir, "status")
    assert status.returncode == 0
    assert status.stdout.count(" active ") == 4
    second = run(demo_dir, "apply", "--auto-approve")
    assert second.returncode == 0
    assert "No changes. Certificates match the desired state." in second.stdout
    stopped = run(demo_dir, "db", "stop")
    assert stopped.stdout.strip() == "Stopped the embedded PostgreSQL."
    assert run(demo_dir, "db", "stop").stdout.strip() == "The embedded PostgreSQL was not running."
    again = run(demo_dir, "plan", "--detailed-exitcode")  # starts it again on demand
    assert again.returncode == 0, again.stderr
