"""Session-wide PostgreSQL for the tests, one fresh database per test.

Fixtures:

* ``pg_server`` (session): the admin URL of a PostgreSQL server. ``CERTRECONCILE_TEST_DATABASE_URL``
  when set (a role allowed to CREATE DATABASE), else the product's embedded server
  (:class:`EmbeddedPostgres`), started in a temp dir of its own per test process and deleted at the end.
* ``migrated_template`` (session): the name of a template database, migrated once (per worker).
* ``database_url`` (function): the URL of a fresh database cloned from the template
  (``CREATE DATABASE ... TEMPLATE``, ~tens of ms), dropped after the test.
* ``postgres_store`` (function): a :class:`PostgresStore` on ``database_url``.
* ``pg_server_log`` (session): the server log of ``pg_server`` (``pgdata/log``), for tests that scan
  it (secret canaries); None when ``CERTRECONCILE_TEST_DATABASE_URL`` names an outside server.

``require_binary(name)`` (from ``helpers``) skips locally and fails on CI when a binary is missing.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from certreconcile.actual.embedded import EmbeddedPostgres
from certreconcile.actual.migrate import upgrade
from certreconcile.actual.repository import PostgresStore
from helpers import require_binary, with_database

__all__ = ["require_binary"]

# Every error made in the tests (and in the CLI processes they start) must carry a registered code.
os.environ.setdefault("CERTRECONCILE_CHECK_ERROR_CODES", "1")

# moto_kms, bao_transit, closed_port; gcp_kms (a Cloud KMS test server): real KMS servers, once per session
# challtestsrv, pebble: Pebble and its challenge test server, once per session
# bind_server, moto_route53, cloudflare_api: DNS servers for DNS-01 (tests/dns_servers.py)
# bao_pki: OpenBao PKI + ACME on the bao_transit server (tests/bao_pki_server.py)
# caddy_server, traefik_server, envoy_server: Caddy (admin API), Traefik (file provider), Envoy (file SDS)
# nginx_server, haproxy_server: factories of a real nginx / HAProxy for given names (tests/web_servers.py)
# ssh_server: a real OpenSSH sshd on 127.0.0.1 with its own host key, once per session (tests/ssh_server.py)
# test_fleet: a fleet CA and the applier's client certificates, once per session (tests/fleet_support.py)
pytest_plugins = [
    "kms_servers",
    "gcp_kms_server",
    "acme_servers",
    "dns_servers",
    "dns_extra_servers",
    "bao_pki_server",
    "caddy_server",
    "traefik_server",
    "envoy_server",
    "web_servers",
    "ssh_server",
    "fleet_support",
]

ENV_TEST_DATABASE_URL = "CERTRECONCILE_TEST_DATABASE_URL"

_counter = itertools.count()


def _worker_tag() -> str:
    """Unique per xdist worker and per test process (parallel CI jobs may share a server)."""
    return f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"


def _session_state_dir() -> Path:
    # Not under pytest's basetemp: as root the server runs as another account, and every new
    # pytest session of this user closes /tmp/pytest-of-<user> again (mode 0700), which would
    # cut a running server off its data.
    return Path(tempfile.gettempdir()) / f"certreconcile-tests-pg-{os.getpid()}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    configured = os.environ.get(ENV_TEST_DATABASE_URL)
    if configured:
        yield configured
        return
    # The product's own embedded server (private socket, password logins), one per test process.
    state_dir = _session_state_dir()
    server = EmbeddedPostgres(state_dir)
    url = server.ensure_running()
    with psycopg.connect(url, autocommit=True) as conn:
        # Test data need no durability: these make CREATE DATABASE and commits much faster.
        # Not synchronous_commit = off: VACUUM could then not mark freshly committed rows
        # all-visible, and index-only scans (tested) would not be chosen.
        for setting in ("fsync", "full_page_writes"):
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting)))
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield url
    finally:
        server.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server_log(pg_server: str) -> Path | None:
    if os.environ.get(ENV_TEST_DATABASE_URL):
        return None
    return _session_state_dir() / "pgdata" / "log"


@pytest.fixture(scope="session")
def migrated_template(pg_server: str) -> Iterator[str]:
    name = f"crtpl_{_worker_tag()}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(with_database(pg_server, name), autocommit=True) as conn:
        upgrade(conn)
    yield name
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database_url(pg_server: str, migrated_template: str) -> Iterator[str]:
    name = f"crt_{_worker_tag()}_{next(_counter)}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(migrated_template)
            )
        )
    try:
        yield with_database(pg_server, name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def postgres_store(database_url: str) -> PostgresStore:
    return PostgresStore(database_url)
