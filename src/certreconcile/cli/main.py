"""The ``certreconcile`` command: a thin typer shell over desired → plan → apply.

Every error prints one line (``error[code]: message (hint)``) and exits 1; never a
traceback, never a secret.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from certreconcile.cli.audit import verify_command
from certreconcile.cli.exit_codes import ExitCode
from certreconcile.cli.run import run_command
from certreconcile.errors import CertReconcileError, DesiredStateError

__all__ = ["app", "main"]

app = typer.Typer(
    name="certreconcile",
    help=(
        "Declarative GitOps reconciler for TLS certificates.\n\n"
        "Declare certificates in YAML in a Git repository; `plan` shows what must change, "
        "`apply` issues, rotates, revokes and distributes until reality matches.\n\n"
        "Examples:\n\n"
        "  certreconcile validate --dir certs/\n\n"
        "  certreconcile plan --dir certs/ --format markdown > plan.md\n\n"
        "  certreconcile apply --dir certs/ --auto-approve"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=True,
    rich_markup_mode=None,
)
db_app = typer.Typer(
    help="Database housekeeping: migrations and the embedded server.\n\nExample: certreconcile db upgrade --dir certs/",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
kms_app = typer.Typer(
    help="Key-encryption housekeeping.\n\nExample: certreconcile kms rewrap --dir certs/ --to new-kms.yaml",
    no_args_is_help=True,
)
app.add_typer(kms_app, name="kms")
# `certreconcile audit [--name N ...]` lists the trail (the group's own callback);
# `certreconcile audit verify` checks its hash chain (cli/audit.py).
audit_app = typer.Typer(invoke_without_command=True)
app.add_typer(audit_app, name="audit")
audit_app.command("verify")(verify_command)
app.command("run")(run_command)  # `certreconcile run`: the continuous reconciler, in cli/run.py

DirOption = Annotated[
    Path,
    typer.Option(
        "--dir",
        "-d",
        help="The desired-state directory (also locates the embedded database).",
        file_okay=False,
        show_default="current directory",
    ),
]
DEFAULT_DIR = Path()


def _use_color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _err(text: str) -> None:
    typer.echo(text, err=True)


def _fail(exc: CertReconcileError) -> NoReturn:
    if isinstance(exc, DesiredStateError):
        for diagnostic in exc.diagnostics:
            _err(str(diagnostic))
        count = len(exc.diagnostics)
        _err(f"error[{exc.code}]: {count} problem{'s' if count != 1 else ''} in the desired state ({exc.hint})")
    else:
        _err(exc.one_line())
    raise typer.Exit(ExitCode.ERROR)


def _validation_json(exc: CertReconcileError) -> dict[str, Any]:
    diagnostics: list[dict[str, Any]] = []
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


def _load(directory: Path, ref: str | None = None) -> Any:
    from certreconcile.desired import load_desired

    if not directory.is_dir():
        raise CertReconcileError(
            f"{directory} is not a directory", code="dir-missing", hint="pass the desired-state directory with --dir"
        )
    from certreconcile.wiring import with_git_origin

    desired = load_desired(directory, ref=ref)
    return desired if ref is not None else with_git_origin(desired, directory)


def _now() -> datetime:
    from certreconcile.clock import SystemClock

    return SystemClock().now()


@app.command()
def validate(
    directory: DirOption = DEFAULT_DIR,
    output_format: Annotated[
        str, typer.Option("--format", help="text or json (every diagnostic, for editors and CI).")
    ] = "text",
) -> None:
    """Check the declarations (schema, references, domains, policy). Exit 0 if valid, 1 if not.

    Examples: certreconcile validate --dir certs/; certreconcile validate --format json | jq '.diagnostics[]'
    """
    if output_format not in ("text", "json"):
        _fail(CertReconcileError(f"unknown format {output_format!r}", code="usage", hint="use text or json"))
    try:
        desired = _load(directory)
    except CertReconcileError as exc:
        if output_format == "json":
            typer.echo(json.dumps(_validation_json(exc), indent=2, sort_keys=True))
            raise typer.Exit(ExitCode.ERROR) from None
        _fail(exc)
    if output_format == "json":
        summary = {"certificates": len(desired.certificates), "issuers": len(desired.issuers),
                   "targets": len(desired.targets)}  # fmt: skip
        typer.echo(json.dumps({"format_version": 1, "valid": True, "diagnostics": [], **summary}, sort_keys=True))
        return
    typer.echo(
        f"Valid: {len(desired.certificates)} certificates, {len(desired.issuers)} issuers, "
        f"{len(desired.targets)} targets."
    )


@app.command()
def plan(
    directory: DirOption = DEFAULT_DIR,
    ref: Annotated[
        str | None, typer.Option(help="Read the declarations at this git ref instead of the work tree.")
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="text, markdown or json.")] = "text",
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
) -> None:
    """Show what apply would change: issue, rotate, revoke, redistribute, retire.

    Exit 1 also when the plan holds an error apply would refuse it for (a Let's Encrypt rate limit).

    Examples: certreconcile plan; certreconcile plan --format markdown > comment.md;
    certreconcile plan --out plan.json --detailed-exitcode
    """
    from certreconcile.render import render_json, render_markdown, render_text

    if output_format not in ("text", "markdown", "json"):
        _fail(CertReconcileError(f"unknown format {output_format!r}", code="usage", hint="use text, markdown or json"))
    try:
        desired = _load(directory, ref)
        result = _build_plan(directory, desired, refresh=refresh)
        if out is not None:
            _write_plan_file(out, result.dumps())
        if comment_dir is not None:
            from certreconcile.cli.gitops import write_plan_comments

            write_plan_comments(comment_dir, result)
    except CertReconcileError as exc:
        if comment_dir is not None:
            from certreconcile.cli.gitops import write_error_comment

            write_error_comment(comment_dir, exc)
        _fail(exc)
    match output_format:
        case "json":
            sys.stdout.write(render_json(result))
        case "markdown":
            sys.stdout.write(render_markdown(result))
        case _:
            sys.stdout.write(render_text(result, color=_use_color()))
    if out is not None:
        _err(f"Saved the plan to {out}. Apply it with: certreconcile apply {out}")
    if result.errors:  # shown above with the plan; apply would refuse it, so the check fails
        for error in result.errors:
            _err(f"error[{error.code}]: {error.one_line()}")
        raise typer.Exit(ExitCode.ERROR)
    if detailed_exitcode and not result.is_empty:
        raise typer.Exit(ExitCode.CHANGES)


def _write_plan_file(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    try:
        temp.write_text(text)
        temp.replace(path)
    except OSError as exc:
        raise CertReconcileError(f"cannot write the plan to {path}: {exc.strerror}", code="plan-write-failed") from exc


def _build_plan(
    directory: Path,
    desired: Any,
    *,
    refresh: bool,
    force_rotate: frozenset[str] = frozenset(),
    store: Any = None,
    issuers: Any = None,
) -> Any:
    """Load, gather and diff. ``issuers`` (apply): ask ACME CAs for renewal windows and store them;
    ``refresh`` without issuers (plan --refresh): ask, but store nothing."""
    from certreconcile.actual.model import Observations
    from certreconcile.actual.refresh import observe_targets
    from certreconcile.apply.ari import refresh_renewal_info
    from certreconcile.clock import SystemClock
    from certreconcile.plan import build_plan
    from certreconcile.wiring import Settings, build_environment, build_targets, kms_drift_warnings, open_store

    settings = Settings.from_env(directory)
    store = store or open_store(settings)
    with store.session() as session:
        actual = session.load_actual()
        key_usage = session.key_ref_usage()
    ari_warnings: tuple[str, ...] = ()
    if issuers is not None or refresh:
        persist = issuers is not None
        if issuers is None:
            issuers = build_environment(desired, settings, store, SystemClock()).issuers
        gathered = refresh_renewal_info(actual, issuers, store, _now(), persist=persist)
        actual, ari_warnings = gathered.actual, gathered.warnings
    observations = Observations()
    if refresh:
        probes = [
            (name, spec.domains, target)
            for name, spec in desired.certificates.items()
            if name in actual.certificates
            for target in spec.targets
        ]
        observations = observe_targets(probes, build_targets(desired, settings))
    result = build_plan(
        desired, actual, observations, _now(), force_rotate=force_rotate, destroy_threshold=settings.destroy_threshold
    )
    from certreconcile.cli.preflight import check_environment

    check_environment(directory, desired, result, settings.env)  # *_env secrets, before anything is issued
    extra = (*kms_drift_warnings(desired, settings, key_usage), *ari_warnings)
    if extra:
        from dataclasses import replace

        result = replace(result, warnings=(*result.warnings, *extra))
    return result


@app.command()
def apply(
    plan_file: Annotated[Path | None, typer.Argument(help="A plan saved by `plan --out`; refused when stale.")] = None,
    directory: DirOption = DEFAULT_DIR,
    auto_approve: Annotated[bool, typer.Option(help="Apply without asking for confirmation.")] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Changes applied in parallel.")] = 4,
    refresh: Annotated[
        bool, typer.Option(help="Probe every target first and fix those that drifted (without a plan file).")
    ] = False,
    output_format: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
    expect_changes: Annotated[
        str | None,
        typer.Option(
            metavar="DIGEST",
            help="Apply only if the change set planned now is the reviewed one (its digest, from the plan "
            "comment), or differs only by renewals that fell due since (needs --reviewed-plan); else refuse.",
        ),
    ] = None,
    reviewed_plan: Annotated[
        Path | None,
        typer.Option(
            help="The reviewed change set for --expect-changes: the PR plan comments' bodies, or `plan --out` JSON.",
            dir_okay=False,
        ),
    ] = None,
    only_renewals: Annotated[
        bool, typer.Option(help="Apply only the renewals that fell due; list and leave every other change.")
    ] = False,
    allow_destroy: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="N",
            help="Intent to revoke or retire exactly N certificates. Needed when the plan destroys more than "
            "CERTRECONCILE_DESTROY_MAX_COUNT (default 1) certificates or more than "
            "CERTRECONCILE_DESTROY_MAX_PERCENT (default 10) % of the managed names; any N other than the "
            "plan's exact count is refused.",
        ),
    ] = None,
) -> None:
    """Make reality match the declarations: issue, rotate, revoke, distribute, verify.

    Without a plan file it plans first and asks for confirmation on a terminal
    (--auto-approve skips the question; without a terminal it is required).

    A plan that revokes or retires more than the destroy threshold (by default: more than 1
    certificate, or more than 10% of the managed names) is refused, nothing changed, unless
    --allow-destroy N names the exact number of certificates it revokes or retires.

    Examples: certreconcile apply --auto-approve; certreconcile apply plan.json;
    certreconcile apply plan.json --allow-destroy 3
    """
    from certreconcile.clock import SystemClock
    from certreconcile.plan import plan_from_json
    from certreconcile.render import render_text
    from certreconcile.wiring import Settings, build_environment, open_store

    if output_format not in ("text", "json"):
        _fail(CertReconcileError(f"unknown format {output_format!r}", code="usage", hint="use text or json"))
    if reviewed_plan is not None and expect_changes is None:
        _fail(CertReconcileError("--reviewed-plan needs --expect-changes", code="usage",
                                 hint="pass the reviewed digest too: --expect-changes DIGEST"))  # fmt: skip
    if only_renewals and (plan_file is not None or expect_changes is not None):
        _fail(CertReconcileError("--only-renewals plans by itself", code="usage",
                                 hint="drop the plan file and --expect-changes"))  # fmt: skip
    try:
        desired = _load(directory)
        settings = Settings.from_env(directory)
        store = open_store(settings)
        if plan_file is not None:
            try:
                the_plan = plan_from_json(json.loads(plan_file.read_text()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CertReconcileError(
                    f"{plan_file} is not a readable certreconcile plan: {exc}",
                    code="plan-file-invalid",
                    hint="save one with `plan --out FILE`",
                ) from exc
            if expect_changes is not None:
                from certreconcile.cli.gitops import check_against_review

                check_against_review(the_plan, expect_changes, reviewed_plan, _err)
            _check_destroy(the_plan, store, settings, allow_destroy, saved=True)
            from certreconcile.cli.preflight import check_environment

            check_environment(directory, desired, the_plan, settings.env)
        else:
            env = build_environment(desired, settings, store, SystemClock())
            the_plan = _build_plan(directory, desired, refresh=refresh, store=store, issuers=env.issuers)
            if only_renewals:
                from certreconcile.cli.gitops import only_renewals as renewals_of

                the_plan = renewals_of(the_plan, _err)
            if output_format == "text":
                sys.stdout.write(render_text(the_plan, color=_use_color()))
            if expect_changes is not None:
                from certreconcile.cli.gitops import check_against_review

                check_against_review(the_plan, expect_changes, reviewed_plan, _err)
            _check_destroy(the_plan, store, settings, allow_destroy, saved=False)
            if the_plan.is_empty:
                if output_format == "json":
                    typer.echo(json.dumps({"format_version": 1, "outcome": "noop", "results": []}))
                return
            if not auto_approve:
                if not sys.stdin.isatty():
                    raise CertReconcileError(
                        "apply needs confirmation, but there is no terminal to ask",
                        code="approval-required",
                        hint="pass --auto-approve, or apply a saved plan file",
                    )
                if not typer.confirm("Apply these changes?", default=False):
                    _err("Apply cancelled; nothing changed.")
                    raise typer.Exit(ExitCode.ERROR)
        if plan_file is not None:
            env = build_environment(desired, settings, store, SystemClock())
        result = _apply(the_plan, desired, env, concurrency, saved=plan_file is not None)
    except CertReconcileError as exc:
        _fail(exc)
    _report(result, output_format)
    if not result.ok:
        raise typer.Exit(ExitCode.ERROR)


def _check_destroy(the_plan: Any, store: Any, settings: Any, allow_destroy: int | None, *, saved: bool) -> None:
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


def _apply(the_plan: Any, desired: Any, env: Any, concurrency: int, *, saved: bool) -> Any:
    from dataclasses import replace

    from certreconcile.apply.executor import apply_plan

    if not sys.stderr.isatty() or not the_plan.changes:
        return apply_plan(the_plan, desired, env, concurrency=concurrency, saved=saved)
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        # A terminal that wants no escape codes: one plain line per finished change, no bar.
        def line(result: Any) -> None:
            _err(f"  {result.change.action.symbol} {result.change.name}: {result.outcome}")

        return apply_plan(the_plan, desired, replace(env, on_progress=line), concurrency=concurrency, saved=saved)
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

        def advance(result: Any) -> None:
            bar.update(task, advance=1, description=f"{result.change.name}: {result.outcome}")

        return apply_plan(the_plan, desired, replace(env, on_progress=advance), concurrency=concurrency, saved=saved)


def _report(result: Any, output_format: str) -> None:
    if output_format == "json":
        payload = {
            "format_version": 1,
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
        typer.echo(json.dumps(payload, indent=2, sort_keys=True))
        return
    for r in result.results:
        typer.echo(f"{r.change.action.symbol} {r.change.name}: {r.outcome}: {r.message}")
    summary = (
        f"Apply complete: {result.count('done')} done, {result.count('skipped')} skipped, "
        f"{result.count('failed')} failed."
    )
    typer.echo(summary)
    if not result.ok:
        _err(
            "error[apply-failed]: "
            + ", ".join(r.change.name for r in result.failures)
            + " failed (the other changes were applied; fix the cause and run apply again)"
        )


@app.command()
def status(
    directory: DirOption = DEFAULT_DIR,
    output_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """The inventory: every managed certificate, its status, expiry, verified targets and flags.

    Flags: expiring-soon (its renewal is due), expired, unverified:TARGETS (not proven to
    serve it), rotation-open (a rotation started and did not finish), not-declared,
    pending (the plan holds a change for it; a declared name never issued is listed as
    not-issued), next-attempt:TIME (a pending change waits for its backoff after failures).

    Examples: certreconcile status; certreconcile status --format json | jq '.certificates[] | select(.flags != [])'
    """
    from certreconcile.cli.status import render_status_json, render_status_table
    from certreconcile.wiring import Settings, open_store

    if output_format not in ("table", "json"):
        _fail(CertReconcileError(f"unknown format {output_format!r}", code="usage", hint="use table or json"))
    try:
        store = open_store(Settings.from_env(directory))
        with store.session() as session:
            actual = session.load_actual()
    except CertReconcileError as exc:
        _fail(exc)
    desired = None
    try:  # the renewal times come from the declarations; without readable ones, status still shows
        desired = _load(directory)
    except (CertReconcileError, typer.Exit):
        _err("warning: the declarations could not be read; renewal times are estimated from expiry")
    now = _now()
    specs = desired.certificates if desired is not None else None
    pending = None
    if desired is not None:  # what is not served as declared yet: the plan's changes, deferred ones too
        from certreconcile.actual.model import Observations
        from certreconcile.plan import build_plan

        pending = build_plan(desired, actual, Observations(), now)
    if output_format == "json":
        typer.echo(render_status_json(actual, now, specs, pending))
    else:
        sys.stdout.write(render_status_table(actual, now, color=_use_color(), specs=specs, plan=pending))


@audit_app.callback()
def audit(
    ctx: typer.Context,
    directory: DirOption = DEFAULT_DIR,
    name: Annotated[str | None, typer.Option(help="Only this certificate name.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action (issued, renewed, revoked, ...).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many events (newest).")] = None,
    actor: Annotated[
        str | None, typer.Option(help="Only events by this actor, or actors starting with it (git:, user:alice).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only events at or after: an ISO time (2026-11-01T00:00Z) or an age (24h, 7d).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Only events before: an ISO time or an age.")] = None,
    output_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """The append-only audit trail: who did what to which certificate, and when.

    `certreconcile audit verify` checks its hash chain (tamper evidence).

    Examples: certreconcile audit --name shop;
    certreconcile audit --action revoked --since 7d --format json;
    certreconcile audit --actor git:4f2a --until 2026-11-01T00:00Z;
    certreconcile audit verify --head audit-head.json
    """
    if ctx.invoked_subcommand is not None:
        return
    from certreconcile.wiring import Settings, open_store

    if output_format not in ("table", "json"):
        _fail(CertReconcileError(f"unknown format {output_format!r}", code="usage", hint="use table or json"))
    try:
        since_at = _parse_when(since, "--since")
        until_at = _parse_when(until, "--until")
        store = open_store(Settings.from_env(directory))
        with store.session() as session:
            events = list(
                session.audit_events(
                    name=name, action=action, limit=limit, actor=actor, since=since_at, until=until_at
                )
            )
    except CertReconcileError as exc:
        _fail(exc)
    if output_format == "json":
        typer.echo(
            json.dumps(
                [
                    {
                        "id": e.id,
                        "cert_id": e.cert_id,
                        "name": e.name,
                        "action": e.action,
                        "actor": e.actor,
                        "timestamp": e.at.isoformat(),
                        "detail": dict(e.detail),
                    }
                    for e in events
                ],
                indent=2,
                sort_keys=True,
            )
        )
        return
    if not events:
        typer.echo("No audit events.")
        return
    for e in events:
        detail = " ".join(f"{k}={v}" for k, v in sorted(e.detail.items()) if v)
        typer.echo(f"{e.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z  {e.action:<11} {e.name:<20} {e.actor}  {detail}")


def _parse_when(text: str | None, option: str) -> datetime | None:
    """An ISO 8601 time (UTC when no offset is given) or an age before now (``30m``, ``24h``, ``7d``)."""
    if text is None:
        return None
    from certreconcile.domain.durations import parse_duration

    try:
        return _now() - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise CertReconcileError(
            f"{option} {text!r} is neither an ISO time nor an age",
            code="usage",
            hint="write e.g. 2026-11-01T00:00Z or 24h, 7d",
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@app.command()
def revoke(
    name: Annotated[str, typer.Argument(help="The certificate name.")],
    directory: DirOption = DEFAULT_DIR,
    reason: Annotated[
        str,
        typer.Option(
            help="RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, "
            "cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise."
        ),
    ] = "unspecified",
    force: Annotated[
        bool, typer.Option(help="Revoke even while a target still serves the certificate (e.g. key compromise).")
    ] = False,
    output_format: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> None:
    """Revoke a certificate now, at its CA, with an RFC 5280 reason (recorded in the audit log).

    Refused while a target still serves it, unless --force. If the name is still declared,
    the next apply issues a new certificate.

    Examples: certreconcile revoke shop --reason keyCompromise --force;
    certreconcile revoke old-api --reason cessationOfOperation
    """
    from certreconcile.domain.policy import RevocationReason

    try:
        reason = RevocationReason.parse(reason).name
    except ValueError as exc:
        _fail(CertReconcileError(str(exc), code="usage", hint="see `certreconcile revoke --help`"))
    from certreconcile.apply.executor import revoke_now
    from certreconcile.clock import SystemClock
    from certreconcile.wiring import Settings, build_environment, open_store

    try:
        desired = _load(directory)
        settings = Settings.from_env(directory)
        store = open_store(settings)
        env = build_environment(desired, settings, store, SystemClock())
        result = revoke_now(name, desired, env, reason, _now(), force=force)
    except CertReconcileError as exc:
        _fail(exc)
    if output_format == "json":
        payload = {"format_version": 1, "name": name, "outcome": result.outcome, "message": result.message,
                   "cert_id": result.cert_id, "reason": reason}  # fmt: skip
        typer.echo(json.dumps(payload, indent=2, sort_keys=True))
        return
    typer.echo(f"- {name}: {result.message} (reason {reason})")


@app.command()
def rotate(
    name: Annotated[str, typer.Argument(help="The certificate name.")],
    directory: DirOption = DEFAULT_DIR,
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "requested",
    output_format: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> None:
    """Rotate now: new key, issue, distribute, verify (e.g. after a key compromise).

    Example: certreconcile rotate shop --reason key-compromise
    """
    from certreconcile.clock import SystemClock
    from certreconcile.plan.plan import Plan
    from certreconcile.wiring import Settings, build_environment, open_store

    try:
        desired = _load(directory)
        if name not in desired.certificates:
            raise CertReconcileError(
                f"{name!r} is not declared", code="name-unknown", hint="rotate takes the name of a declared certificate"
            )
        settings = Settings.from_env(directory)
        store = open_store(settings)
        full = _build_plan(directory, desired, refresh=False, force_rotate=frozenset({name}), store=store)
        changes = tuple(c for c in full.changes if c.name == name)
        the_plan = Plan(
            changes=changes,
            created_at=full.created_at,
            desired_digest=full.desired_digest,
            lineage=full.lineage,
            serial=full.serial,
            git_commit=full.git_commit,
        )
        env = build_environment(desired, settings, store, SystemClock())
        result = _apply(the_plan, desired, env, 1, saved=False)
    except CertReconcileError as exc:
        _fail(exc)
    _report(result, "json" if output_format == "json" else "text")
    if not result.ok:
        raise typer.Exit(ExitCode.ERROR)


@db_app.command("upgrade")
def db_upgrade(
    directory: DirOption = DEFAULT_DIR,
    output_format: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> None:
    """Apply pending database migrations (other commands do it on their own too).

    Example: certreconcile db upgrade --dir certs/
    """
    from certreconcile.wiring import Settings, open_store

    try:
        store = open_store(Settings.from_env(directory), migrate=False)
        applied = store.upgrade()
    except CertReconcileError as exc:
        _fail(exc)
    if output_format == "json":
        typer.echo(json.dumps({"format_version": 1, "applied": applied}))
        return
    typer.echo("Applied: " + ", ".join(applied) if applied else "The database is up to date.")


@db_app.command("roles")
def db_roles(
    directory: DirOption = DEFAULT_DIR,
    plan_role: Annotated[str, typer.Option(help="Read-only role for `plan` (no key columns).")] = "certreconcile_plan",
    apply_role: Annotated[
        str, typer.Option(help="Role for apply, run, rotate, revoke, kms rewrap; owns nothing.")
    ] = "certreconcile_apply",
    owner_role: Annotated[str, typer.Option(help="NOLOGIN role owning the schema and tables.")] = "certreconcile_owner",
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the SQL for this database; change nothing.")
    ] = False,
) -> None:
    """Create (if missing) and grant least-privilege roles; run as the administrator, after `db upgrade`.

    New roles get no password: set one with ALTER ROLE ... PASSWORD. Idempotent; run it again after
    every `db upgrade`.

    Example: CERTRECONCILE_DATABASE_URL=postgresql://admin@db/certs certreconcile db roles --print
    """
    from certreconcile.actual.embedded import resolve_database_url
    from certreconcile.actual.roles import RoleNames, database_roles
    from certreconcile.wiring import Settings

    settings = Settings.from_env(directory)
    names = RoleNames(plan=plan_role, apply=apply_role, owner=owner_role)
    try:
        url = settings.database_url or resolve_database_url(settings.desired_dir, settings.env)
        statements = database_roles(url, names, execute=not print_only)
    except CertReconcileError as exc:
        _fail(exc)
    if print_only:
        typer.echo("BEGIN;\n" + "".join(f"{statement};\n" for statement in statements) + "COMMIT;")
        return
    typer.echo(
        f"Roles ready: {names.plan} (plan, read-only), {names.apply} (apply), {names.owner} (owner, NOLOGIN). "
        "Set passwords with ALTER ROLE ... PASSWORD if they have none."
    )


@db_app.command("stop")
def db_stop(directory: DirOption = DEFAULT_DIR) -> None:
    """Stop the embedded PostgreSQL of this directory (the next command starts it again).

    Example: certreconcile db stop --dir certs/
    """
    from certreconcile.actual.embedded import stop_embedded
    from certreconcile.wiring import Settings

    settings = Settings.from_env(directory)
    if settings.database_url:
        typer.echo("CERTRECONCILE_DATABASE_URL is set: there is no embedded server to stop.")
        return
    stopped = stop_embedded(settings.desired_dir, settings.env)
    typer.echo("Stopped the embedded PostgreSQL." if stopped else "The embedded PostgreSQL was not running.")


@kms_app.command("rewrap")
def kms_rewrap(
    directory: DirOption = DEFAULT_DIR,
    to: Annotated[
        Path | None,
        typer.Option(
            "--to",
            help="A YAML file with a `kms:` section to move every key to (default: the declared KMS). "
            "Keep it outside --dir; its relative paths are relative to its own directory.",
            dir_okay=False,
        ),
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="A YAML file with a `kms:` section: the KMS that wrapped the keys, when not the declared one.",
            dir_okay=False,
        ),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, max=10000, help="Rows read per page.")] = 100,
    output_format: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> None:
    """Re-encrypt every stored data key under another KMS or master key; no private key is decrypted.

    Each row is moved in its own transaction and audited (key_rewrapped); rows already under the
    target are skipped, so an interrupted rewrap resumes when run again. Exit 1 if any row failed.

    Examples: certreconcile kms rewrap --to ../aws-kms.yaml;
    certreconcile kms rewrap --from ../old-local.yaml  (then the declared KMS is the target)
    """
    from certreconcile.apply.rewrap import rewrap_keys
    from certreconcile.clock import SystemClock
    from certreconcile.wiring import Settings, actor_for, build_rewrap_kms, open_store

    try:
        desired = _load(directory)
        settings = Settings.from_env(directory)
        store = open_store(settings)
        kms = build_rewrap_kms(desired, settings, to, from_file)
        progress = None
        if sys.stderr.isatty():

            def progress(stored: Any, outcome: str) -> None:
                _err(f"  {outcome}: {stored.table.value} {stored.name}")

        result = rewrap_keys(
            store,
            kms.target,
            kms.sources,
            actor=actor_for(desired, settings.env),
            clock=SystemClock(),
            batch=batch,
            on_progress=progress,
        )
    except CertReconcileError as exc:
        _fail(exc)
    if output_format == "json":
        payload = {
            "format_version": 1,
            "target_kms": result.target_kms,
            "target_key_id": result.target_key_id,
            "rewrapped": result.rewrapped,
            "skipped": result.skipped,
            "conflicts": result.conflicts,
            "failures": [
                {"table": f.table.value, "name": f.name, "row_id": f.row_id, "message": f.message}
                for f in result.failures
            ],
        }
        typer.echo(json.dumps(payload, indent=2, sort_keys=True))
        if not result.ok:
            raise typer.Exit(ExitCode.ERROR)
        return
    for failure in result.failures:
        _err(f"failed: {failure.table.value} {failure.name} ({failure.row_id}): {failure.message}")
    summary = (
        f"Rewrap to {result.target_kms} {result.target_key_id}: rewrapped {result.rewrapped}, "
        f"skipped {result.skipped}, failed {len(result.failures)}"
    )
    if result.conflicts:
        summary += f", changed concurrently {result.conflicts} (run again to check them)"
    typer.echo(summary + ".")
    if not result.ok:
        _err("error[rewrap-incomplete]: some keys were not moved (fix the cause and run `kms rewrap` again)")
        raise typer.Exit(ExitCode.ERROR)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the desired-state files (for editors and CI validators).

    Example: certreconcile schema > schemas/desired-state.schema.json
    """
    from certreconcile.desired.schema import render_json_schema

    sys.stdout.write(render_json_schema())


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the desired-state repository.")],
) -> None:
    """Scaffold a desired-state repository: an example, a .gitignore, the schema modeline, the KMS key.

    Example: certreconcile init certs/ && certreconcile plan --dir certs/
    """
    from certreconcile.cli.scaffold import scaffold

    try:
        created = scaffold(directory)
    except CertReconcileError as exc:
        _fail(exc)
    for path in created:
        typer.echo(f"created {path}")
    typer.echo(f"Next: certreconcile plan --dir {directory}")


