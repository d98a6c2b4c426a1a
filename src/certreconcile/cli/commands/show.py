"""``certreconcile show PLANFILE``: print a plan saved by ``plan --out``, as ``plan`` prints it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from certreconcile.cli.common import fail, use_color
from certreconcile.cli.formats import PlanFormat, PlanFormatOption
from certreconcile.cli.planfile import read_plan_file
from certreconcile.errors import CertReconcileError

__all__ = ["show"]


def show(
    plan_file: Annotated[
        Path, typer.Argument(metavar="PLANFILE", help="A plan saved by `plan --out`.", dir_okay=False)
    ],
    output_format: PlanFormatOption = PlanFormat.TEXT,
) -> None:
    """Print a saved plan (text, markdown or json), without the database or the declarations.

    It shows what the plan held when it was saved; `apply FILE` refuses it if the state moved since.

    Examples: certreconcile show plan.json; certreconcile show plan.json --format markdown > comment.md
    """
    from certreconcile.render import render_json, render_markdown, render_text

    try:
        saved = read_plan_file(plan_file)
    except CertReconcileError as exc:
        fail(exc)
    match output_format:
        case PlanFormat.JSON:
            sys.stdout.write(render_json(saved))
        case PlanFormat.MARKDOWN:
            sys.stdout.write(render_markdown(saved))
        case _:
            sys.stdout.write(render_text(saved, color=use_color()))
