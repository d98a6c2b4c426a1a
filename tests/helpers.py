"""Helpers shared by the test suites (import as ``from helpers import ...``)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import make_conninfo

__all__ = ["login_url", "require_binary", "server_scratch_dir", "with_database"]

_scratch_counter = itertools.count()


def require_binary(name: str) -> str:
    """The path of executable ``name``; skip the test without it, but fail on CI (``CI`` set).

    A skipped integration test on CI would hide a broken pipeline, so there a missing
    binary is an error.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not installed (not found on PATH)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must provide it", pytrace=False)
    pytest.skip(reason)


def login_url(admin_url: str, role: str) -> str:
    """A URL that logs in as the existing ``role``, which is given a fresh password for it.

    The test server, like the embedded one, takes password logins only (``scram-sha-256``).
    """
    import secrets

    import psycopg
    from psycopg import sql

    password = secrets.token_urlsafe(16)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    return make_conninfo(admin_url, user=role, password=password, passfile="")


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database (a libpq key=value string)."""
    return make_conninfo(url, dbname=database)


@contextlib.contextmanager
def server_scratch_dir(prefix: str) -> Iterator[Path]:
    """A fresh folder under the temp dir but outside pytest's basetemp, removed afterwards.

    For an embedded PostgreSQL started by the test: as root the server runs as another
    account that must reach its data, and every new pytest session of this user closes
    ``/tmp/pytest-of-<user>`` again (mode 0700), which would cut a running server off.
    """
    path = Path(tempfile.gettempdir()) / f"{prefix}-{os.getpid()}-{next(_scratch_counter)}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def record_calls(monkeypatch: pytest.MonkeyPatch, cls: type, method: str) -> list[Any]:
    """Every first argument ``cls.method`` is called with from now on (the real method still runs)."""
    calls: list[Any] = []
    real = getattr(cls, method)

    def recorded(self: Any, first: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(first)
        return real(self, first, *args, **kwargs)

    monkeypatch.setattr(cls, method, recorded)
    return calls
