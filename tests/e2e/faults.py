"""Shared checks of the fault tests: the failure stays with the affected certificates, the apply
exits 1 naming them and their error code, no secret is shown, and the next apply finishes.

Each test records what it injected and how it ended; with ``CERTRECONCILE_FAULT_REPORT=FILE`` the
records are appended to FILE as JSON lines (the figures of the proof suite's closing note).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from e2e.conftest import Runner

FAULT_SCRIPT = Path(__file__).with_name("fault_inject.py")


def fault_command(mode: str, marker: Path, *args: str) -> str:
    """A reload command (no shell) that injects ``mode`` once, mid-apply."""
    return shlex.join([sys.executable, str(FAULT_SCRIPT), mode, str(marker), *args])


def secrets_of(database_url: str) -> list[str]:
    password = conninfo_to_dict(database_url).get("password")
    return [str(password)] if password else []


def results_by_name(result: CompletedProcess[str]) -> dict[str, str]:
    """``name -> "outcome: message"`` from apply's text report (``+ name: outcome: message``)."""
    lines: dict[str, str] = {}
    for line in result.stdout.splitlines():
        symbol, _, rest = line.partition(" ")
        if len(symbol) == 1 and ": " in rest:
            name, _, outcome = rest.partition(": ")
            lines[name] = outcome
    return lines


def assert_isolated(
    result: CompletedProcess[str], failed: dict[str, str], done: Iterable[str], secrets: Iterable[str] = ()
) -> None:
    """Exit 1; each name of ``failed`` failed with its code, every name of ``done`` is done; nothing secret shown."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    outcomes = results_by_name(result)
    for name, code in failed.items():
        assert outcomes.get(name, "").startswith("failed: "), (name, output)
        assert f"error[{code}]" in outcomes[name], (name, code, output)
    for name in done:
        assert outcomes.get(name, "").startswith("done: "), (name, output)
    summary = next(line for line in result.stderr.splitlines() if line.startswith("error[apply-failed]: "))
    assert all(name in summary for name in failed), summary
    assert not any(name in summary for name in done), summary
    for secret in [*secrets, "PRIVATE KEY"]:
        assert secret not in output


def assert_converges(run_cli: Runner, desired: Path, *extra: str) -> CompletedProcess[str]:
    """The next apply finishes (exit 0) and the plan after it is empty (``--detailed-exitcode`` 0)."""
    applied = run_cli("apply", "--dir", str(desired), "--auto-approve", *extra)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    planned = run_cli("plan", "--dir", str(desired), "--detailed-exitcode")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    return applied


def record(fault: str, *, failed: Iterable[str], done: Iterable[str], converged: bool, **figures: Any) -> None:
    report = os.environ.get("CERTRECONCILE_FAULT_REPORT")
    if not report:
        return
    entry = {"fault": fault, "failed": sorted(failed), "done": sorted(done), "converged": converged, **figures}
    with open(report, "a", encoding="utf-8") as output:
        output.write(json.dumps(entry, sort_keys=True) + "\n")
