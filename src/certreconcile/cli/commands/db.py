"""``certreconcile db``: migrations, least-privilege roles, the embedded server."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from certreconcile.cli.common import DEFAULT_DIR, DirOption, fail
from certreconcile.cli.formats import FormatOption, OutputFormat
from certreconcile.errors import CertReconcileError

__all__ = ["db_app"]

db_app = typer.Typer(
    help="Database housekeeping: migrations and the embedded server.\n\nExample: certreconcile db upgrade --dir certs/",
    no_args_is_help=True,
)


@db_app.command("upgrade")
def db_upgrade(
    directory: DirOption = DEFAULT_DIR,
    output_format: FormatOption = OutputFormat.TEXT,
) -> None:
    """Apply pending database migrations (other commands do it on their own too).

    Example: certreconcile db upgrade --dir certs/
    """
    from certreconcile.wiring import Settings, open_store

    try:
        store = open_store(Settings.from_env(directory), migrate=False)
        applied = store.upgrade()
    except CertReconcileError as exc:
        fail(exc)
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
        fail(exc)
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
