"""``certreconcile db roles``: a read-only plan role without the key columns, an apply role that
owns nothing (so it cannot disable the audit triggers), and a NOLOGIN owner of everything."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import errors as pgerrors
from psycopg import sql

from acme_servers import AriProxy, Pebble
from certreconcile.actual.roles import PLAN_HIDDEN, POLICIES, RoleNames
from e2e.conftest import Runner
from e2e.test_acme_pebble import acme_doc, write
from helpers import login_url

ROOT = Path(__file__).resolve().parents[2]

# One statement per key column the plan role must not read.
KEY_READS = [
    "SELECT key_ref FROM Certificate",
    "SELECT key_ref FROM LocalCa",
    "SELECT key_ref FROM AcmeAccount",
    "SELECT detail FROM ApplyStep",
    "SELECT * FROM Certificate",
    "SELECT count(*) FROM Certificate WHERE key_ref <> ''",
]
# What nobody but the owner (or a superuser) may do to the audit trail.
AUDIT_TAMPERING = [
    "ALTER TABLE CertAudit DISABLE TRIGGER certaudit_no_update",
    "ALTER TABLE CertAudit DISABLE TRIGGER ALL",
    "UPDATE CertAudit SET actor = 'someone else'",
    "DELETE FROM CertAudit",
    "TRUNCATE CertAudit",
    "DROP TABLE CertAudit",
    "ALTER TABLE CertAudit OWNER TO CURRENT_USER",
]


@pytest.fixture
def roles(database_url: str) -> Iterator[RoleNames]:
    """Unique role names (roles are global to the server); dropped again after the test."""
    tag = uuid.uuid4().hex[:10]
    names = RoleNames(plan=f"plan_{tag}", apply=f"apply_{tag}", owner=f"owner_{tag}")
    yield names
    with psycopg.connect(database_url, autocommit=True) as conn:
        for role in (names.plan, names.apply, names.owner):
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def role_args(names: RoleNames) -> list[str]:
    return ["--plan-role", names.plan, "--apply-role", names.apply, "--owner-role", names.owner]


def env_as(cli_env: dict[str, str], database_url: str, role: str) -> dict[str, str]:
    # The test server takes password logins only: the role gets one here. In production each
    # role gets a password or a client certificate from the administrator.
    env = dict(cli_env)
    env["CERTRECONCILE_DATABASE_URL"] = login_url(database_url, role)
    return env


def copy_example(tmp_path: Path) -> Path:
    desired = tmp_path / "desired"
    shutil.copytree(ROOT / "examples" / "desired-state", desired, ignore=shutil.ignore_patterns(".certreconcile"))
    return desired


def refused(url: str, statement: str, *, read_write: bool = False) -> type[Exception]:
    with psycopg.connect(url) as conn:
        if read_write:
            conn.execute("SET TRANSACTION READ WRITE")
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(statement)
    return type(caught.value)


def test_print_shows_the_sql_and_changes_nothing(run_cli: Runner, database_url: str, roles: RoleNames) -> None:
    result = run_cli("db", "roles", *role_args(roles), "--print", check_code=0)
    text = result.stdout
    assert text.startswith("BEGIN;\n") and text.rstrip().endswith("COMMIT;")
    assert f'CREATE ROLE "{roles.owner}" NOLOGIN;' in text
    assert f'CREATE ROLE "{roles.plan}" LOGIN;' in text
    assert f'GRANT SELECT, INSERT ON "public"."certaudit" TO "{roles.apply}";' in text
    plan_certificate = next(
        line for line in text.splitlines() if line.startswith("GRANT SELECT (") and '"public"."certificate"' in line
    )
    assert '"has_key"' in plan_certificate and '"key_ref"' not in plan_certificate
    with psycopg.connect(database_url) as conn:
        found = conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", (list(vars_of(roles)),))
        assert found.fetchone() == (0,)


def vars_of(names: RoleNames) -> tuple[str, str, str]:
    return (names.plan, names.apply, names.owner)


def test_plan_role_plans_end_to_end_and_reads_no_key(
    run_cli: Runner, cli_env: dict[str, str], database_url: str, roles: RoleNames, tmp_path: Path
) -> None:
    desired = copy_example(tmp_path)
    run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=0)  # keys in every key table
    run_cli("db", "roles", *role_args(roles), check_code=0)
    run_cli("db", "roles", *role_args(roles), check_code=0)  # idempotent
    (desired / "more.yaml").write_text(
        "certificates:\n  - name: extra\n    domains: [extra.example.test]\n    issuer: demo-ca\n"
    )
    env = env_as(cli_env, database_url, roles.plan)
    missing_key = tmp_path / "no-such-dir" / "kms.key"
    env["CERTRECONCILE_LOCAL_KMS_KEY_FILE"] = str(missing_key)  # plan needs no KMS
    result = run_cli("plan", "--dir", str(desired), "--detailed-exitcode", env=env, check_code=2)
    assert "+ issue extra" in result.stdout
    assert "Plan: 1 to issue, 0 to rotate, 0 to revoke, 0 to redistribute." in result.stdout
    assert not missing_key.exists()

    plan_url = login_url(database_url, roles.plan)
    for statement in KEY_READS:
        assert refused(plan_url, statement) is pgerrors.InsufficientPrivilege, statement
    # Read-only twice over: the sessions default to read-only, and a read-write one has no right to write.
    assert refused(plan_url, "INSERT INTO CertAudit (name, action, actor) VALUES ('x', 'failed', 'me')") is (
        pgerrors.ReadOnlySqlTransaction
    )
    for statement in (
        "INSERT INTO CertAudit (name, action, actor) VALUES ('x', 'failed', 'me')",
        "UPDATE StateMeta SET serial = serial + 1",
        "CREATE TABLE stray (id int)",
    ):
        assert refused(plan_url, statement, read_write=True) is pgerrors.InsufficientPrivilege, statement
    run_cli("apply", "--dir", str(desired), "--auto-approve", env=env, check_code=1)


def test_apply_role_applies_but_cannot_touch_the_audit_trail(
    run_cli: Runner, cli_env: dict[str, str], database_url: str, roles: RoleNames, tmp_path: Path
) -> None:
    run_cli("db", "roles", *role_args(roles), check_code=0)
    desired = copy_example(tmp_path)
    env = env_as(cli_env, database_url, roles.apply)
    run_cli("apply", "--dir", str(desired), "--auto-approve", env=env, check_code=0)
    run_cli("rotate", "shop", "--dir", str(desired), env=env, check_code=0)
    assert "issued" in run_cli("audit", "--dir", str(desired), env=env, check_code=0).stdout
    assert (desired / ".certreconcile" / "deploy" / "web").is_dir()

    apply_url = login_url(database_url, roles.apply)
    for statement in AUDIT_TAMPERING:
        assert refused(apply_url, statement) is pgerrors.InsufficientPrivilege, statement
    with psycopg.connect(database_url) as conn:
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c"
            " WHERE c.relnamespace = 'public'::regnamespace"
            " UNION SELECT pg_get_userbyid(p.proowner) FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace"
            " UNION SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'"
        ).fetchall()
        assert owners == [(roles.owner,)]
        login = dict(conn.execute("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)",
                                  (list(vars_of(roles)),)).fetchall())  # fmt: skip
        assert login == {roles.plan: True, roles.apply: True, roles.owner: False}
        issued = conn.execute("SELECT count(*) FROM CertAudit WHERE action IN (%s, %s)", ("issued", "renewed"))
        assert issued.fetchone() == (5,)  # four certificates, then shop rotated


def test_every_key_column_is_hidden_from_the_plan_role(
    run_cli: Runner, database_url: str, roles: RoleNames
) -> None:
    run_cli("db", "roles", *role_args(roles), check_code=0)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT c.relname, a.attname, has_column_privilege(%s, c.oid, a.attnum, 'SELECT')"
            " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum > 0"
            " AND NOT a.attisdropped",
            (roles.plan,),
        ).fetchall()
    assert {table for table, _column, _readable in rows} == POLICIES
    hidden = {(table, column) for table, column, readable in rows if not readable}
    assert hidden == {(table, column) for table, columns in PLAN_HIDDEN.items() for column in columns}
    # A key envelope added by a later migration in a column named key_ref must be hidden as well.
    assert {(table, column) for table, column, _readable in rows if column == "key_ref"} <= hidden


def test_roles_behind_schema_are_refused_with_a_hint(
    run_cli: Runner, cli_env: dict[str, str], database_url: str, roles: RoleNames, tmp_path: Path
) -> None:
    run_cli("db", "roles", *role_args(roles), check_code=0)
    with psycopg.connect(database_url) as conn:  # as if certreconcile were upgraded, the database not yet
        conn.execute("DELETE FROM SchemaMigration WHERE version = 8")
    desired = copy_example(tmp_path)
    for role, command in ((roles.plan, "plan"), (roles.apply, "apply")):
        env = env_as(cli_env, database_url, role)
        result = run_cli(command, "--dir", str(desired), "--auto-approve", env=env, check_code=1) if (
            command == "apply"
        ) else run_cli(command, "--dir", str(desired), env=env, check_code=1)
        assert "error[schema-behind]" in result.stderr and "0008_least_privilege" in result.stderr
        assert "db upgrade" in result.stderr and "Traceback" not in result.stderr
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM SchemaMigration WHERE version = 8").fetchone() == (0,)


def test_an_unknown_table_or_a_powerful_role_is_refused_and_nothing_changes(
    run_cli: Runner, database_url: str, roles: RoleNames
) -> None:
    with psycopg.connect(database_url) as conn:
        admin = conn.execute("SELECT current_user").fetchone()
        conn.execute("CREATE TABLE stray (id int)")
    result = run_cli("db", "roles", *role_args(roles), check_code=1)
    assert "error[db-roles-refused]" in result.stderr and "stray" in result.stderr
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE stray")
    assert admin is not None
    superuser = RoleNames(plan=roles.plan, apply=admin[0], owner=roles.owner)
    result = run_cli("db", "roles", *role_args(superuser), check_code=1)
    assert f"role {admin[0]} is a superuser" in result.stderr
    with psycopg.connect(database_url) as conn:
        found = conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", (list(vars_of(roles)),))
        assert found.fetchone() == (0,)


@pytest.mark.integration
def test_acme_issuance_under_the_apply_role_and_refresh_under_the_plan_role(
    ari_proxy: AriProxy, pebble: Pebble, run_cli: Runner, cli_env: dict[str, str], database_url: str,
    roles: RoleNames, tmp_path: Path,
) -> None:  # fmt: skip
    """The ACME tables (account, order, renewal windows, backoff) are writable by the apply role."""
    run_cli("db", "roles", *role_args(roles), check_code=0)
    shop = {"name": "shop", "domains": ["shop.roles.test"], "issuer": "pebble", "targets": ["deploy"]}
    doc = acme_doc(pebble, [shop], directory=ari_proxy.directory_url, ca_bundle=str(ari_proxy.ca_bundle))
    desired = write(tmp_path / "repo", doc)
    apply_env = env_as(cli_env, database_url, roles.apply)
    run_cli("apply", "--dir", str(desired), "--auto-approve", env=apply_env, check_code=0)
    now = datetime.now(UTC)
    ari_proxy.window = (now + timedelta(days=10), now + timedelta(days=11))
    run_cli("apply", "--dir", str(desired), "--auto-approve", env=apply_env, check_code=0)  # stores the ARI window
    plan_env = env_as(cli_env, database_url, roles.plan)
    run_cli("plan", "--dir", str(desired), "--refresh", "--detailed-exitcode", env=plan_env, check_code=0)
    run_cli("status", "--dir", str(desired), env=plan_env, check_code=0)
    assert "shop" in run_cli("audit", "--dir", str(desired), env=plan_env, check_code=0).stdout
    with psycopg.connect(database_url) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM AcmeAccount), (SELECT count(*) FROM AcmeOrder),"
            " (SELECT count(*) FROM AcmeRenewalInfo), (SELECT count(*) FROM Certificate)"
        ).fetchone()
    assert counts == (1, 1, 1, 1)
