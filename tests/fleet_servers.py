"""A tiny agent stand-in for the applier's tests: stdlib ``http.server`` over ``ssl`` with mutual TLS.

It speaks the wire contract (:mod:`certreconcile.fleet.protocol`) with canned behaviour: the tests
of the applier's side need a real TLS peer holding a fleet certificate, not the agent itself
(tested on its own). Bound to 127.0.0.1 on a free port; stopped by the context manager.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["AgentStandIn", "agent_stand_in", "csr_for", "key_pem"]

Answer = tuple[int, dict[str, Any]]


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def csr_for(key: ec.EllipticCurvePrivateKey, *, dns: tuple[str, ...] = (), uris: tuple[str, ...] = ()) -> str:
    """A CSR for ``key``, asking for whatever names (the fleet CA must ignore them)."""
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    names += [x509.UniformResourceIdentifier(uri) for uri in uris]
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asking for anything")])
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class AgentStandIn:
    url: str
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (path, body) received
    peer_uris: list[list[str]] = field(default_factory=list)  # the client certificate's URI SANs, per request
    handlers: dict[str, Callable[[dict[str, Any]], Answer]] = field(default_factory=dict)


def _server_context(cert_pem: str, key: ec.EllipticCurvePrivateKey, ca_pem: str, directory: Path) -> ssl.SSLContext:
    cert_file, key_file = directory / "agent.crt", directory / "agent.key"
    cert_file.write_text(cert_pem)
    key_file.write_bytes(key_pem(key))
    key_file.chmod(0o600)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(cadata=ca_pem)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@contextmanager
def agent_stand_in(
    cert_pem: str, key: ec.EllipticCurvePrivateKey, ca_pem: str, directory: Path
) -> Iterator[AgentStandIn]:
    """Serve HTTPS on 127.0.0.1 with this certificate, requiring a client certificate from ``ca_pem``."""
    state = AgentStandIn(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            assert isinstance(self.connection, ssl.SSLSocket)
            peer = self.connection.getpeercert() or {}
            state.peer_uris.append([value for kind, value in peer.get("subjectAltName", ()) if kind == "URI"])
            state.requests.append((self.path, body))
            operation = self.path.removeprefix("/v1/")
            handler = state.handlers.get(operation)
            status, answer = handler(body) if handler else (404, {"error": {"code": "usage", "message": "no such"}})
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = _server_context(cert_pem, key, ca_pem, directory)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
