"""A real HTTPS webhook receiver for the tests: ``ssl`` + ``http.server`` in a thread, on 127.0.0.1.

It demands a client certificate from its own client CA (mutual TLS), records every request
(headers, exact body bytes, the client certificate's common name) and answers as told:

* ``echo``: 200 and ``{"fingerprint": <the body's fingerprint>}`` (a well-behaved receiver);
* ``wrong``: 200 with another fingerprint;
* ``redirect``: 302 to ``redirect_to``;
* ``fail``: 500.

``running_webhook_server`` starts one and stops it (shutdown, close) when the block ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import hmac
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from acme_servers import make_tls_bundle

__all__ = [
    "CLIENT_COMMON_NAME",
    "ClientIdentity",
    "Received",
    "WebhookServer",
    "make_client_identity",
    "running_webhook_server",
    "signature_valid",
]

CLIENT_COMMON_NAME = "certreconcile webhook client"


@dataclasses.dataclass(frozen=True)
class ClientIdentity:
    ca: Path  # the client CA the server trusts
    cert: Path
    key: Path


def make_client_identity(directory: Path) -> ClientIdentity:
    """A client CA and a client certificate (clientAuth) signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certreconcile test client CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CLIENT_COMMON_NAME)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    identity = ClientIdentity(directory / "client-ca.pem", directory / "client.pem", directory / "client-key.pem")
    identity.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    identity.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    identity.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return identity


@dataclasses.dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    client_common_name: str | None

    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


def signature_valid(received: Received, secret: str) -> bool:
    """The receiver's side of the scheme: HMAC-SHA256 over ``timestamp + "." + body``."""
    timestamp = received.headers.get("x-certreconcile-timestamp", "")
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + received.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(received.headers.get("x-certreconcile-signature", ""), f"sha256={expected}")


class WebhookServer:
    def __init__(self, directory: Path, client: ClientIdentity | None) -> None:
        self.ca, cert, key = make_tls_bundle(directory)
        self.mode = "echo"
        self.redirect_to = ""
        self.received: list[Received] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if client is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(client.ca)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
                common_name = None
                for rdn in (peer or {}).get("subject", ()):
                    for key, value in rdn:
                        if key == "commonName":
                            common_name = value
                server.received.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, common_name)
                )
                if server.mode == "redirect":
                    self._answer(302, b"", {"Location": server.redirect_to})
                elif server.mode == "fail":
                    self._answer(500, b"no")
                else:
                    fingerprint = json.loads(body)["fingerprint"] if server.mode == "echo" else "ab" * 32
                    self._answer(200, json.dumps({"fingerprint": fingerprint}).encode())

            def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}{path}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


@contextlib.contextmanager
def running_webhook_server(directory: Path, client: ClientIdentity | None) -> Iterator[WebhookServer]:
    server = WebhookServer(directory, client)
    server.start()
    try:
        yield server
    finally:
        server.stop()
