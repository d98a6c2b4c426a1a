"""The release artefacts, as a user gets them: `python -m build` makes an sdist and a wheel (the wheel
built from the sdist) that pass `twine check --strict`, with the version taken from git and no
deprecation warning; the wheel alone, installed into a clean virtual environment (runtime
dependencies only, no test extras), answers `certreconcile --version` and runs the demo of `make demo`.

Runs in `make test` (marked slow and integration, not soak). The registries (or the local pip cache)
provide the build backend and the runtime dependencies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import require_binary, server_scratch_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TEST_ONLY_MODULES = ("pytest", "hypothesis", "moto", "hvac", "boto3", "mypy", "build", "twine")


@dataclass(frozen=True)
class Built:
    wheel: Path
    sdist: Path
    version: str
    log: str


def clean_env() -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH (which would put the source tree's
    certreconcile, and its metadata, beside the installed one) and no certreconcile settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERTRECONCILE_", "PYTHON", "VIRTUAL_ENV"))}
    env["NO_COLOR"] = "1"
    return env


def _run(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env() if env is None else env,
        check=False,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    require_binary("git")  # setuptools-scm reads the version and the sdist's file list from git
    out = tmp_path_factory.mktemp("dist")
    egg_info = ROOT / "src" / "certreconcile.egg-info"
    had_egg_info = egg_info.exists()  # an editable install's; the sdist step writes one
    try:
        result = _run(sys.executable, "-m", "build", "--outdir", out, ROOT, env=dict(os.environ))
    finally:
        if not had_egg_info:
            shutil.rmtree(egg_info, ignore_errors=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (wheel,) = out.glob("certreconcile-*.whl")
    (sdist,) = out.glob("certreconcile-*.tar.gz")
    version = wheel.name.split("-")[1]
    return Built(wheel=wheel, sdist=sdist, version=version, log=result.stdout + result.stderr)


@pytest.fixture(scope="module")
def runtime_venv(built: Built) -> Iterator[Path]:
    """A clean virtual environment with the wheel and its runtime dependencies only (outside basetemp:
    the demo's embedded PostgreSQL runs from it, as another account when the tests run as root)."""
    with server_scratch_dir("crt-wheel") as scratch:
        venv = scratch / "venv"
        created = _run(sys.executable, "-m", "venv", venv)
        assert created.returncode == 0, created.stderr
        installed = _run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", built.wheel)
        assert installed.returncode == 0, installed.stdout[-4000:] + installed.stderr[-4000:]
        yield venv


def test_build_passes_twine_check_without_deprecation_warnings(built: Built) -> None:
    checked = _run(sys.executable, "-m", "twine", "check", "--strict", built.wheel, built.sdist, env=dict(os.environ))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2, checked.stdout
    assert not re.search(r"deprecat", built.log, re.IGNORECASE), [
        line for line in built.log.splitlines() if "eprecat" in line
    ]


def test_metadata_license_and_version_from_git(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        names = wheel.namelist()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = wheel.read(metadata_name).decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert any(n.startswith("certreconcile/actual/migrations/") and n.endswith(".sql") for n in names)
    assert "certreconcile/py.typed" in names
    assert not any(n.startswith("tests/") for n in names)
    assert f"Version: {built.version}" in metadata
    assert "Classifier: Programming Language :: Python :: 3 :: Only" in metadata
    exact_tag = _run("git", "describe", "--tags", "--exact-match", "HEAD")
    if exact_tag.returncode != 0:  # between tags (or before the first): the next version's .devN+g<sha>
        head = _run("git", "rev-parse", "--short=7", "HEAD").stdout.strip()
        assert ".dev" in built.version, built.version
        assert f"+g{head}" in built.version, (built.version, head)
    else:
        assert built.version == exact_tag.stdout.strip().removeprefix("v")
    with_sdist = subprocess.run(["tar", "-tzf", built.sdist], capture_output=True, text=True, check=True)
    assert f"certreconcile-{built.version}/LICENSE" in with_sdist.stdout.splitlines()
    assert f"certreconcile-{built.version}/PKG-INFO" in with_sdist.stdout.splitlines()


def test_wheel_in_a_clean_venv_runs_version_and_the_demo(built: Built, runtime_venv: Path) -> None:
    python = runtime_venv / "bin" / "python"
    cli = runtime_venv / "bin" / "certreconcile"
    found = _run(
        python,
        "-c",
        "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))",
        *TEST_ONLY_MODULES,
    )
    assert found.stdout.strip() == "", f"the runtime install pulled in test-only packages: {found.stdout}"

    version = _run(cli, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"certreconcile {built.version}\n"

    env = clean_env()
    with server_scratch_dir("crt-wheel-demo") as scratch:
        demo = scratch / "desired-state"
        shutil.copytree(ROOT / "examples" / "desired-state", demo, ignore=shutil.ignore_patterns(".certreconcile"))
        try:
            first = _run(cli, "apply", "--dir", demo, "--auto-approve", env=env)
            assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
            assert "Plan: 4 to issue" in first.stdout
            status = _run(cli, "status", "--dir", demo, "--format", "json", env=env)
            assert status.returncode == 0, status.stderr
            document = json.loads(status.stdout)
            assert document["version"] == built.version
            assert sorted(c["status"] for c in document["certificates"]) == ["active"] * 4
            second = _run(cli, "apply", "--dir", demo, "--auto-approve", "--format", "json", env=env)
            assert second.returncode == 0, second.stderr
            assert json.loads(second.stdout) == {
                "format_version": 1,
                "version": built.version,
                "outcome": "noop",
                "results": [],
            }
        finally:
            stopped = _run(cli, "db", "stop", "--dir", demo, env=env)
        assert stopped.returncode == 0, stopped.stderr
