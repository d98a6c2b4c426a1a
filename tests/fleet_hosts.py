"""Server hosts of a fleet for end-to-end tests: each an nginx and a real ``certreconcile agent`` process.

A host is a folder under one ``hosts`` directory: its nginx (prefix, certificate folder) and its
agent (``agent.yaml``, the key made by ``agent csr``, the certificate from ``agent enroll``). The
applier (``apply``, ``rotate``...) runs in another process and folder; with :func:`applier_command`
it runs in a private mount namespace where the whole ``hosts`` directory is an empty tmpfs, so
it cannot read or write anything a host owns (as root; elsewhere it runs without the namespace).

Enrolment copies files as an operator would (scp): the CSR from the host to the applier's folder,
the certificate and the fleet CA back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fleet_support import agent_command, agent_env
from kms_servers import free_port
from web_servers import Certificates, Nginx, run_nginx

__all__ = ["FleetHost", "applier_command", "can_isolate", "enrol", "start_hosts"]

CliRunner = Callable[..., subprocess.CompletedProcess[str]]


def can_isolate() -> bool:
    """A private mount namespace needs root (CAP_SYS_ADMIN) and ``unshare``."""
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def applier_command(hidden: Path, argv: Sequence[str]) -> list[str]:
    """``argv`` in a private mount namespace where ``hidden`` is an empty tmpfs (when :func:`can_isolate`)."""
    if not can_isolate():
        return list(argv)
    script = 'mount -t tmpfs -o size=1m,mode=0700 certreconcile-hidden "$0" && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(hidden), *argv]


@dataclass
class FleetHost:
    name: str
    directory: Path
    nginx: Nginx
    config: Path
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def key_file(self) -> Path:
        return self.directory / "tls" / "agent.key"

    @property
    def cert_file(self) -> Path:
        return self.directory / "tls" / "agent.crt"

    @property
    def log(self) -> Path:
        return self.directory / "agent.log"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                agent_command(self.config), env=agent_env(), stdout=output, stderr=subprocess.STDOUT,
                cwd=self.directory,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"agent {self.name} exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.05)
        raise AssertionError(f"agent {self.name} did not listen within 30 s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _agent_config(name: str, port: int, nginx: Nginx) -> dict[str, object]:
    return {
        "name": name,
        "listen": f"127.0.0.1:{port}",
        "tls": {"key_file": "tls/agent.key", "cert_file": "tls/agent.crt", "ca_file": "tls/fleet-ca.crt"},
        "targets": {
            "edge": {
                "nginx": {
                    "cert_dir": str(nginx.cert_dir),
                    "pid_file": str(nginx.pid_file),
                    "test_command": nginx.test_command,
                },
                "verify": nginx.address,
                "verify_timeout": "20s",
            }
        },
    }


def _make_csr(config: Path, out: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "certreconcile", "agent", "csr", "--config", str(config), "--out", str(out)],
        env=agent_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr


def enrol(host: FleetHost, applier_dir: Path, run_applier: CliRunner, desired: Path, env: dict[str, str]) -> None:
    """``agent csr`` on the host, ``agent enroll`` on the applier, the files copied between them."""
    (host.directory / "tls").mkdir(mode=0o700, exist_ok=True)
    _make_csr(host.config, host.directory / "agent.csr")
    inbox = applier_dir / "enrol" / host.name
    inbox.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(host.directory / "agent.csr", inbox / "agent.csr")  # scp host -> applier
    run_applier(
        "agent", "enroll", host.name, "--csr", str(inbox / "agent.csr"), "--out", str(inbox / "agent.crt"),
        "--ca-out", str(inbox / "fleet-ca.crt"), "--dir", str(desired), env=env, check_code=0,
    )  # fmt: skip
    shutil.copyfile(inbox / "agent.crt", host.cert_file)  # scp applier -> host
    shutil.copyfile(inbox / "fleet-ca.crt", host.directory / "tls" / "fleet-ca.crt")


@contextlib.contextmanager
def start_hosts(hosts_dir: Path, names: Sequence[str], certificates: Certificates) -> Iterator[list[FleetHost]]:
    """One nginx per host (serving ``certificates`` self-signed at first) and its agent's folder; not enrolled yet."""
    with contextlib.ExitStack() as stack:
        hosts = []
        for name in names:
            directory = hosts_dir / name
            directory.mkdir(parents=True, mode=0o700)
            nginx = stack.enter_context(run_nginx(directory / "nginx", certificates))
            port = free_port()
            config = directory / "agent.yaml"
            config.write_text(yaml.safe_dump(_agent_config(name, port, nginx), sort_keys=False))
            host = FleetHost(name, directory, nginx, config, port)
            stack.callback(host.stop)
            hosts.append(host)
        yield hosts
