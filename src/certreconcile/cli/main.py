"""The ``certreconcile`` command: assembles the command modules (``cli/commands/``) into one typer app.

The work happens in :mod:`certreconcile.engine`; the commands parse options and print. Every error
prints one line (``error[code]: message (hint)``) and exits 1; never a traceback, never a secret.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from certreconcile.cli.commands import (
    agent,
    apply,
    audit,
    check,
    db,
    housekeeping,
    import_,
    kms,
    manual,
    plan,
    run,
    show,
    status,
)
from certreconcile.cli.common import err
from certreconcile.cli.exit_codes import ExitCode
from certreconcile.errors import CertReconcileError

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


def _print_version(value: bool) -> None:
    if value:
        import certreconcile

        typer.echo(f"certreconcile {certreconcile.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Options of the command itself (the commands have their own)."""


# The order of registration is the order of `certreconcile --help`: commands first, then the groups.
app.command("run")(run.run_command)  # `certreconcile run`: the continuous reconciler
app.command()(plan.validate)
app.command()(plan.plan)
app.command()(apply.apply)
app.command()(status.status)
app.command()(check.check)  # `certreconcile check`: the preflight
app.command("import")(import_.import_)  # `certreconcile import`: adopt existing certificates
app.command()(manual.revoke)
app.command()(manual.rotate)
app.command()(show.show)
app.command()(housekeeping.schema)
app.command()(housekeeping.init)
app.add_typer(db.db_app, name="db")
app.add_typer(kms.kms_app, name="kms")
app.add_typer(audit.audit_app, name="audit")
app.add_typer(agent.agent_app, name="agent")


def _is_usage_exception(exc: BaseException) -> bool:
    """click-style exceptions (typer vendors its own click, so match by shape, not by class)."""
    return callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int)


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage errors exit 1 too (2 means 'changes' for plan); never a traceback."""
    try:
        rv = app(args=argv, standalone_mode=False)
    except typer.Abort:
        err("Aborted.")
        sys.exit(ExitCode.ERROR)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err("Interrupted.")
        sys.exit(130)
    except CertReconcileError as exc:
        err(exc.one_line())
        sys.exit(ExitCode.ERROR)
    except Exception as exc:
        if _is_usage_exception(exc):
            exc.show()  # type: ignore[attr-defined]  # "Usage: ... Error: No such option: --bogus"
            no_args_help = type(exc).__name__ == "NoArgsIsHelpError"
            sys.exit(ExitCode.OK if no_args_help else ExitCode.ERROR)
        if os.environ.get("CERTRECONCILE_DEBUG"):
            raise
        err(
            f"error[internal-error]: {type(exc).__name__} (a bug in certreconcile; "
            "rerun with CERTRECONCILE_DEBUG=1 for the traceback and report it)"
        )
        sys.exit(ExitCode.ERROR)
    sys.exit(rv if isinstance(rv, int) else ExitCode.OK)
