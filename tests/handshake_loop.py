"""Zero-downtime checks: a client handshaking in a loop while a target rotates a certificate."""

from __future__ import annotations

import dataclasses
import socket
import ssl
import threading
import time
from collections.abc import Callable

from certreconcile.domain.certs import fingerprint_of_der
from certreconcile.plugins.ports import DeployBundle
from certreconcile.plugins.targets.handshake import parse_host_port

__all__ = ["HandshakeLoop", "assert_zero_downtime"]


@dataclasses.dataclass
class HandshakeLoop:
    """A client thread handshaking in a loop against one address and server name."""

    address: str
    server_name: str
    seen: list[str | None] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)

    def run(self) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # one context: hundreds of handshakes a second
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # fingerprints are compared, not trust chains
        host, port = parse_host_port(self.address)
        while not self.stop.is_set():
            try:
                with (
                    socket.create_connection((host, port), timeout=5) as raw,
                    context.wrap_socket(raw, server_hostname=self.server_name) as tls,
                ):
                    der = tls.getpeercert(binary_form=True)
            except (OSError, ssl.SSLError) as exc:
                self.errors.append(repr(exc))
                self.seen.append(None)
                continue
            self.seen.append(fingerprint_of_der(der) if der else None)
            if der is None:
                self.errors.append("no certificate")

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.seen) >= count, f"only {len(self.seen)} handshakes in {timeout:.0f}s"


def assert_zero_downtime(address: str, deploy: Callable[[DeployBundle], None], old: str, new: DeployBundle) -> None:
    loop = HandshakeLoop(address, new.domains[0])
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        loop.wait_for(200)
        at_deploy = len(loop.seen)
        deploy(new)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and loop.seen[-1] != new.fingerprint:
            time.sleep(0.01)
        loop.wait_for(len(loop.seen) + 200)
    finally:
        loop.stop.set()
        thread.join(timeout=30)
    assert loop.errors == [], f"{len(loop.errors)} failed handshakes of {len(loop.seen)}: {loop.errors[:3]}"
    assert len(loop.seen) >= 400
    assert set(loop.seen[:at_deploy]) == {old}
    assert set(loop.seen) == {old, new.fingerprint}
    assert set(loop.seen[-100:]) == {new.fingerprint}
