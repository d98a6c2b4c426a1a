"""Least-privilege database roles (``certreconcile db roles``), run by an administrator.

Three roles, for one database already migrated (``certreconcile db upgrade``):

* the **owner** (``NOLOGIN``): owns the schema, every table, sequence and function. Only
  an owner (or a superuser) can disable the audit triggers, so no process runs as it.
* the **apply** role (``LOGIN``): reads and writes what ``apply``, ``run``, ``rotate``,
  ``revoke`` and ``kms rewrap`` need, INSERT and SELECT only on ``CertAudit``; owns nothing.
* the **plan** role (``LOGIN``, read-only sessions): SELECT on every column except the
  sealed keys (:data:`PLAN_HIDDEN`), granted column by column, so a column added by a
  later migration stays unreadable until ``db roles`` runs again.

Roles are created without a password: the administrator sets one (``ALTER ROLE ...
PASSWORD``) or configures certificate or peer authentication. An existing role keeps its
attributes; it is refused when it is a superuser, a member of the owner or the database's
owner (each could undo the point). Every run revokes the roles' privileges in the schema
and grants them again, in one transaction: running it twice changes nothing, and after a
migration it grants what the new objects need. No default privileges: a table added by a
migration must be classified in :data:`POLICIES` first (an unknown table is refused).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from certreconcile.errors import StateError

__all__ = ["APPLY_PRIVILEGES", "PLAN_HIDDEN", "POLICIES", "RoleNames", "database_roles"]

_READ_WRITE = ("SELECT", "INSERT", "UPDATE")
_READ_WRITE_DELETE = ("SELECT", "INSERT", "UPDATE", "DELETE")

#: What the apply role may do on each table (lower-case names, as PostgreSQL folds them).
#: UPDATE on the key tables is for ``kms rewrap``; DELETE only where the repository deletes.
APPLY_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "schemamigration": ("SELECT",),
    "certificate": _READ_WRITE,
    "certrotation": _READ_WRITE,
    "certaudit": ("SELECT", "INSERT"),  # append-only: an audit row is never changed
    "certaudithead": ("SELECT",),  # moved only by the audit trigger, as the owner
    "distribution": _READ_WRITE_DELETE,
    "acmeaccount": _READ_WRITE,
    "acmeorder": _READ_WRITE,
    "acmerenewalinfo": _READ_WRITE,
    "applyrun": _READ_WRITE,
    "applystep": _READ_WRITE,
    "statemeta": ("SELECT", "UPDATE"),
    "localca": _READ_WRITE,
    "issuancebackoff": _READ_WRITE_DELETE,
    "fleetca": _READ_WRITE,  # one row; UPDATE for `kms rewrap`
    "fleetagent": _READ_WRITE,  # enrolment, renewal, last seen
    "notificationoutbox": _READ_WRITE,  # enqueue, claim, mark sent: rows are kept, never deleted
}

#: Columns the plan role may not read: the KMS envelopes of private keys (``ApplyStep.detail``
#: journals the envelope of each key generated, under ``key_ref``).
PLAN_HIDDEN: dict[str, frozenset[str]] = {
    "certificate": frozenset({"key_ref"}),
    "localca": frozenset({"key_ref"}),
    "acmeaccount": frozenset({"key_ref"}),
    "applystep": frozenset({"detail"}),
    "fleetca": frozenset({"key_ref"}),
}

#: Every table certreconcile's migrations create; anything else in the schema is refused.
POLICIES = frozenset(APPLY_PRIVILEGES)

#: SECURITY DEFINER functions both roles call (counts of key envelopes per KMS, no envelope).
_CALLABLE = frozenset({"certreconcile_key_ref_usage"})

_CODE = "db-roles-refused"


@dataclass(frozen=True, slots=True)
class RoleNames:
    plan: str = "certreconcile_plan"
    apply: str = "certreconcile_apply"
    owner: str = "certreconcile_owner"


@dataclass(frozen=True, slots=True)
class _Catalog:
    database: str
    schema: str
    tables: dict[str, list[str]]  # table -> its columns, in order
    other_relations: list[tuple[str, str]]  # (kind keyword, name): sequences, views not owned by a column
    functions: list[tuple[str, str]]  # (name, identity arguments)
    roles: dict[str, tuple[bool, bool, bool]]  # existing: (superuser, member of owner, owns the database)


_SQL_SCHEMA = (
    "SELECT current_database(), n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.oid = to_regclass('schemamigration')"
)
# Objects an extension brought along (dependency type 'e') are the extension's, never ours;
# a sequence owned by a column ('a', 'i') follows its table's owner.
_SQL_RELATIONS = (
    "SELECT c.relname, c.relkind FROM pg_class c WHERE c.relnamespace = %s::regnamespace"
    " AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
    " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')"
    " AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid"
    " AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))"
    " ORDER BY c.relname"
)
_SQL_COLUMNS = (
    "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
    " WHERE c.relnamespace = %s::regnamespace AND c.relkind IN ('r', 'p') AND a.attnum > 0"
    " AND NOT a.attisdropped ORDER BY c.relname, a.attnum"
)
_SQL_FUNCTIONS = (
    "SELECT p.proname, pg_get_function_identity_arguments(p.oid) FROM pg_proc p"
    " WHERE p.pronamespace = %s::regnamespace"
    " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') ORDER BY 1, 2"
)
_SQL_ROLE = (
    "SELECT r.rolsuper, o.oid IS NOT NULL AND pg_has_role(r.oid, o.oid, 'MEMBER'),"
    " r.oid = (SELECT datdba FROM pg_database WHERE datname = current_database())"
    " FROM pg_roles r LEFT JOIN pg_roles o ON o.rolname = %s WHERE r.rolname = %s"
)
_KIND_KEYWORD = {
    "r": "TABLE", "p": "TABLE", "f": "FOREIGN TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE",
}  # fmt: skip


def _read_catalog(conn: psycopg.Connection[Any], names: RoleNames) -> _Catalog:
    located = conn.execute(_SQL_SCHEMA).fetchone()
    if located is None:
        raise StateError(
            "the database has no certreconcile schema yet",
            code="schema-missing",
            hint="run `certreconcile db upgrade` first, as the administrator, then `certreconcile db roles`",
        )
    database, schema = str(located[0]), str(located[1])
    tables: dict[str, list[str]] = {}
    for table, column in conn.execute(_SQL_COLUMNS, (schema,)):
        tables.setdefault(table, []).append(column)
    others = [
        (_KIND_KEYWORD[kind], name)
        for name, kind in conn.execute(_SQL_RELATIONS, (schema,))
        if kind not in ("r", "p")
    ]
    functions = [(str(name), str(args)) for name, args in conn.execute(_SQL_FUNCTIONS, (schema,))]
    roles = {}
    for role in (names.plan, names.apply, names.owner):
        row = conn.execute(_SQL_ROLE, (names.owner, role)).fetchone()
        if row is not None:
            roles[role] = (bool(row[0]), bool(row[1]), bool(row[2]))
    return _Catalog(database, schema, tables, others, functions, roles)


def _check(catalog: _Catalog, names: RoleNames) -> None:
    if len({names.plan, names.apply, names.owner}) != 3:
        raise StateError("the plan, apply and owner roles must be three different roles", code=_CODE,
                          hint="pass distinct names to --plan-role, --apply-role and --owner-role")  # fmt: skip
    unknown = sorted(set(catalog.tables) - POLICIES)
    if unknown:
        raise StateError(
            f"schema {catalog.schema} holds tables certreconcile has no privilege policy for: {', '.join(unknown)}",
            code=_CODE,
            hint="keep the database for certreconcile alone; tables of a newer migration need a newer certreconcile",
        )
    missing = sorted(POLICIES - set(catalog.tables))
    if missing:
        raise StateError(f"tables missing from schema {catalog.schema}: {', '.join(missing)}", code="schema-missing",
                         hint="run `certreconcile db upgrade` first, then `certreconcile db roles`")  # fmt: skip
    for role in (names.plan, names.apply):
        superuser, member_of_owner, owns_database = catalog.roles.get(role, (False, False, False))
        why = (
            "is a superuser" if superuser
            else f"is a member of {names.owner}" if member_of_owner
            else f"owns the database {catalog.database}" if owns_database
            else None
        )  # fmt: skip
        if why:
            raise StateError(f"role {role} {why}: it could disable the audit triggers", code=_CODE,
                             hint="choose another role name, or remove that power from the role first")  # fmt: skip


def _statements(catalog: _Catalog, names: RoleNames) -> list[sql.Composed]:
    plan, apply, owner = (sql.Identifier(name) for name in (names.plan, names.apply, names.owner))
    schema = sql.Identifier(catalog.schema)
    both = sql.SQL("{}, {}").format(plan, apply)
    out: list[sql.Composed] = []
    for name, login in ((names.owner, "NOLOGIN"), (names.apply, "LOGIN"), (names.plan, "LOGIN")):
        if name not in catalog.roles:
            out.append(sql.SQL("CREATE ROLE {} " + login).format(sql.Identifier(name)))
    out.append(
        sql.SQL("ALTER ROLE {} IN DATABASE {} SET default_transaction_read_only = on").format(
            plan, sql.Identifier(catalog.database)
        )
    )
    out.append(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(catalog.database), both))
    out.append(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(schema, owner))
    out.append(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC").format(schema))
    out.extend(_ownership(catalog, schema, owner))
    out.extend(_privileges(catalog, schema, plan, apply, both))
    return out


def _ownership(catalog: _Catalog, schema: sql.Identifier, owner: sql.Identifier) -> Iterable[sql.Composed]:
    for table in catalog.tables:  # also moves its indexes and column sequences
        yield sql.SQL("ALTER TABLE {}.{} OWNER TO {}").format(schema, sql.Identifier(table), owner)
    for keyword, name in catalog.other_relations:
        yield sql.SQL("ALTER " + keyword + " {}.{} OWNER TO {}").format(schema, sql.Identifier(name), owner)
    for name, args in catalog.functions:
        # identity arguments as PostgreSQL prints them: valid SQL, read from the catalog
        function = sql.SQL("{}.{}({})").format(schema, sql.Identifier(name), sql.SQL(args))
        yield sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(function, owner)


def _privileges(
    catalog: _Catalog, schema: sql.Identifier, plan: sql.Identifier, apply: sql.Identifier, both: sql.Composable
) -> Iterable[sql.Composed]:
    yield sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(schema, both)
    yield sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(schema, both)
    yield sql.SQL("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {} FROM {}").format(schema, both)
    yield sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, both)
    for table, columns in catalog.tables.items():
        target = sql.SQL("{}.{}").format(schema, sql.Identifier(table))
        every = _columns(columns)
        # REVOKE ALL ON ALL TABLES leaves column grants in place: drop those too
        yield sql.SQL("REVOKE ALL ({}) ON {} FROM {}").format(every, target, both)
        rights = sql.SQL(", ").join(sql.SQL(right) for right in APPLY_PRIVILEGES[table])
        yield sql.SQL("GRANT {} ON {} TO {}").format(rights, target, apply)
        visible = [column for column in columns if column not in PLAN_HIDDEN.get(table, frozenset())]
        yield sql.SQL("GRANT SELECT ({}) ON {} TO {}").format(_columns(visible), target, plan)
    yield sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(schema, apply)
    for name, args in catalog.functions:
        if name in _CALLABLE:
            function = sql.SQL("{}.{}({})").format(schema, sql.Identifier(name), sql.SQL(args))
            yield sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(function, both)


def _columns(columns: Sequence[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(column) for column in columns)


def database_roles(url: str, names: RoleNames, *, execute: bool) -> list[str]:
    """The statements that set the three roles up in ``url``'s database; run them when ``execute``.

    They run in one transaction (all or nothing). Without ``execute`` nothing is changed: the
    catalog is only read, to list the objects to grant on.
    """
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            catalog = _read_catalog(conn, names)
            _check(catalog, names)
            statements = _statements(catalog, names)
            texts = [statement.as_string(conn) for statement in statements]
            if not execute:
                conn.rollback()
                return texts
            for statement in statements:
                conn.execute(statement)
            conn.commit()
            return texts
    except psycopg.Error as exc:
        primary = exc.diag.message_primary if exc.sqlstate else type(exc).__name__
        raise StateError(
            f"setting up the database roles failed (SQLSTATE {exc.sqlstate}): {primary}",
            code="db-roles-failed",
            hint="run `certreconcile db roles` as a role allowed to create roles and change owners "
            "(a superuser, or the database owner with CREATEROLE); nothing was changed",
        ) from exc