def _is_usage_exception(exc: BaseException) -> bool:
    """click-style exceptions (typer vendors its own click, so match by shape, not by class)."""
    return callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int)


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage errors exit 1 too (2 means 'changes' for plan); never a traceback."""
    try:
        rv = app(args=argv, standalone_mode=False)
    except typer.Abort:
        _err("Aborted.")
        sys.exit(ExitCode.ERROR)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _err("Interrupted.")
        sys.exit(130)
    except CertReconcileError as exc:
        _err(exc.one_line())
        sys.exit(ExitCode.ERROR)
    except Exception as exc:
        if _is_usage_exception(exc):
            exc.show()  # type: ignore[attr-defined]  # "Usage: ... Error: No such option: --bogus"
            no_args_help = type(exc).__name__ == "NoArgsIsHelpError"
            sys.exit(ExitCode.OK if no_args_help else ExitCode.ERROR)
        if os.environ.get("CERTRECONCILE_DEBUG"):
            raise
        _err(
            f"error[internal-error]: {type(exc).__name__} (a bug in certreconcile; "
            "rerun with CERTRECONCILE_DEBUG=1 for the traceback and report it)"
        )
        sys.exit(ExitCode.ERROR)
    sys.exit(rv if isinstance(rv, int) else ExitCode.OK)
