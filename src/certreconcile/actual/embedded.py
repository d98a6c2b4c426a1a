"""The embedded PostgreSQL used when ``CERTRECONCILE_DATABASE_URL`` is not set.

A pgserver (PyPI) instance lives in ``$CERTRECONCILE_DATA_DIR/pgdata`` (default
``<desired dir>/.certreconcile/pgdata``). It is started with ``cleanup_mode=None``: the
server outlives the CLI process, so the next command finds it running and connects in
a few milliseconds instead of starting it again (~0.6-0.8 s here). ``'stop'`` would
stop it when the last process that asked for it exits (every command would pay the
start), ``'delete'`` would throw the data away. Two processes starting at once are
safe: pgserver serializes initdb and start behind an inter-process file lock, and the
second finds the server the first started. :func:`stop_embedded` stops it.

The server listens on a unix socket only (no TCP port). The socket lives in the data
directory; when that path is too long for a socket (~107 bytes), pgserver falls back
to ``<runtime dir>/python_PostgresServer/<hash>`` (``/tmp/runtime-<uid>/...`` without
``XDG_RUNTIME_DIR``), and the URL returned points there.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

from certreconcile.errors import StateError

__all__ = [
    "DATABASE_NAME",
    "ENV_DATABASE_URL",
    "ENV_DATA_DIR",
    "embedded_data_dir",
    "resolve_database_url",
    "stop_embedded",
]

ENV_DATABASE_URL = "CERTRECONCILE_DATABASE_URL"
ENV_DATA_DIR = "CERTRECONCILE_DATA_DIR"
DATABASE_NAME = "certreconcile"


def embedded_data_dir(desired_dir: Path, env: Mapping[str, str]) -> Path:
    """Where the embedded server keeps its files (``pgdata/`` inside)."""
    configured = env.get(ENV_DATA_DIR)
    return Path(configured) if configured else desired_dir / ".certreconcile"


def _import_pgserver() -> ModuleType:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver copes with it.
        warnings.simplefilter("ignore")
        import pgserver

    return pgserver


def _socket_url(postmaster: Any, database: str) -> str:
    """A libpq URL for the server, built from its postmaster.pid (path percent-encoded)."""
    if postmaster.socket_dir is not None:
        return f"postgresql://postgres@/{database}?host={quote(str(postmaster.socket_dir), safe='/')}"
    return f"postgresql://postgres@{postmaster.hostname}:{postmaster.port}/{database}"


def _ensure_database(admin_url: str) -> None:
    import psycopg
    from psycopg import errors as pgerrors

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
        if exists is None:
            with contextlib.suppress(pgerrors.DuplicateDatabase):  # another process was faster
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def resolve_database_url(desired_dir: Path, env: Mapping[str, str]) -> str:
    """The database URL: ``CERTRECONCILE_DATABASE_URL``, or the embedded server's (started if needed)."""
    configured = env.get(ENV_DATABASE_URL)
    if configured:
        return configured
    data_dir = embedded_data_dir(desired_dir, env).absolute()
    try:
        created = not data_dir.exists()
        data_dir.mkdir(parents=True, exist_ok=True)
        if created or not (data_dir / ".gitignore").exists():
            # The data directory sits beside the declarations: keep it out of Git.
            (data_dir / ".gitignore").write_text("*\n", encoding="utf-8")
        pgserver = _import_pgserver()
        server = pgserver.get_server(data_dir / "pgdata", cleanup_mode=None)
        postmaster = server.get_postmaster_info()
        _ensure_database(_socket_url(postmaster, "postgres"))
        return _socket_url(postmaster, DATABASE_NAME)
    except StateError:
        raise
    except Exception as exc:  # pgserver raises plain exceptions of many kinds
        raise StateError(
            f"could not start the embedded PostgreSQL in {data_dir}: {type(exc).__name__}",
            code="embedded-database-failed",
            hint=f"see {data_dir / 'pgdata' / 'log'}; or set {ENV_DATABASE_URL} to use another server",
        ) from exc


def stop_embedded(desired_dir: Path, env: Mapping[str, str] | None = None) -> bool:
    """Stop the embedded server of ``desired_dir`` if it runs; True when one was stopped."""
    data_dir = embedded_data_dir(desired_dir, env if env is not None else os.environ)
    pgdata = (data_dir / "pgdata").absolute()
    if not (pgdata / "postmaster.pid").exists():
        return False
    pgserver = _import_pgserver()
    resolved = pgdata.resolve()
    # Forget this process's handle, or a later resolve_database_url would trust it.
    handle = pgserver.PostgresServer._instances.pop(resolved, None)
    if handle is not None:
        atexit.unregister(handle._cleanup)
    from pgserver._commands import POSTGRES_BIN_PATH

    command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(resolved), "-m", "fast", "-w", "stop"]
    user = "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None  # pgserver's user as root
    result = subprocess.run(command, capture_output=True, text=True, check=False, user=user, timeout=60)
    if result.returncode != 0 and (pgdata / "postmaster.pid").exists():
        raise StateError(
            f"could not stop the embedded PostgreSQL in {data_dir}",
            code="embedded-database-failed",
            hint=f"see {pgdata / 'log'}",
        )
    return result.returncode == 0
