"""``certreconcile kms rewrap``: move every stored data key under another KMS or master key."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from certreconcile.cli.common import DEFAULT_DIR, DirOption, cli_clock, err, fail, load_directory
from certreconcile.cli.exit_codes import ExitCode
from certreconcile.cli.formats import FormatOption, OutputFormat
from certreconcile.errors import CertReconcileError

if TYPE_CHECKING:
    from certreconcile.actual.store import StoredKeyRef
    from certreconcile.apply.rewrap import RewrapResult

__all__ = ["kms_app"]

kms_app = typer.Typer(
    help="Key-encryption housekeeping.\n\nExample: certreconcile kms rewrap --dir certs/ --to new-kms.yaml",
    no_args_is_help=True,
)


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
    output_format: FormatOption = OutputFormat.TEXT,
) -> None:
    """Re-encrypt every stored data key under another KMS or master key; no private key is decrypted.

    Each row is moved in its own transaction and audited (key_rewrapped); rows already under the
    target are skipped, so an interrupted rewrap resumes when run again. Exit 1 if any row failed.

    Examples: certreconcile kms rewrap --to ../aws-kms.yaml;
    certreconcile kms rewrap --from ../old-local.yaml  (then the declared KMS is the target)
    """
    from certreconcile.apply.rewrap import rewrap_keys
    from certreconcile.wiring import Settings, actor_for, build_rewrap_kms, open_store

    try:
        desired = load_directory(directory)
        settings = Settings.from_env(directory)
        store = open_store(settings)
        kms = build_rewrap_kms(desired, settings, to, from_file)
        progress = None
        if sys.stderr.isatty():

            def progress(stored: StoredKeyRef, outcome: str) -> None:
                err(f"  {outcome}: {stored.table.value} {stored.name}")

        result = rewrap_keys(
            store,
            kms.target,
            kms.sources,
            actor=actor_for(desired, settings.env),
            clock=cli_clock(),
            batch=batch,
            on_progress=progress,
        )
    except CertReconcileError as exc:
        fail(exc)
    _report(result, output_format)


def _report(result: RewrapResult, output_format: str) -> None:
    """The counts (JSON, or a summary line and each failure on stderr); exit 1 when a row was not moved."""
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
        err(f"failed: {failure.table.value} {failure.name} ({failure.row_id}): {failure.message}")
    summary = (
        f"Rewrap to {result.target_kms} {result.target_key_id}: rewrapped {result.rewrapped}, "
        f"skipped {result.skipped}, failed {len(result.failures)}"
    )
    if result.conflicts:
        summary += f", changed concurrently {result.conflicts} (run again to check them)"
    typer.echo(summary + ".")
    if not result.ok:
        err("error[rewrap-incomplete]: some keys were not moved (fix the cause and run `kms rewrap` again)")
        raise typer.Exit(ExitCode.ERROR)
