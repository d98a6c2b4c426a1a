"""``certreconcile audit``: the trail (the group's own callback); ``audit verify`` lives in ``audit_verify.py``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from certreconcile.cli.commands.audit_verify import verify_command
from certreconcile.cli.common import DEFAULT_DIR, DirOption, cli_clock, fail
from certreconcile.cli.formats import FormatOption, OutputFormat
from certreconcile.errors import CertReconcileError

if TYPE_CHECKING:
    from certreconcile.audit.events import AuditEvent

__all__ = ["audit_app"]

# `certreconcile audit [--name N ...]` lists the trail (the group's own callback);
# `certreconcile audit verify` checks its hash chain (audit_verify.py).
audit_app = typer.Typer(invoke_without_command=True)
audit_app.command("verify")(verify_command)


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
    output_format: FormatOption = OutputFormat.TEXT,
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

    try:
        since_at = _parse_when(since, "--since")
        until_at = _parse_when(until, "--until")
        store = open_store(Settings.from_env(directory))
        with store.session() as session:
            events = list(
                session.audit_events(name=name, action=action, limit=limit, actor=actor, since=since_at, until=until_at)
            )
    except CertReconcileError as exc:
        fail(exc)
    _print_events(events, output_format)


def _print_events(events: list[AuditEvent], output_format: str) -> None:
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
        return cli_clock().now() - parse_duration(text)
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
