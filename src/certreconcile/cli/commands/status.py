"""``certreconcile status``: the inventory, with what the plan would still change."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from certreconcile.cli.common import DEFAULT_DIR, DirOption, cli_clock, err, fail, load_directory, use_color
from certreconcile.errors import CertReconcileError

__all__ = ["status"]


def status(
    directory: DirOption = DEFAULT_DIR,
    output_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """The inventory: every managed certificate, its status, expiry, verified targets and flags.

    Flags: expiring-soon (its renewal is due), expired, unverified:TARGETS (not proven to
    serve it), rotation-open (a rotation started and did not finish), not-declared,
    pending (the plan holds a change for it; a declared name never issued is listed as
    not-issued), next-attempt:TIME (a pending change waits for its backoff after failures).

    Then the enrolled agents (design.md section 9): serial and expiry of each agent's own
    certificate, when it last answered the applier, and its state (ok, not-seen, renewal-due,
    unreachable with the last error, expired).

    Examples: certreconcile status; certreconcile status --format json | jq '.certificates[] | select(.flags != [])'
    """
    from certreconcile.cli.status import render_status_json, render_status_table
    from certreconcile.wiring import Settings, open_store

    if output_format not in ("table", "json"):
        fail(CertReconcileError(f"unknown format {output_format!r}", code="usage", hint="use table or json"))
    try:
        store = open_store(Settings.from_env(directory))
        with store.session() as session:
            actual = session.load_actual()
    except CertReconcileError as exc:
        fail(exc)
    desired = None
    try:  # the renewal times come from the declarations; without readable ones, status still shows
        desired = load_directory(directory)
    except (CertReconcileError, typer.Exit):
        err("warning: the declarations could not be read; renewal times are estimated from expiry")
    now = cli_clock().now()
    specs = desired.certificates if desired is not None else None
    pending = None
    if desired is not None:  # what is not served as declared yet: the plan's changes, deferred ones too
        from certreconcile import engine
        from certreconcile.actual.model import Observations

        pending = engine.plan(engine.Gathered(desired, actual, Observations()), now)
    if output_format == "json":
        typer.echo(render_status_json(actual, now, specs, pending))
    else:
        sys.stdout.write(render_status_table(actual, now, color=use_color(), specs=specs, plan=pending))
