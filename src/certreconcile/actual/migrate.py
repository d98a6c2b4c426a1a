"""Schema migrations: numbered SQL files applied in order, each in its own transaction.

Migrations are package data, ``certreconcile/actual/migrations/NNNN_name.sql``; the
number is the version. :func:`upgrade` applies the pending ones and records each in
``SchemaMigration`` inside the same transaction, so a migration is either wholly
applied and recorded or not at all. A session-level advisory lock serializes
concurrent upgrades (two ``certreconcile`` processes starting at once): the second
waits, then finds nothing left to do.

``schema.sql`` at the repository root is the whole DDL that the migrations produce,
followed by the ``SchemaMigration`` rows they leave. It is generated, never edited by
hand (``tests/integration/test_database.py`` compares the two catalogs)::

    PYTHONPATH=src python -m certreconcile.actual.migrate schema > schema.sql

When a later migration alters earlier tables, the concatenation stays correct; it may
then be consolidated by hand into plain CREATE statements, and the test proves the
result still equals the migrated database.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from certreconcile.errors import StateError

__all__ = ["MIGRATION_LOCK_KEY", "Migration", "available_migrations", "render_schema", "upgrade"]

#: Text hashed into the advisory-lock key that serializes upgrades.
MIGRATION_LOCK_KEY = "certreconcile:migrate"

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # e.g. 0001_initial (the file name without .sql)
    sql: str


def available_migrations() -> list[Migration]:
    """Every packaged migration, in version order."""
    folder = resources.files("certreconcile.actual").joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        found.append(
            Migration(
                version=int(match.group(1)),
                name=entry.name.removesuffix(".sql"),
                sql=entry.read_text(encoding="utf-8"),
            )
        )
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise StateError(
            "two migrations share a version number",
            code="migration-invalid",
            hint="give every file in certreconcile/actual/migrations a unique NNNN prefix",
        )
    return found


def _applied_versions(conn: psycopg.Connection[Any]) -> set[int]:
    exists = conn.execute("SELECT to_regclass('schemamigration') IS NOT NULL").fetchone()
    if exists is None or not exists[0]:
        return set()
    return {int(row[0]) for row in conn.execute("SELECT version FROM SchemaMigration")}


def _check_may_migrate(conn: psycopg.Connection[Any], pending: list[Migration]) -> None:
    """Refuse before any DDL when this role can neither act as the schema's owner nor create in it.

    The plan and apply roles of ``certreconcile db roles`` own nothing: against a schema that
    is behind they must stop with this error, not attempt a migration half-way.
    """
    row = conn.execute(
        "SELECT current_user, pg_has_role(current_user, c.relowner, 'USAGE')"
        " AND has_schema_privilege(current_user, c.relnamespace, 'CREATE')"
        " FROM pg_class c WHERE c.oid = to_regclass('schemamigration')"
    ).fetchone()
    if row is None or row[1]:
        return
    names = ", ".join(migration.name for migration in pending)
    raise StateError(
        f"the database schema is behind ({names} pending) and role {row[0]} may not migrate it",
        code="schema-behind",
        hint="run `certreconcile db upgrade` then `certreconcile db roles` as the database administrator "
        "(see README, Production setup)",
    )


def upgrade(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply the pending migrations; return their names, in the order applied.

    ``conn`` must be idle (no open transaction); it is switched to autocommit for the
    duration, and each migration gets its own transaction.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise StateError(
            "cannot migrate inside an open transaction",
            code="migration-failed",
            hint="commit or roll back before calling upgrade()",
        )
    was_autocommit = conn.autocommit
    conn.autocommit = True
    applied: list[str] = []
    current: Migration | None = None
    try:
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (MIGRATION_LOCK_KEY,))
        try:
            done = _applied_versions(conn)
            pending = [migration for migration in available_migrations() if migration.version not in done]
            if pending and done:
                _check_may_migrate(conn, pending)
            for migration in pending:
                current = migration
                with conn.transaction():
                    conn.execute(migration.sql.encode())  # a whole script: no parameters
                    conn.execute(
                        "INSERT INTO SchemaMigration (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied.append(migration.name)
                current = None
        finally:
            if not conn.closed and not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (MIGRATION_LOCK_KEY,))
    except psycopg.Error as exc:
        where = f" in {current.name}" if current is not None else ""
        hint = "nothing of the failed migration was applied; fix the cause and run `certreconcile db upgrade` again"
        if isinstance(exc, psycopg.errors.InsufficientPrivilege | psycopg.errors.ReadOnlySqlTransaction):
            hint = "this role may not change the schema; run `certreconcile db upgrade` as the database administrator"
        raise StateError(
            f"database migration failed{where}: {type(exc).__name__} (SQLSTATE {exc.sqlstate})",
            code="migration-failed",
            hint=hint,
        ) from exc
    finally:
        if not conn.closed:
            conn.autocommit = was_autocommit
    return applied


def render_schema() -> str:
    """The text of ``schema.sql``: every migration in order, then the bookkeeping rows."""
    migrations = available_migrations()
    parts = [
        "-- schema.sql: the whole current DDL of certreconcile. GENERATED, do not edit:\n"
        "--   PYTHONPATH=src python -m certreconcile.actual.migrate schema > schema.sql\n"
        "-- (tests/integration/test_database.py checks it equals the migrated database)\n"
    ]
    for migration in migrations:
        parts.append(f"\n-- ==== {migration.name} ====\n\n{migration.sql.rstrip()}\n")
    parts.append("\n-- ==== bookkeeping: the migrations this schema contains ====\n\n")
    # Safe to inline: versions are ints and names match ^[0-9]{4}_[a-z0-9_]+$ (see _FILE_NAME).
    insert = "INSERT INTO SchemaMigration (version, name) VALUES ({version}, '{name}');\n"
    parts.extend(insert.format(version=migration.version, name=migration.name) for migration in migrations)
    return "".join(parts)


def main(argv: list[str]) -> int:
    if argv == ["schema"]:
        sys.stdout.write(render_schema())
        return 0
    sys.stderr.write("usage: python -m certreconcile.actual.migrate schema > schema.sql\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
