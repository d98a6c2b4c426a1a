"""``certreconcile status``: the inventory, with what the plan would still change."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from certreconcile.cli.common import DEFAULT_DIR, DirOption, cli_clock, err, fail, load_directory, use_color
from certreconcile.cli.exit_codes import ExitCode
from certreconcile.cli.formats import FormatOption, OutputFormat
from certreconcile.errors import CertReconcileError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from certreconcile.actual.model import ActualState
    from certreconcile.cli.status_fail import FailOn
    from certreconcile.desired.model import CertificateSpec
    from certreconcile.plan.plan import Plan

__all__ = ["status"]

_FailOnOption = Annotated[
    list[str] | None,
    typer.Option(
        "--fail-on",
        metavar="STATE",
        help="Exit 1 when any certificate is expiring (renewal due, or expired), expired, unverified "
        "(a target not proven to serve it) or pending (the plan holds a change for it). Repeat it or "
        "separate states with commas.",
    ),
]


def status(
    directory: DirOption = DEFAULT_DIR,
    output_format: FormatOption = OutputFormat.TEXT,
    fail_on: _FailOnOption = None,
) -> None:
    """The inventory: every managed certificate, its status, expiry, verified targets and flags.

    Flags: expiring-soon (its renewal is due), expired, unverified:TARGETS (not proven to
    serve it), rotation-open (a rotation started and did not finish), not-declared,
    pending (the plan holds a change for it; a declared name never issued is listed as
    not-issued), next-attempt:TIME (a pending change waits for its backoff after failures).

    Then the enrolled agents (design.md section 9): serial and expiry of each agent's own
    certificate, when it last answered the applier, and its state (ok, not-seen, renewal-due,
    unreachable with the last error, expired).

    With --fail-on STATE it exits 1 when any certificate is in that state, naming them on stderr.

    Examples: certreconcile status; certreconcile status --format json | jq '.certificates[] | select(.flags != [])';
    certreconcile status --fail-on expired,unverified
    """
    from certreconcile.cli.status import render_status_json, render_status_table
    from certreconcile.cli.status_fail import parse_fail_on
    from certreconcile.wiring import Settings, open_store

    states = parse_fail_on(fail_on)
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
    if states:
        _check_fail_on(states, actual, now, specs, pending)


def _check_fail_on(
    states: list[FailOn],
    actual: ActualState,
    now: datetime,
    specs: Mapping[str, CertificateSpec] | None,
    pending: Plan | None,
) -> None:
    """Exit 1, naming the certificates on stderr, when any is in one of ``states``."""
    from certreconcile.cli.status import named_flags
    from certreconcile.cli.status_fail import FailOn, failures

    lines = failures(named_flags(actual, now, specs, pending), states)
    if FailOn.PENDING in states and pending is None:
        lines.append("pending: unknown, the declarations could not be read")
    if lines:
        for line in lines:
            err(f"status --fail-on: {line}")
        raise typer.Exit(ExitCode.ERROR)
