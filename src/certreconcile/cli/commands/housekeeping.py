"""``certreconcile schema`` and ``certreconcile init``: the JSON Schema, a new desired-state repository."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from certreconcile.cli.common import fail
from certreconcile.errors import CertReconcileError

__all__ = ["init", "schema"]


def schema() -> None:
    """Print the JSON Schema of the desired-state files (for editors and CI validators).

    Example: certreconcile schema > schemas/desired-state.schema.json
    """
    from certreconcile.desired.schema import render_json_schema

    sys.stdout.write(render_json_schema())


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
        fail(exc)
    for path in created:
        typer.echo(f"created {path}")
    typer.echo(f"Next: certreconcile plan --dir {directory}")
