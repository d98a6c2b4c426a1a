"""Only a handshake counts: a reload that "succeeds" while the server keeps the old certificate fails the rotation.

The server here is a TLS listener that loads its certificate once, when it starts, and never
again (like a daemon whose reload is broken); the target's reload command is `true`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from e2e.conftest import Runner
from kms_servers import free_port


class StubbornTlsServer:
    """Serves the certificate files as they were when it started; a restart reads them again."""

    def __init__(self, port: int, fullchain: Path, key: Path) -> None:
        self.port = port
        self._files = (fullchain, key)
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self._files[0]), str(self._files[1]))
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._socket = listener

        def serve() -> None:
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return
                with contextlib.suppress(OSError, ssl.SSLError), context.wrap_socket(connection, server_side=True):
                    pass

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
            self._socket.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()


def doc(target: dict[str, Any]) -> dict[str, Any]:
    return {
        "kms": {"local": {}},
        "issuers": {"internal": {"local_ca": {"common_name": "Stubborn CA", "lifetime": "90d"}}},
        "targets": {"edge": target},
        "certificates": [{"name": "shop", "domains": ["shop.example.com"], "issuer": "internal", "targets": ["edge"]}],
    }


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def server(tmp_path: Path, port: int) -> Iterator[StubbornTlsServer]:
    folder = tmp_path / "repo" / "out" / "shop"
    stubborn = StubbornTlsServer(port, folder / "fullchain.pem", folder / "privkey.pem")
    try:
        yield stubborn
    finally:
        stubborn.stop()


def test_a_reload_that_does_nothing_fails_the_rotation_and_leaves_it_open(
    run_cli: Runner, tmp_path: Path, database_url: str, server: StubbornTlsServer, port: int
) -> None:
    desired = tmp_path / "repo"
    desired.mkdir()
    files = {"dir": "out", "reload_command": "true"}
    (desired / "c.yaml").write_text(yaml.safe_dump(doc({"files": files})))
    run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=0)  # verified by reading the files back
    server.start()
    # From now on only a handshake counts.
    (desired / "c.yaml").write_text(yaml.safe_dump(doc({"files": files, "verify": f"127.0.0.1:{port}",
                                                        "verify_timeout": "2s"})))  # fmt: skip
    run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=0)  # redistributed, verified by handshake

    result = run_cli("rotate", "shop", "--dir", str(desired), check_code=1)
    output = result.stdout + result.stderr
    assert "target-not-serving" in output and "edge" in output, output
    with psycopg.connect(database_url) as conn:
        rotations = conn.execute("SELECT completed_at, new_cert_id IS NOT NULL FROM CertRotation").fetchall()
        statuses = dict(conn.execute("SELECT status, count(*) FROM Certificate GROUP BY status").fetchall())
        distribution = conn.execute(
            "SELECT verified_at, last_error, fingerprint <> verified_fingerprint FROM Distribution"
        ).fetchone()
    assert rotations == [(None, True)]  # open: the new certificate exists but is not proven anywhere
    assert statuses == {"rotating": 1, "issued": 1}
    assert distribution is not None
    assert distribution[0] is None and "target-not-serving" in distribution[1] and distribution[2] is True
    audit = json.loads(run_cli("audit", "--dir", str(desired), "--action", "failed", "--format", "json").stdout)
    assert [event["detail"]["target"] for event in audit] == ["edge"]
    assert audit[0]["detail"]["served_fingerprint"]  # what it served instead is on record

    # Still open on the next plan; once the server really loads the new files, apply completes it.
    plan = run_cli("plan", "--dir", str(desired), "--detailed-exitcode", check_code=2)
    assert "> redistribute shop" in plan.stdout
    server.restart()
    run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=0)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT completed_at IS NOT NULL FROM CertRotation").fetchall() == [(True,)]
        statuses = dict(conn.execute("SELECT status, count(*) FROM Certificate GROUP BY status").fetchall())
    assert statuses == {"active": 1, "superseded": 1}
