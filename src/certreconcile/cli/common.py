"""What every command shares: the --dir option, error output, colour, loading the declarations, the clock.

No command module imports another command module or ``cli/main.py``: they meet here.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, ParamSpec, TypeVar

import typer

from certreconcile.cli.exit_codes import ExitCode
from certreconcile.clock import Clock, clock_from_env
from certreconcile.errors import CertReconcileError, DesiredStateError

if TYPE_CHECKING:
    from certreconcile.desired import DesiredCache
    from certreconcile.desired.model import DesiredState

__all__ = [
    "DEFAULT_DIR",
    "DirOption",
    "cli_clock",
    "collector_paused",
    "err",
    "fail",
    "load_directory",
    "use_color",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

DirOption = Annotated[
    Path,
    typer.Option(
        "--dir",
        "-d",
        envvar="CERTRECONCILE_DIR",
        help="The desired-state directory (also locates the embedded database).",
        file_okay=False,
        show_default="current directory",
    ),
]
DEFAULT_DIR = Path()


def use_color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def err(text: str) -> None:
    typer.echo(text, err=True)


def fail(exc: CertReconcileError) -> NoReturn:
    """Print ``exc`` (each diagnostic of a desired-state error on its own line) and exit 1."""
    if isinstance(exc, DesiredStateError):
        for diagnostic in exc.diagnostics:
            err(str(diagnostic))
        count = len(exc.diagnostics)
        err(f"error[{exc.code}]: {count} problem{'s' if count != 1 else ''} in the desired state ({exc.hint})")
    else:
        err(exc.one_line())
    raise typer.Exit(ExitCode.ERROR)


def load_directory(directory: Path, ref: str | None = None, cache: DesiredCache | None = None) -> DesiredState:
    """The declarations of ``directory`` (at ``ref``, else the work tree with its git origin); ``cache``: reuse
    the last ones loaded through it while the files are the same (``run``)."""
    from certreconcile.desired import load_desired
    from certreconcile.wiring import with_git_origin

    if not directory.is_dir():
        raise CertReconcileError(
            f"{directory} is not a directory", code="dir-missing", hint="pass the desired-state directory with --dir"
        )
    desired = load_desired(directory, ref=ref) if cache is None else cache.load(directory, ref)
    return desired if ref is not None else with_git_origin(desired, directory)


def cli_clock() -> Clock:
    """The one clock of a command: the system's, or a fixed one under ``CERTRECONCILE_TEST_NOW`` (tests only)."""
    try:
        return clock_from_env(os.environ)
    except ValueError as exc:
        fail(CertReconcileError(str(exc), code="usage", hint="write an ISO-8601 UTC time, e.g. 2026-01-01T12:00:00Z"))


def collector_paused(command: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run a one-shot command (plan, validate) without the cyclic garbage collector.

    Its imports and the states it loads are many small long-lived objects: at 10,000 certificates
    the collector's scans of them cost ~70 ms of a ~1 s ``plan``. Reference counting still frees
    everything; the collector is back on (as it was) when the command returns.
    """

    @functools.wraps(command)
    def paused(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return command(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return paused
