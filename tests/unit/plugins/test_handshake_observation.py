"""Observing what a server serves: a handshake that compares fingerprints and loads no trust store."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certreconcile.plugins.ports import DeployBundle
from certreconcile.plugins.targets.handshake import observe_served
from certreconcile.testing.target_contract import self_signed_bundle

DOMAINS = ("shop.example.com", "www.shop.example.com")


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, DeployBundle]]:
    """A real TLS server on 127.0.0.1 serving a self-signed certificate (trusted by nobody)."""
    bundle = self_signed_bundle("shop", DOMAINS)
    (tmp_path / "cert.pem").write_text(bundle.fullchain_pem)
    (tmp_path / "key.pem").write_bytes(bundle.key_pem.reveal())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            with raw, context.wrap_socket(raw, server_side=True) as tls:
                tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}", bundle
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


def test_an_observation_never_loads_the_system_trust_store(
    tls_server: tuple[str, DeployBundle], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each load of the system CA certificates cost 20-80 ms of CPU per handshake: most of an agent's
    CPU per deployment (bench/fleet.py). A fingerprint comparison trusts no CA, so it loads none."""
    address, bundle = tls_server
    loads: list[str] = []
    real_default_certs = ssl.SSLContext.load_default_certs
    real_verify_paths = ssl.SSLContext.set_default_verify_paths

    def load_default_certs(self: ssl.SSLContext, *args: Any) -> None:
        loads.append("load_default_certs")
        real_default_certs(self, *args)

    def set_default_verify_paths(self: ssl.SSLContext) -> None:
        loads.append("set_default_verify_paths")
        real_verify_paths(self)

    monkeypatch.setattr(ssl.SSLContext, "load_default_certs", load_default_certs)
    monkeypatch.setattr(ssl.SSLContext, "set_default_verify_paths", set_default_verify_paths)

    seen = observe_served(address, DOMAINS)

    assert seen.error is None, seen.error
    assert seen.fingerprint == bundle.fingerprint  # self-signed, trusted by nobody: still observed
    assert loads == []
