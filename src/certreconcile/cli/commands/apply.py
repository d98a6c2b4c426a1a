"""``certreconcile apply``: plan now (or read a saved plan), check review and destroy intent, then apply."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from certreconcile import __version__
from certreconcile.cli.apply_output import apply_with_progress, report
from certreconcile.cli.common import (
    DEFAULT_DIR,
    DirOption,
    cli_clock,
    err,
    fail,
    load_directory,
    use_color,
)
from certreconcile.cli.exit_codes import ExitCode
from certreconcile.cli.formats import FormatOption, OutputFormat
from certreconcile.errors import CertReconcileError

if TYPE_CHECKING:
    from certreconcile.actual.store import StateStore
    from certreconcile.apply.executor import ApplyEnvironment, ApplyResult
    from certreconcile.desired.model import DesiredState
    from certreconcile.plan.plan import Plan
    from certreconcile.wiring import Settings

__all__ = ["apply"]


@dataclass(frozen=True, slots=True)
class _ApplyRequest:
    plan_file: Path | None
    directory: Path
    auto_approve: bool
    concurrency: int
    refresh: bool
    output_format: str
    expect_changes: str | None
    reviewed_plan: Path | None
    only_renewals: bool
    allow_destroy: int | None
    workers: int
    target_concurrency: int | None = None


_PlanFileArg = Annotated[Path | None, typer.Argument(help="A plan saved by `plan --out`; refused when stale.")]
_AutoApprove = Annotated[bool, typer.Option(help="Apply without asking for confirmation.")]
_Concurrency = Annotated[
    int, typer.Option(min=1, max=64, help="Changes applied in parallel (threads; per worker with --workers).")
]
_Workers = Annotated[
    int,
    typer.Option(
        min=1,
        max=64,
        help="Worker processes sharing the changes (each with --concurrency threads and its own database "
        "connections and KMS client), coordinated through the database as `run` replicas are: more than one "
        "core. Refused when a change answers HTTP-01 on a standalone listener (one port, one process).",
    ),
]
_TargetConcurrency = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=1024,
        metavar="N",
        help="Targets deployed and verified in parallel, all changes together (the fan-out of a certificate "
        "to many targets or agents); default: --concurrency. With --workers: in each worker.",
    ),
]
_Refresh = Annotated[
    bool, typer.Option(help="Probe every target first and fix those that drifted (without a plan file).")
]
_ExpectChanges = Annotated[
    str | None,
    typer.Option(
        metavar="DIGEST",
        help="Apply only if the change set planned now is the reviewed one (its digest, from the plan "
        "comment), or differs only by renewals that fell due since (needs --reviewed-plan); else refuse.",
    ),
]
_ReviewedPlan = Annotated[
    Path | None,
    typer.Option(
        help="The reviewed change set for --expect-changes: the PR plan comments' bodies, or `plan --out` JSON.",
        dir_okay=False,
    ),
]
_OnlyRenewals = Annotated[
    bool, typer.Option(help="Apply only the renewals that fell due; list and leave every other change.")
]
_AllowDestroy = Annotated[
    int | None,
    typer.Option(
        min=0,
        metavar="N",
        help="Intent to revoke or retire exactly N certificates. Needed when the plan destroys more than "
        "CERTRECONCILE_DESTROY_MAX_COUNT (default 1) certificates or more than "
        "CERTRECONCILE_DESTROY_MAX_PERCENT (default 10) % of the managed names; any N other than the "
        "plan's exact count is refused.",
    ),
]


def apply(
    plan_file: _PlanFileArg = None,
    directory: DirOption = DEFAULT_DIR,
    auto_approve: _AutoApprove = False,
    concurrency: _Concurrency = 4,
    refresh: _Refresh = False,
    output_format: FormatOption = OutputFormat.TEXT,
    expect_changes: _ExpectChanges = None,
    reviewed_plan: _ReviewedPlan = None,
    only_renewals: _OnlyRenewals = False,
    allow_destroy: _AllowDestroy = None,
    workers: _Workers = 1,
    target_concurrency: _TargetConcurrency = None,
) -> None:
    """Make reality match the declarations: issue, rotate, revoke, distribute, verify.

    Without a plan file it plans first and asks for confirmation on a terminal
    (--auto-approve skips the question; without a terminal it is required).

    A plan that revokes or retires more than the destroy threshold (by default: more than 1
    certificate, or more than 10% of the managed names) is refused, nothing changed, unless
    --allow-destroy N names the exact number of certificates it revokes or retires.

    --workers N runs the changes in N processes (one run, one summary; the exit code as with one).

    Examples: certreconcile apply --auto-approve; certreconcile apply plan.json;
    certreconcile apply plan.json --allow-destroy 3; certreconcile apply --auto-approve --workers 2
    """
    request = _ApplyRequest(plan_file, directory, auto_approve, concurrency, refresh, output_format, expect_changes,
                            reviewed_plan, only_renewals, allow_destroy, workers, target_concurrency)  # fmt: skip
    _check_usage(request)
    try:
        result = _apply(request)
    except CertReconcileError as exc:
        fail(exc)
    if result is None:
        return
    report(result, output_format)
    if not result.ok:
        raise typer.Exit(ExitCode.ERROR)


def _check_usage(request: _ApplyRequest) -> None:
    if request.reviewed_plan is not None and request.expect_changes is None:
        fail(CertReconcileError("--reviewed-plan needs --expect-changes", code="usage",
                                hint="pass the reviewed digest too: --expect-changes DIGEST"))  # fmt: skip
    if request.only_renewals and (request.plan_file is not None or request.expect_changes is not None):
        fail(CertReconcileError("--only-renewals plans by itself", code="usage",
                                hint="drop the plan file and --expect-changes"))  # fmt: skip


def _apply(request: _ApplyRequest) -> ApplyResult | None:
    """The apply, or None when there was nothing to do (said already)."""
    from certreconcile.cli.preflight import check_environment
    from certreconcile.wiring import ProcessWiring, Settings, build_environment, open_store

    desired = load_directory(request.directory)
    settings = Settings.from_env(request.directory)
    store = open_store(settings)
    if request.plan_file is not None:
        the_plan = _saved_plan(request.plan_file)
        _check_review(the_plan, request)
        _check_destroy(the_plan, store, settings, request.allow_destroy, saved=True)
        _check_workers(the_plan, desired, request)
        check_environment(request.directory, desired, the_plan, settings.env)
        env = build_environment(desired, settings, store, cli_clock())
    else:
        env = build_environment(desired, settings, store, cli_clock())
        planned = _plan_now(request, desired, settings, env)
        if planned is None:
            return None
        the_plan = planned
    if request.target_concurrency is not None:
        env = replace(env, target_concurrency=request.target_concurrency)
    wiring = None
    if request.workers > 1:
        wiring = ProcessWiring(settings, env.clock, env.actor, target_concurrency=request.target_concurrency)
    result = apply_with_progress(the_plan, desired, env, request.concurrency, saved=request.plan_file is not None,
                                 workers=request.workers, wiring=wiring)  # fmt: skip
    if desired.notify is not None:  # its events (issued, failed...), queued once, then the due ones sent
        from certreconcile.notify.hook import notify_after

        notify_after(desired, store, result.results, env.clock, env.actor, settings.env)
    return result


def _saved_plan(plan_file: Path) -> Plan:
    from certreconcile.cli.planfile import read_plan_file

    return read_plan_file(plan_file)


def _check_review(the_plan: Plan, request: _ApplyRequest) -> None:
    if request.expect_changes is not None:
        from certreconcile.cli.gitops import check_against_review

        check_against_review(the_plan, request.expect_changes, request.reviewed_plan, err)


def _plan_now(request: _ApplyRequest, desired: DesiredState, settings: Settings, env: ApplyEnvironment) -> Plan | None:
    """Plan through the engine (renewal windows stored), show it, check it; None when there is nothing to apply."""
    from certreconcile import engine
    from certreconcile.cli.preflight import check_environment
    from certreconcile.render import render_text

    now = env.clock.now()
    gathered = engine.gather(
        desired,
        env.store,
        now,
        settings=settings,
        issuers=env.issuers,
        persist_renewal_info=True,
        targets=env.targets if request.refresh else None,
    )
    the_plan = engine.plan(gathered, now, destroy_threshold=settings.destroy_threshold)
    check_environment(request.directory, desired, the_plan, settings.env)  # *_env secrets, before anything is issued
    if request.only_renewals:
        from certreconcile.cli.gitops import only_renewals as renewals_of

        the_plan = renewals_of(the_plan, err)
    if request.output_format == "text":
        sys.stdout.write(render_text(the_plan, color=use_color()))
    _check_review(the_plan, request)
    _check_destroy(the_plan, env.store, settings, request.allow_destroy, saved=False)
    _check_workers(the_plan, desired, request)
    if the_plan.is_empty:
        if request.output_format == "json":
            typer.echo(json.dumps({"format_version": 1, "version": __version__, "outcome": "noop", "results": []}))
        return None
    if not request.auto_approve:
        _confirm()
    return the_plan


def _check_workers(the_plan: Plan, desired: DesiredState, request: _ApplyRequest) -> None:
    """With --workers N > 1: refuse, before the question, a plan one process must apply (HTTP-01 standalone)."""
    if request.workers > 1:
        from certreconcile.apply.workers import refuse_unshareable

        refuse_unshareable(the_plan.changes, desired)


def _confirm() -> None:
    if not sys.stdin.isatty():
        raise CertReconcileError(
            "apply needs confirmation, but there is no terminal to ask",
            code="approval-required",
            hint="pass --auto-approve, or apply a saved plan file",
        )
    if not typer.confirm("Apply these changes?", default=False):
        err("Apply cancelled; nothing changed.")
        raise typer.Exit(ExitCode.ERROR)


def _check_destroy(
    the_plan: Plan, store: StateStore, settings: Settings, allow_destroy: int | None, *, saved: bool
) -> None:
    """Refuse a plan that destroys beyond the threshold without ``--allow-destroy N`` (the exact count).

    A saved plan's own record of the threshold is never trusted: this apply's settings and the state decide.
    """
    from certreconcile.plan.destroy import check_destroy_intent

    if saved or the_plan.destroy is None:
        with store.session() as session:
            managed = len(session.load_actual().certificates)
    else:
        managed = the_plan.destroy.managed  # planned just now, on the state just read
    check_destroy_intent(the_plan, managed, settings.destroy_threshold, allow_destroy)
