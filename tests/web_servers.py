"""A real nginx and a real HAProxy (Debian packages) for the nginx and haproxy targets, on 127.0.0.1 only.

Loaded as a plugin by ``tests/conftest.py``. Both start in a fraction of a second, so each test
gets its own server, configured for the certificate names it uses:

* ``nginx_server``: a factory ``(certificates, cert_dir=None) -> Nginx``. ``certificates`` maps
  each certificate name to its domains; nginx gets one ``server`` block per name
  (``listen 127.0.0.1:<port> ssl``, ``server_name`` = the domains, ``ssl_certificate
  <cert_dir>/<name>/fullchain.pem``), the first one the default. Master process in the
  foreground (``daemon off``), one worker, pid file, logs and temp paths in its own temp dir.
* ``haproxy_server``: a factory ``(certificates, cert_dir=None, *, crt_directory=False) -> Haproxy``: master-worker mode
  (``-W -db``, pid file), ``stats socket <dir>/admin.sock level admin expose-fd listeners``,
  ``bind 127.0.0.1:<port> ssl crt <cert_dir>/<name>.pem ...`` (the first name the default; beyond
  20 names the same paths in a ``crt-list`` file, as a configuration line holds at most 64 words).

Before a server starts, every name gets a throw-away self-signed certificate in the target's
layout (``Nginx.initial``/``Haproxy.initial`` hold those bundles). The fixtures stop every server
they started (SIGTERM to the master, then SIGKILL to its process group). ``run_nginx`` and
``run_haproxy`` are the same as context managers (for benchmarks). A missing binary skips
locally and fails on CI (``require_binary``); /usr/sbin and /sbin are searched too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from certreconcile.plugins.ports import DeployBundle
from certreconcile.testing.target_contract import self_signed_bundle
from helpers import require_binary
from kms_servers import free_port

__all__ = [
    "Haproxy",
    "Nginx",
    "find_server_binary",
    "haproxy_server",
    "nginx_server",
    "run_haproxy",
    "run_nginx",
    "write_initial_files",
]

Certificates = Mapping[str, Sequence[str]]  # certificate name -> domains


def find_server_binary(name: str) -> str:
    """``name`` on PATH or in /usr/sbin, /sbin (Debian puts nginx and haproxy there); else skip/fail."""
    found = shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")
    return found if found is not None else require_binary(name)


def write_initial_files(cert_dir: Path, bundle: DeployBundle, *, combined: bool = False) -> None:
    """``bundle`` in a target's layout: ``<cert_dir>/<name>/...`` and, with ``combined``, ``<cert_dir>/<name>.pem``."""
    folder = cert_dir / bundle.name
    folder.mkdir(parents=True, exist_ok=True)
    key = bundle.key_pem.reveal()
    for file_name, data, mode in (
        ("privkey.pem", key, 0o600),
        ("cert.pem", bundle.cert_pem.encode(), 0o644),
        ("chain.pem", bundle.chain_pem.encode(), 0o644),
        ("fullchain.pem", bundle.fullchain_pem.encode(), 0o644),
    ):
        (folder / file_name).write_bytes(data)
        (folder / file_name).chmod(mode)
    if combined:
        path = cert_dir / f"{bundle.name}.pem"
        path.write_bytes(bundle.fullchain_pem.encode() + key)
        path.chmod(0o600)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}: {_tail(log)}", pytrace=False)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.02)
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s: {_tail(log)}", pytrace=False)


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the master (it stops its workers), SIGKILL to its process group when it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its own session: only its workers
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # a worker that outlived its master
        os.killpg(process.pid, signal.SIGKILL)


