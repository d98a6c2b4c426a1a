"""End-to-end fixtures: the real ``certreconcile`` command against a fresh PostgreSQL database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTRECONCILE_")}
    env.update(
        {
            "CERTRECONCILE_DATABASE_URL": database_url,
            "CERTRECONCILE_LOCAL_KMS_KEY_FILE": str(tmp_path / "kms" / "master.key"),
            "NO_COLOR": "1",
            "USER": "e2e-tester",
        }
    )
    return env


@pytest.fixture
def run_cli(cli_env: dict[str, str], tmp_path: Path) -> Runner:
    def run(
        *args: str, check_code: int | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "certreconcile", *args],
            capture_output=True,
            text=True,
            env=env or cli_env,
            cwd=cwd or tmp_path,
            timeout=300,
            check=False,
        )
        if check_code is not None:
            assert result.returncode == check_code, (result.returncode, result.stdout, result.stderr)
        return result

    return run
