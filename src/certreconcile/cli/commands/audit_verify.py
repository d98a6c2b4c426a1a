"""``certreconcile audit verify``: check the audit trail's hash chain (see :mod:`certreconcile.audit.verify`).

Registered under the ``audit`` group by ``cli/commands/audit.py``; the walk and the head file live in
:mod:`certreconcile.audit`, this module only parses options and prints the report.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from certreconcile.cli.exit_codes import ExitCode
from certreconcile.cli.formats import FormatOption, OutputFormat
from certreconcile.errors import CertReconcileError

if TYPE_CHECKING:
    from certreconcile.audit.verify import VerifyReport

__all__ = ["render_report_json", "render_report_text", "verify_command"]


_DirOption = Annotated[
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
_HeadOption = Annotated[
    Path | None,
    typer.Option("--head", help="A head exported earlier: the chain must still hold that row at that seq."),
]
_ExportHeadOption = Annotated[
    Path | None,
    typer.Option("--export-head", help="When the chain is intact, write its head (seq and hash) to this file."),
]


def verify_command(
    directory: _DirOption = Path(),
    head: _HeadOption = None,
    export_head: _ExportHeadOption = None,
    output_format: FormatOption = OutputFormat.TEXT,
) -> None:
    """Check the audit trail's hash chain: report the first changed, deleted or reordered row.

    Every CertAudit row carries a hash over its content and the previous row's hash. Exits 0
    when the chain is intact, 1 when it was tampered with. Keep an exported head outside the
    database (e.g. in git): checking against it later also detects a truncated or rewritten tail.

    Examples: certreconcile audit verify;
    certreconcile audit verify --export-head audit-head.json;
    certreconcile audit verify --head audit-head.json --format json
    """
    from certreconcile.audit.head import export_head as write_head
    from certreconcile.audit.head import load_head
    from certreconcile.audit.verify import AuditChainReader, verify_chain
    from certreconcile.cli.common import cli_clock
    from certreconcile.wiring import Settings, open_store

    try:
        anchors = [load_head(head)] if head is not None else []
        store = open_store(Settings.from_env(directory), migrate=False)  # read-only: a verifier writes nothing
        with store.session() as session:
            if not isinstance(session, AuditChainReader):
                raise CertReconcileError("this state store keeps no audit chain", code="usage")
            report = verify_chain(session, anchors)
        exported = None
        if export_head is not None and report.intact:
            write_head(export_head, report.head, cli_clock().now())
            exported = export_head
    except CertReconcileError as exc:
        typer.echo(exc.one_line(), err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    if output_format == "json":
        typer.echo(render_report_json(report, exported))
    else:
        sys.stdout.write(render_report_text(report, exported))
    if not report.intact:
        if export_head is not None:
            typer.echo(f"warning: {export_head} not written: the chain is not intact", err=True)
        typer.echo(
            "error[audit-tampered]: the audit trail was tampered with "
            "(restore CertAudit from a backup and find who had superuser or owner access to the database)",
            err=True,
        )
        raise typer.Exit(ExitCode.ERROR)


def render_report_text(report: VerifyReport, exported: Path | None) -> str:
    checked = ", ".join(f"{anchor.source} (seq {anchor.head.seq})" for anchor in report.anchors)
    lines = []
    if report.problem is None:
        lines.append(f"Audit chain intact: {report.rows} rows, head seq {report.head.seq} {report.head.row_hash}")
    else:
        problem = report.problem
        lines.append(f"Audit chain TAMPERED ({problem.kind.value} at seq {problem.seq}): {problem.message}")
        lines.append(f"Intact up to seq {report.head.seq}.")
    lines.append(f"Checked against: {checked}.")
    if exported is not None:
        lines.append(f"Head written to {exported}.")
    return "\n".join(lines) + "\n"


def render_report_json(report: VerifyReport, exported: Path | None) -> str:
    problem = report.problem
    document: dict[str, Any] = {
        "format_version": 1,
        "intact": report.intact,
        "rows": report.rows,
        "head": {"seq": report.head.seq, "row_hash": report.head.row_hash},
        "checked_heads": [
            {"source": anchor.source, "seq": anchor.head.seq, "row_hash": anchor.head.row_hash}
            for anchor in report.anchors
        ],
        "problem": None
        if problem is None
        else {"kind": problem.kind.value, "seq": problem.seq, "id": problem.id, "message": problem.message},
        "exported_head": None if exported is None else str(exported),
    }
    return json.dumps(document, indent=2, sort_keys=True)
