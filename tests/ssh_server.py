"""A real OpenSSH server (Debian ``openssh-server``) on 127.0.0.1, for the ssh target.

Loaded as a plugin by ``tests/conftest.py``. ``ssh_server`` (session) starts
``/usr/sbin/sshd -D -e -f <its own sshd_config>`` on a free port with its own ed25519 host key
(``ssh-keygen`` into a temp dir), public-key logins only, for the user running the tests (root on
CI: ``PermitRootLogin prohibit-password``), whose authorized_keys file is a temp file holding a
generated client key. ``StrictModes no`` (the temp dirs sit under the world-writable /tmp), the pid
file in the temp dir, the SFTP subsystem ``internal-sftp``. ``known_hosts`` pins the host key for
``[127.0.0.1]:<port>``. Stopped at the end of the session. A missing sshd skips locally and fails on
CI (``require_binary``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import require_binary
from kms_servers import free_port

__all__ = ["SshServer", "keygen", "ssh_server"]


@dataclasses.dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    user: str
    directory: Path
    client_key: Path  # authorized; mode 0600
    known_hosts: Path  # pins the server's host key
    host_key_line: str  # the server's public host key, as in a .pub file

    def known_hosts_line(self, key_line: str | None = None) -> str:
        return f"[{self.host}]:{self.port} {key_line or self.host_key_line}\n"


def keygen(path: Path, *, passphrase: str = "", comment: str = "certreconcile-tests") -> str:
    """A new ed25519 key at ``path`` (0600) and ``path``.pub; returns the public key line."""
    binary = shutil.which("ssh-keygen") or require_binary("ssh-keygen")
    subprocess.run(
        [binary, "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_suffix(".pub").read_text().strip()


def _sshd_binary() -> str:
    found = shutil.which("sshd") or shutil.which("sshd", path="/usr/sbin:/sbin")
    return found if found is not None else require_binary("sshd")


def _sshd_config(directory: Path, port: int) -> str:
    return f"""ListenAddress 127.0.0.1
Port {port}
HostKey {directory}/host_ed25519
PidFile {directory}/sshd.pid
AuthorizedKeysFile {directory}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
UseDNS no
LogLevel VERBOSE
Subsystem sftp internal-sftp
"""


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"sshd exited with {process.returncode}: {log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            if sock.recv(4).startswith(b"SSH-"):
                return
        time.sleep(0.02)
    pytest.fail(f"sshd did not listen on 127.0.0.1:{port} within {timeout:.0f}s", pytrace=False)


@contextlib.contextmanager
def run_sshd(directory: Path) -> Iterator[SshServer]:
    binary = _sshd_binary()
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation directory
    directory.mkdir(parents=True, exist_ok=True)
    host_key_line = keygen(directory / "host_ed25519")
    client_line = keygen(directory / "client_ed25519")
    (directory / "authorized_keys").write_text(client_line + "\n")
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(_sshd_config(directory, port))
    server = SshServer(
        host="127.0.0.1",
        port=port,
        user=pwd.getpwuid(os.geteuid()).pw_name,
        directory=directory,
        client_key=directory / "client_ed25519",
        known_hosts=directory / "known_hosts",
        host_key_line=host_key_line,
    )
    server.known_hosts.write_text(server.known_hosts_line())
    log = directory / "sshd.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [binary, "-D", "-e", "-f", str(config)], stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_for_port(port, process, log)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    with run_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server