def child_pids(pid: int) -> tuple[int, ...]:
    """The PIDs of the direct children of ``pid`` (the workers of a master process)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children += [int(child) for child in (task / "children").read_text().split()]
    return tuple(sorted(children))


def wait_drained(master_pid: int, workers: int = 1, timeout: float = 20.0) -> None:
    """Wait until a reloaded nginx's old worker has exited (``workers``: its ``worker_processes``).

    A reload starts the new worker and asks the old one to stop; the old one may answer a few more
    handshakes while it drains. The product's verification waits for the new certificate; a test's
    own handshake right after it may still land on the old worker and see the old one.
    """
    deadline = time.monotonic() + timeout
    while len(child_pids(master_pid)) != workers:
        assert time.monotonic() < deadline, f"nginx {master_pid}: its old worker did not exit in {timeout} s"
        time.sleep(0.02)


# ---------------------------------------------------------------- nginx


@dataclasses.dataclass(frozen=True)
class Nginx:
    address: str  # 127.0.0.1:<port>, for observe_served
    cert_dir: Path  # ``cert_dir`` of an nginx target
    config: Path
    prefix: Path
    pid_file: Path
    error_log: Path
    test_command: str  # ``nginx -t`` on this server's configuration (for ``test_command``)
    master_pid: int
    initial: Mapping[str, DeployBundle]  # the self-signed certificate each name starts with

    def worker_pids(self) -> tuple[int, ...]:
        return child_pids(self.master_pid)

    def drained(self) -> None:
        """Return once the old worker of a reload, if any, is gone (:func:`wait_drained`)."""
        wait_drained(self.master_pid)


def nginx_config(directory: Path, cert_dir: Path, port: int, certificates: Certificates) -> str:
    servers = []
    for index, (name, domains) in enumerate(certificates.items()):
        default = " default_server" if index == 0 else ""
        servers.append(
            f"""
    server {{
        listen 127.0.0.1:{port} ssl{default};
        server_name {" ".join(domains)};
        ssl_certificate {cert_dir}/{name}/fullchain.pem;
        ssl_certificate_key {cert_dir}/{name}/privkey.pem;
        return 200 "{name}\\n";
    }}"""
        )
    temp = directory / "temp"
    return f"""worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server_names_hash_bucket_size 128;
    {"".join(servers)}
}}
"""


@contextlib.contextmanager
def run_nginx(directory: Path, certificates: Certificates, cert_dir: Path | None = None) -> Iterator[Nginx]:
    """nginx serving ``certificates`` (name -> domains) until the block ends."""
    binary = find_server_binary("nginx")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "temp").mkdir(exist_ok=True)
    cert_dir = cert_dir or directory / "certs"
    initial = {name: self_signed_bundle(name, domains) for name, domains in certificates.items()}
    for bundle in initial.values():
        write_initial_files(cert_dir, bundle)
    port = free_port()
    config = directory / "nginx.conf"
    config.write_text(nginx_config(directory, cert_dir, port, certificates))
    error_log = directory / "error.log"
    base = [binary, "-c", str(config), "-p", str(directory), "-e", str(error_log)]
    log = directory / "nginx.out"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*base, "-g", "daemon off;"], stdout=output, stderr=subprocess.STDOUT, cwd=directory, start_new_session=True
        )
    try:
        _wait_for_port(port, process, error_log, "nginx")
        yield Nginx(
            address=f"127.0.0.1:{port}",
            cert_dir=cert_dir,
            config=config,
            prefix=directory,
            pid_file=directory / "nginx.pid",
            error_log=error_log,
            test_command=shlex.join([*base, "-t", "-q"]),
            master_pid=process.pid,
            initial=initial,
        )
    finally:
        _stop(process)


@pytest.fixture
def nginx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Nginx]]:
    with contextlib.ExitStack() as stack:

        def start(certificates: Certificates, cert_dir: Path | None = None) -> Nginx:
            directory = tmp_path_factory.mktemp("nginx")
            return stack.enter_context(run_nginx(directory, certificates, cert_dir))

        yield start


# ---------------------------------------------------------------- HAProxy


_CRT_WORDS = 20  # more names than this: a crt-list file instead of one ``crt`` per name


@dataclasses.dataclass(frozen=True)
class Haproxy:
    address: str  # 127.0.0.1:<port>, for observe_served
    cert_dir: Path  # ``cert_dir`` of a haproxy target
    config: Path
    admin_socket: Path
    pid_file: Path  # the master's
    master_pid: int
    initial: Mapping[str, DeployBundle]

    @property
    def runtime_api(self) -> str:
        return f"unix:{self.admin_socket}"

    def worker_pids(self) -> tuple[int, ...]:
        return child_pids(self.master_pid)


def haproxy_config(
    directory: Path, cert_dir: Path, port: int, certificates: Certificates, *, crt_directory: bool = False
) -> str:
    if crt_directory:
        crts = f"crt {cert_dir}"
    elif len(certificates) <= _CRT_WORDS:
        crts = " ".join(f"crt {cert_dir}/{name}.pem" for name in certificates)
    else:  # a configuration line holds at most 64 words: many files go into a crt-list
        crt_list = directory / "crt-list.txt"
        crt_list.write_text("".join(f"{cert_dir}/{name}.pem\n" for name in certificates))
        crts = f"crt-list {crt_list}"
    return f"""global
    stats socket {directory}/admin.sock level admin expose-fd listeners
    log stderr format raw local0 notice
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend tls
    bind 127.0.0.1:{port} ssl {crts}
    http-request return status 200 content-type text/plain string ok
