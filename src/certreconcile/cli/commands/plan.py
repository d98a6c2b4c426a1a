"""``certreconcile validate`` and ``certreconcile plan``: read the declarations, show what apply would change."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from certreconcile.cli.common import (
    DEFAULT_DIR,
    DirOption,
    cli_clock,
    collector_paused,
    err,
    fail,
    load_directory,
    use_color,
)
from certreconcile.cli.exit_codes import ExitCode
from certreconcile.cli.formats import FormatOption, OutputFormat, PlanFormat, PlanFormatOption
from certreconcile.errors import CertReconcileError, DesiredStateError

if TYPE_CHECKING:
    from certreconcile.desired.model import DesiredState
    from certreconcile.plan.plan import Plan

__all__ = ["plan", "plan_for", "validate", "write_plan_file"]


def _validation_json(exc: CertReconcileError) -> dict[str, object]:
    diagnostics: list[dict[str, object]] = []
    if isinstance(exc, DesiredStateError):
        for diagnostic in exc.diagnostics:
            location = getattr(diagnostic, "location", None)
            diagnostics.append(
                {
                    "file": getattr(location, "file", None),
                    "line": getattr(location, "line", None),
                    "column": getattr(location, "column", None),
                    "code": getattr(diagnostic, "code", exc.code),
                    "message": getattr(diagnostic, "message", str(diagnostic)),
                    "hint": getattr(diagnostic, "hint", ""),
                }
            )
    else:
        diagnostics.append({"file": None, "line": None, "column": None, "code": exc.code,
                            "message": exc.message, "hint": exc.hint})  # fmt: skip
    return {"format_version": 1, "valid": False, "diagnostics": diagnostics}


@collector_paused
def validate(
    directory: DirOption = DEFAULT_DIR,
    output_format: FormatOption = OutputFormat.TEXT,
) -> None:
    """Check the declarations (schema, references, domains, policy). Exit 0 if valid, 1 if not.

    Examples: certreconcile validate --dir certs/; certreconcile validate --format json | jq '.diagnostics[]'
    """
    try:
        desired = load_directory(directory)
    except CertReconcileError as exc:
        if output_format == "json":
            typer.echo(json.dumps(_validation_json(exc), indent=2, sort_keys=True))
            raise typer.Exit(ExitCode.ERROR) from None
        fail(exc)
    if output_format == "json":
        summary = {"certificates": len(desired.certificates), "issuers": len(desired.issuers),
                   "targets": len(desired.targets)}  # fmt: skip
        typer.echo(json.dumps({"format_version": 1, "valid": True, "diagnostics": [], **summary}, sort_keys=True))
        return
    typer.echo(
        f"Valid: {len(desired.certificates)} certificates, {len(desired.issuers)} issuers, "
        f"{len(desired.targets)} targets."
    )


def plan_for(directory: Path, desired: DesiredState, *, refresh: bool, allow_unset_secrets: bool = False) -> Plan:
    """What ``plan`` shows: read-only (the CAs' renewal windows are asked with --refresh, never stored).

    A ``*_env`` secret the plan's changes need but this environment lacks is an error (apply would
    refuse), or a warning with ``allow_unset_secrets`` (a pull-request job, which has no secrets)."""
    from certreconcile import engine
    from certreconcile.cli.preflight import check_environment, with_unset_environment_warnings
    from certreconcile.wiring import Settings, build_environment, build_targets, open_store

    settings = Settings.from_env(directory)
    store = open_store(settings)
    clock = cli_clock()
    issuers = build_environment(desired, settings, store, clock).issuers if refresh else None
    now = clock.now()
    gathered = engine.gather(
        desired,
        store,
        now,
        settings=settings,
        issuers=issuers,
        targets=build_targets(desired, settings, store, clock) if refresh else None,
    )
    result = engine.plan(gathered, now, destroy_threshold=settings.destroy_threshold)
    if allow_unset_secrets:
        return with_unset_environment_warnings(directory, desired, result, settings.env)
    check_environment(directory, desired, result, settings.env)  # *_env secrets, before anything is issued
    return result


def write_plan_file(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    try:
        temp.write_text(text)
        temp.replace(path)
    except OSError as exc:
        raise CertReconcileError(f"cannot write the plan to {path}: {exc.strerror}", code="plan-write-failed") from exc


@collector_paused
def plan(
    directory: DirOption = DEFAULT_DIR,
    ref: Annotated[
        str | None, typer.Option(help="Read the declarations at this git ref instead of the work tree.")
    ] = None,
    output_format: PlanFormatOption = PlanFormat.TEXT,
    out: Annotated[Path | None, typer.Option(help="Save the plan (JSON) for `certreconcile apply FILE`.")] = None,
    refresh: Annotated[bool, typer.Option(help="Probe every target and plan redistribution where it drifted.")] = False,
    detailed_exitcode: Annotated[
        bool, typer.Option(help="Exit 0 without changes, 2 with changes, 1 on error.")
    ] = False,
    comment_dir: Annotated[
        Path | None,
        typer.Option(
            help="Also write the plan as pull-request comments comment-1.md .. comment-N.md (each under "
            "65,000 characters, with the change-set digest for `apply --expect-changes`) into this directory.",
            file_okay=False,
        ),
    ] = None,
    allow_unset_secrets: Annotated[
        bool,
        typer.Option(
            help="Report a *_env secret the changes need but this environment lacks as a warning, not an "
            "error (for pull-request jobs, which have no secrets; apply still refuses it)."
        ),
    ] = False,
) -> None:
    """Show what apply would change: issue, rotate, revoke, redistribute, retire.

    Exit 1 also when the plan holds an error apply would refuse it for (a Let's Encrypt rate limit).

    Examples: certreconcile plan; certreconcile plan --format markdown > comment.md;
    certreconcile plan --out plan.json --detailed-exitcode
    """
    try:
        result = plan_for(
            directory, load_directory(directory, ref), refresh=refresh, allow_unset_secrets=allow_unset_secrets
        )
        if out is not None:
            write_plan_file(out, result.dumps())
        if comment_dir is not None:
            from certreconcile.cli.gitops import write_plan_comments

            write_plan_comments(comment_dir, result)
    except CertReconcileError as exc:
        if comment_dir is not None:
            from certreconcile.cli.gitops import write_error_comment

            write_error_comment(comment_dir, exc)
        fail(exc)
    _render(result, output_format)
    if out is not None:
        err(f"Saved the plan to {out}. Apply it with: certreconcile apply {out}")
    if result.errors:  # shown above with the plan; apply would refuse it, so the check fails
        for error in result.errors:
            err(f"error[{error.code}]: {error.one_line()}")
        raise typer.Exit(ExitCode.ERROR)
    if detailed_exitcode and not result.is_empty:
        raise typer.Exit(ExitCode.CHANGES)


def _render(result: Plan, output_format: str) -> None:
    from certreconcile.render import render_json, render_markdown, render_text

    match output_format:
        case "json":
            sys.stdout.write(render_json(result))
        case "markdown":
            sys.stdout.write(render_markdown(result))
        case _:
            sys.stdout.write(render_text(result, color=use_color()))
