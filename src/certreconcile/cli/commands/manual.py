"""``certreconcile rotate`` and ``certreconcile revoke``: a person's change to one certificate, now."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from certreconcile.cli.apply_output import apply_with_progress, report
from certreconcile.cli.common import DEFAULT_DIR, DirOption, cli_clock, err, fail, load_directory
from certreconcile.cli.exit_codes import ExitCode
from certreconcile.cli.formats import FormatOption, OutputFormat
from certreconcile.errors import CertReconcileError

__all__ = ["revoke", "rotate"]

_YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation on a terminal.")]


def _confirm(question: str, yes: bool) -> None:
    """Ask on a terminal (the prompt on stderr, so --format json stays one document); 'no' exits 1.

    Without a terminal (a script, cron, CI) the command line is the intent: nobody can answer.
    """
    if yes or not sys.stdin.isatty():
        return
    if not typer.confirm(question, default=False, err=True):
        err("Cancelled; nothing changed.")
        raise typer.Exit(ExitCode.ERROR)


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
    output_format: FormatOption = OutputFormat.TEXT,
    yes: _YesOption = False,
) -> None:
    """Revoke a certificate now, at its CA, with an RFC 5280 reason (recorded in the audit log).

    Refused while a target still serves it, unless --force. If the name is still declared,
    the next apply issues a new certificate. Asks for confirmation on a terminal (--yes skips it).

    Examples: certreconcile revoke shop --reason keyCompromise --force;
    certreconcile revoke old-api --reason cessationOfOperation
    """
    from certreconcile.domain.policy import RevocationReason

    try:
        reason = RevocationReason.parse(reason).name
    except ValueError as exc:
        fail(CertReconcileError(str(exc), code="usage", hint="see `certreconcile revoke --help`"))
    _confirm(f"Revoke {name!r} at its CA now (reason {reason})? This cannot be undone.", yes)
    from certreconcile import engine
    from certreconcile.wiring import Settings, build_environment, open_store

    try:
        desired = load_directory(directory)
        settings = Settings.from_env(directory)
        env = build_environment(desired, settings, open_store(settings), cli_clock())
        result = engine.revoke_now(name, desired, env, reason, force=force)
    except CertReconcileError as exc:
        fail(exc)
    if output_format == "json":
        payload = {"format_version": 1, "name": name, "outcome": result.outcome, "message": result.message,
                   "cert_id": result.cert_id, "reason": reason}  # fmt: skip
        typer.echo(json.dumps(payload, indent=2, sort_keys=True))
        return
    typer.echo(f"- {name}: {result.message} (reason {reason})")


def rotate(
    name: Annotated[str, typer.Argument(help="The certificate name.")],
    directory: DirOption = DEFAULT_DIR,
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "requested",
    output_format: FormatOption = OutputFormat.TEXT,
    yes: _YesOption = False,
) -> None:
    """Rotate now: new key, issue, distribute, verify (e.g. after a key compromise).

    Asks for confirmation on a terminal (--yes skips it).

    Example: certreconcile rotate shop --reason key-compromise
    """
    from certreconcile import engine
    from certreconcile.wiring import Settings, build_environment, open_store

    try:
        desired = load_directory(directory)
        if name not in desired.certificates:
            raise CertReconcileError(
                f"{name!r} is not declared", code="name-unknown", hint="rotate takes the name of a declared certificate"
            )
        _confirm(f"Rotate {name!r} now: new key, issue, distribute to its targets, verify?", yes)
        settings = Settings.from_env(directory)
        env = build_environment(desired, settings, open_store(settings), cli_clock())
        the_plan = engine.rotation_plan(
            name, desired, env.store, env.clock.now(), settings=settings, destroy_threshold=settings.destroy_threshold
        )
        result = apply_with_progress(the_plan, desired, env, 1, saved=False)
    except CertReconcileError as exc:
        fail(exc)
    report(result, output_format)
    if not result.ok:
        raise typer.Exit(ExitCode.ERROR)