"""


@contextlib.contextmanager
def run_haproxy(
    directory: Path,
    certificates: Certificates,
    cert_dir: Path | None = None,
    *,
    crt_directory: bool = False,
    wait_until_loaded: bool = True,
) -> Iterator[Haproxy]:
    """HAProxy (master-worker) serving ``certificates`` (name -> domains) until the block ends.

    ``crt_directory``: the bind line loads the whole directory (``crt <cert_dir>``) instead of one
    ``crt <cert_dir>/<name>.pem`` per name (then a name added later is served after a reload).
    ``wait_until_loaded``: return only once the master logged "Loading success." (a SIGUSR2 sent
    before that is dropped); False returns as soon as the port and the runtime API socket exist.
    """
    binary = find_server_binary("haproxy")
    directory.mkdir(parents=True, exist_ok=True)
    cert_dir = cert_dir or directory / "certs"
    initial = {name: self_signed_bundle(name, domains) for name, domains in certificates.items()}
    for bundle in initial.values():
        write_initial_files(cert_dir, bundle, combined=True)
    port = free_port()
    config = directory / "haproxy.cfg"
    config.write_text(haproxy_config(directory, cert_dir, port, certificates, crt_directory=crt_directory))
    pid_file = directory / "haproxy.pid"
    log = directory / "haproxy.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [binary, "-W", "-db", "-f", str(config), "-p", str(pid_file)],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=directory,
            start_new_session=True,
        )
    try:
        _wait_for_port(port, process, log, "haproxy")
        while not (directory / "admin.sock").exists() and process.poll() is None:
            time.sleep(0.01)
        while wait_until_loaded and b"Loading success." not in log.read_bytes() and process.poll() is None:
            time.sleep(0.01)
        yield Haproxy(
            address=f"127.0.0.1:{port}",
            cert_dir=cert_dir,
            config=config,
            admin_socket=directory / "admin.sock",
            pid_file=pid_file,
            master_pid=process.pid,
            initial=initial,
        )
    finally:
        _stop(process)


@pytest.fixture
def haproxy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Haproxy]]:
    with contextlib.ExitStack() as stack:

        def start(
            certificates: Certificates,
            cert_dir: Path | None = None,
            *,
            crt_directory: bool = False,
            wait_until_loaded: bool = True,
        ) -> Haproxy:
            directory = tmp_path_factory.mktemp("haproxy")
            return stack.enter_context(
                run_haproxy(
                    directory, certificates, cert_dir, crt_directory=crt_directory, wait_until_loaded=wait_until_loaded
                )
            )

        yield start
