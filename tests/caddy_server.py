"""A real Caddy (Debian ``caddy``) for the caddy target's tests, on 127.0.0.1 only.

Loaded as a plugin by ``tests/conftest.py``. Fixtures (function-scoped: each test gets its own
Caddy, a fraction of a second to start):

* ``caddy_server``: ``caddy run --config <json>`` with its admin API on 127.0.0.1:<free port>
  and one HTTPS server on 127.0.0.1:<free port> that serves whatever ``load_pem`` holds
  (``tls_connection_policies: [{}]``); automatic HTTPS off and no issuers, so nothing ever talks
  to an ACME CA. Its config starts with one foreign ``load_pem`` entry (tag ``other``, for
  ``other.example.test``) that the tests check is left alone.
* ``start_caddy(directory, apps)``: the same Caddy with other ``apps`` (e.g. without a ``tls`` app).

Caddy's storage, HOME and XDG directories are in the test's temp dir and its admin config is
not persisted (``admin.config.persist: false``), so nothing touches the real home. The process
is stopped by the fixture. A missing binary skips locally and fails on CI (``require_binary``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certreconcile.testing.target_contract import self_signed_bundle
from helpers import require_binary
from kms_servers import free_port

__all__ = ["OTHER_DOMAIN", "Caddy", "caddy_apps", "caddy_server", "start_caddy"]

OTHER_DOMAIN = "other.example.test"


@dataclasses.dataclass(frozen=True)
class Caddy:
    admin: str  # http://127.0.0.1:<port>
    https: str  # 127.0.0.1:<port>, for observe_served
    other_fingerprint: str  # of the foreign load_pem entry
    log: Path

    def get(self, path: str, attempts: int = 5) -> Any:
        """The admin API's JSON answer at ``path``.

        Read again when the connection is dropped: Caddy replaces its admin listener on every
        config load (a refused one too), and a connection landing on the old one is reset.
        """
        for attempt in range(1, attempts + 1):
            try:
                with urllib.request.urlopen(self.admin + path, timeout=10) as response:  # noqa: S310 - local test server
                    return json.loads(response.read() or b"null")
            except ConnectionResetError:  # http.client.RemoteDisconnected is one too
                if attempt == attempts:
                    raise
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")


def caddy_apps(https_port: int, load_pem: list[dict[str, Any]] | None) -> dict[str, Any]:
    """An ``http`` app serving TLS on 127.0.0.1:https_port, plus a ``tls`` app when ``load_pem`` is given."""
    apps: dict[str, Any] = {
        "http": {
            "servers": {
                "test": {
                    "listen": [f"127.0.0.1:{https_port}"],
                    "automatic_https": {"disable": True},
                    "tls_connection_policies": [{}],
                    "routes": [{"handle": [{"handler": "static_response", "body": "ok"}]}],
                }
            }
        }
    }
    if load_pem is not None:
        apps["tls"] = {"certificates": {"load_pem": load_pem}}
    return apps


def _wait_for_admin(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"caddy exited with {process.returncode}: {log.read_text()[-2000:]}", pytrace=False)
        try:
            with urllib.request.urlopen(url + "/config/", timeout=2):  # noqa: S310 - local test server
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    pytest.fail(f"caddy's admin API did not answer within {timeout:.0f}s: {log.read_text()[-2000:]}", pytrace=False)


@contextlib.contextmanager
def start_caddy(directory: Path, apps: dict[str, Any], admin_port: int | None = None) -> Iterator[str]:
    """Run Caddy with ``apps`` until the block ends; yields its admin URL."""
    binary = require_binary("caddy")
    admin_port = admin_port or free_port()
    for sub in ("home", "data", "config", "storage"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    config = {
        "admin": {"listen": f"127.0.0.1:{admin_port}", "config": {"persist": False}},
        "storage": {"module": "file_system", "root": str(directory / "storage")},
        "apps": apps,
    }
    config_file = directory / "caddy.json"
    config_file.write_text(json.dumps(config))
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.update(
        HOME=str(directory / "home"), XDG_DATA_HOME=str(directory / "data"), XDG_CONFIG_HOME=str(directory / "config")
    )
    log = directory / "caddy.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [binary, "run", "--config", str(config_file)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=directory,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{admin_port}"
    try:
        _wait_for_admin(url, process, log)
        yield url
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def caddy_server(tmp_path: Path) -> Iterator[Caddy]:
    other = self_signed_bundle("other", (OTHER_DOMAIN,))
    entry = {"certificate": other.fullchain_pem, "key": other.key_pem.reveal().decode(), "tags": ["other"]}
    https_port = free_port()
    directory = tmp_path / "caddy"
    with start_caddy(directory, caddy_apps(https_port, [entry])) as admin:
        yield Caddy(
            admin=admin,
            https=f"127.0.0.1:{https_port}",
            other_fingerprint=other.fingerprint,
            log=directory / "caddy.log",
        )
