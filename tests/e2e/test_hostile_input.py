"""Bad bytes in a declaration file after certificates exist: nothing is retired, revoked or changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from e2e.conftest import Runner
from e2e.test_cli_cycle import snapshot

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "desired-state"


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        pytest.param(b"\x00", "yaml-forbidden-character", id="nul"),
        pytest.param(b"\x1b", "yaml-forbidden-character", id="escape"),
        pytest.param(b"\xef\xbb\xbf", "yaml-forbidden-character", id="byte-order-mark"),
        pytest.param(b"\xff", "yaml-encoding", id="invalid-utf8"),
    ],
)
def test_a_damaged_file_after_an_apply_changes_nothing(
    run_cli: Runner, tmp_path: Path, database_url: str, damage: bytes, code: str
) -> None:
    """The landed version read a file with a NUL as ending there, and retired what followed."""
    directory = Path(shutil.copytree(EXAMPLES, tmp_path / "d", ignore=shutil.ignore_patterns(".certreconcile")))
    run_cli("apply", "--dir", str(directory), "--auto-approve", check_code=0)
    before = snapshot(database_url)
    certificates = directory / "certificates.yaml"
    lines = certificates.read_bytes().split(b"\n")
    at = next(index for index, line in enumerate(lines) if b"name: api" in line)
    lines[at] = damage + lines[at]
    certificates.write_bytes(b"\n".join(lines))
    for command in (("plan", "--detailed-exitcode"), ("apply", "--auto-approve")):
        result = run_cli(*command, "--dir", str(directory))
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert f"certificates.yaml:{at + 1}:1: error[{code}]" in result.stderr
        assert "retire" not in result.stdout and "revoke" not in result.stdout
    assert snapshot(database_url) == before
    status = json.loads(run_cli("status", "--dir", str(directory), "--format", "json", check_code=0).stdout)
    names = {entry["name"]: entry["status"] for entry in status["certificates"]}
    assert names == dict.fromkeys(("api", "shop", "status", "wildcard-internal"), "active")
