"""How ``apply`` and ``rotate`` show their work: a progress bar on a terminal, then one line per change."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

import typer

import certreconcile
from certreconcile.cli.common import err

if TYPE_CHECKING:
    from certreconcile.apply.executor import ApplyEnvironment, ApplyResult, ChangeResult
    from certreconcile.apply.workers import WorkerWiring
    from certreconcile.desired.model import DesiredState
    from certreconcile.plan.plan import Plan

__all__ = ["apply_with_progress", "report"]


def apply_with_progress(
    the_plan: Plan,
    desired: DesiredState,
    env: ApplyEnvironment,
    concurrency: int,
    *,
    saved: bool,
    workers: int = 1,
    wiring: WorkerWiring | None = None,
) -> ApplyResult:
    """:func:`certreconcile.engine.apply`, with progress on stderr when it is a terminal."""
    from functools import partial

    from certreconcile import engine

    run = partial(engine.apply, concurrency=concurrency, saved=saved, workers=workers, wiring=wiring)
    if not sys.stderr.isatty() or not the_plan.changes:
        return run(the_plan, desired, env)
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        # A terminal that wants no escape codes: one plain line per finished change, no bar.
        def line(result: ChangeResult) -> None:
            err(f"  {result.change.action.symbol} {result.change.name}: {result.outcome}")

        return run(the_plan, desired, replace(env, on_progress=line))
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]apply[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("", total=len(the_plan.changes))

        def advance(result: ChangeResult) -> None:
            bar.update(task, advance=1, description=f"{result.change.name}: {result.outcome}")

        return run(the_plan, desired, replace(env, on_progress=advance))


def report(result: ApplyResult, output_format: str) -> None:
    """The outcome of every change (JSON, or a line each and a summary); the failures on stderr."""
    if output_format == "json":
        payload = {
            "format_version": 1,
            "version": certreconcile.__version__,
            "run_id": result.run_id,
            "serial": result.serial,
            "outcome": "success" if result.ok else "failed",
            "results": [
                {
                    "name": r.change.name,
                    "action": r.change.action.value,
                    "outcome": r.outcome,
                    "message": r.message,
                    "cert_id": r.cert_id,
                    "failed_targets": list(r.failed_targets),
                }
                for r in result.results
            ],
        }
        if result.workers:
            payload["workers"] = [
                {"pid": w.pid, "changes": w.changes, "cpu_seconds": w.cpu_seconds} for w in result.workers
            ]
        if result.agents:
            payload["agents"] = [
                {"name": a.name, "action": "renew-agent", "outcome": a.outcome, "message": a.message}
                for a in result.agents
            ]
        typer.echo(json.dumps(payload, indent=2, sort_keys=True))
        return
    for r in result.results:
        typer.echo(f"{r.change.action.symbol} {r.change.name}: {r.outcome}: {r.message}")
    for a in result.agents:
        typer.echo(f"~ agent {a.name}: {a.outcome}: {a.message}")
    summary = (
        f"Apply complete: {result.count('done')} done, {result.count('skipped')} skipped, "
        f"{result.count('failed')} failed."
    )
    typer.echo(summary)
    if result.workers:
        shares = ", ".join(f"{w.changes} change{'' if w.changes == 1 else 's'} (pid {w.pid})" for w in result.workers)
        err(f"apply: {len(result.workers)} worker processes: {shares}")
    if not result.ok:
        failed = [r.change.name for r in result.failures] + [f"agent {a.name}" for a in result.agent_failures]
        err(
            "error[apply-failed]: "
            + ", ".join(failed)
            + " failed (the other changes were applied; fix the cause and run apply again)"
        )
