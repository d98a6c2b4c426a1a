"""Real ACME servers for the tests: Pebble and pebble-challtestsrv (Debian ``pebble``), on 127.0.0.1.

Loaded as a plugin by ``tests/conftest.py``. Fixtures (session-scoped, one set per xdist worker):

* ``challtestsrv``: pebble-challtestsrv's DNS server (every A query answers 127.0.0.1, no AAAA)
  and its management API; its own HTTP-01/TLS-ALPN servers are off.
* ``pebble``: Pebble with **real validation** (no ``PEBBLE_VA_ALWAYS_VALID``), resolving every
  name through challtestsrv's DNS, connecting to port ``http01_port`` for HTTP-01; its ACME
  directory served over TLS with a certificate the test suite makes (``ca_bundle``).
* ``start_pebble(tmp, dns_server, **env)``: another Pebble, e.g. pointed at a BIND server for
  DNS-01, or with ``PEBBLE_VA_ALWAYS_VALID`` for the issuance benchmark.

Every server is stopped by its fixture at the end of the session. A missing binary skips the
tests locally and fails them on CI (``require_binary``).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from helpers import require_binary
from kms_servers import free_port, free_port_outside_ephemeral

__all__ = [
    "AriProxy",
    "ChallTestSrv",
    "Pebble",
    "ari_proxy",
    "challtestsrv",
    "make_tls_bundle",
    "pebble",
    "start_pebble",
]


@dataclasses.dataclass(frozen=True)
class ChallTestSrv:
    dns_port: int
    management_url: str

    @property
    def dns_address(self) -> str:
        return f"127.0.0.1:{self.dns_port}"


@dataclasses.dataclass(frozen=True)
class Pebble:
    directory_url: str
    management_url: str
    ca_bundle: Path  # PEM trusted for the directory's TLS
    http01_port: int  # where Pebble connects for HTTP-01 (the standalone solver listens here)
    dns_server: str  # HOST:PORT Pebble resolves names with

    def _management_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    def management_get(self, path: str) -> tuple[int, str]:
        request = urllib.request.Request(self.management_url + path)  # noqa: S310 - local test server
        try:
            with urllib.request.urlopen(request, context=self._management_context(), timeout=10) as response:  # noqa: S310
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def root_pem(self) -> str:
        """Pebble's current issuing root (it makes a new one at every start)."""
        status, body = self.management_get("/roots/0")
        assert status == 200, body
        return body

    def intermediate_pem(self) -> str:
        status, body = self.management_get("/intermediates/0")
        assert status == 200, body
        return body

    def cert_status(self, serial_hex: str) -> dict[str, object]:
        """Pebble's view of one certificate: ``{"Status": "Valid"|"Revoked", ...}``."""
        status, body = self.management_get(f"/cert-status-by-serial/{serial_hex}")
        assert status == 200, body
        result: dict[str, object] = json.loads(body)
        return result


def make_tls_bundle(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 and localhost: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certreconcile test TLS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path


def _wait_for_tls(url: str, ca: Path, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{url}: exited with {process.returncode}: {log.read_text()[-2000:]}", pytrace=False)
        try:
            with urllib.request.urlopen(url, context=context, timeout=2):  # noqa: S310 - local test server
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    pytest.fail(f"{url} did not answer within {timeout:.0f}s: {log.read_text()[-2000:]}", pytrace=False)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {key: os.environ[key] for key in ("PATH", "LANG", "LC_ALL", "TMPDIR") if key in os.environ}
    env.update(extra)
    return env


@contextlib.contextmanager
def start_pebble(
    workdir: Path, dns_server: str, *, eab_keys: dict[str, str] | None = None, **environment: str
) -> Iterator[Pebble]:
    """Run one Pebble in ``workdir`` resolving names through ``dns_server``; stopped on exit.

    ``eab_keys``: require External Account Binding with these key ids → base64url HMAC keys.
    ``environment``: Pebble's PEBBLE_* switches. The defaults keep validation real and quick
    (``PEBBLE_VA_NOSLEEP=1``) and turn off the random nonce rejection (the client's badNonce
    retry is tested on its own).
    """
    binary = require_binary("pebble")
    workdir.mkdir(parents=True, exist_ok=True)
    ca, cert, key = make_tls_bundle(workdir / "tls")
    port, management_port, tls_port = free_port(), free_port(), free_port()
    http01_port = free_port_outside_ephemeral()  # bound again for every order
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{management_port}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": http01_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": bool(eab_keys),
            "externalAccountMACKeys": dict(eab_keys or {}),
        }
    }
    config_path = workdir / "pebble-config.json"
    config_path.write_text(json.dumps(config))
    env = _env({"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", **environment})
    log = workdir / "pebble.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [binary, "-config", str(config_path), "-dnsserver", dns_server],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        directory_url = f"https://127.0.0.1:{port}/dir"
        _wait_for_tls(directory_url, ca, process, log)
        yield Pebble(
            directory_url=directory_url,
            management_url=f"https://127.0.0.1:{management_port}",
            ca_bundle=ca,
            http01_port=http01_port,
            dns_server=dns_server,
        )
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def challtestsrv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChallTestSrv]:
    binary = require_binary("pebble-challtestsrv")
    workdir = tmp_path_factory.mktemp("challtestsrv")
    dns_port, management_port = free_port(), free_port()
    log = workdir / "challtestsrv.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                binary,
                "-dns01", f"127.0.0.1:{dns_port}",
                "-management", f"127.0.0.1:{management_port}",
                "-http01", "",
                "-https01", "",
                "-tlsalpn01", "",
                "-defaultIPv4", "127.0.0.1",
                "-defaultIPv6", "",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=_env({}),
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        management_url = f"http://127.0.0.1:{management_port}"
        while True:
            if process.poll() is not None:
                pytest.fail(f"pebble-challtestsrv exited: {log.read_text()[-2000:]}", pytrace=False)
            try:
                request = urllib.request.Request(management_url + "/clear-txt", data=b'{"host":"probe."}')  # noqa: S310
                with urllib.request.urlopen(request, timeout=2):  # noqa: S310 - local test server
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"pebble-challtestsrv did not start: {log.read_text()[-2000:]}", pytrace=False)
                time.sleep(0.05)
        yield ChallTestSrv(dns_port=dns_port, management_url=management_url)
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory, challtestsrv: ChallTestSrv) -> Iterator[Pebble]:
    with start_pebble(tmp_path_factory.mktemp("pebble"), challtestsrv.dns_address) as server:
        yield server


class AriProxy:
    """An ACME directory with ``renewalInfo`` (RFC 9773), in front of a Pebble that has none.

    Every request is passed to Pebble with the proxy's own Host header, so the URLs Pebble
    puts in its answers (and checks in each JWS) are the proxy's. The proxy adds
    ``renewalInfo`` to the directory, answers renewal-info requests with ``window`` and
    ``Retry-After``, records each newOrder payload, and can answer ``alreadyReplaced`` once
    for chosen ARI ids.
    """

    def __init__(self, pebble: Pebble, workdir: Path, *, port: int = 0) -> None:
        import http.server
        import threading

        self.pebble = pebble
        self.ca_bundle, cert, key = make_tls_bundle(workdir / "ari-proxy-tls")
        self.window: tuple[datetime.datetime, datetime.datetime] | None = None
        self.retry_after = 3600
        self.new_orders: list[dict[str, object]] = []
        self.renewal_info_asked: list[str] = []
        self.already_replaced: set[str] = set()
        upstream = urllib.parse.urlsplit(pebble.directory_url)
        self._upstream = (upstream.hostname or "127.0.0.1", upstream.port or 443)
        self._upstream_context = ssl.create_default_context(cafile=str(pebble.ca_bundle))
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body leave in two writes: with Nagle's algorithm the body waits for the client's
            # delayed ACK of the headers, 40 ms per answer on a kept-alive connection
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                proxy._forward(self, "HEAD")

            def do_GET(self) -> None:
                if self.path == "/dir":
                    _status, _headers, body = proxy._upstream_call("GET", "/dir", self.headers, b"")
                    directory = json.loads(body)
                    directory["renewalInfo"] = f"https://{self.headers['Host']}/renewal-info"
                    proxy._answer(self, 200, {"Content-Type": "application/json"}, json.dumps(directory).encode())
                elif self.path.startswith("/renewal-info/"):
                    proxy.renewal_info_asked.append(self.path.rsplit("/", 1)[-1])
                    if proxy.window is None:
                        proxy._answer(self, 404, {"Content-Type": "application/problem+json"}, b'{"type":"x"}')
                        return
                    start, end = proxy.window
                    body = json.dumps(
                        {"suggestedWindow": {"start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                             "end": end.strftime("%Y-%m-%dT%H:%M:%SZ")},
                         "explanationURL": "https://example.com/why"}
                    ).encode()  # fmt: skip
                    headers = {"Content-Type": "application/json", "Retry-After": str(proxy.retry_after)}
                    proxy._answer(self, 200, headers, body)
                else:
                    proxy._forward(self, "GET")

            def do_POST(self) -> None:
                proxy._forward(self, "POST")

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        self.directory_url = f"https://127.0.0.1:{self._server.server_address[1]}/dir"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _upstream_call(self, method: str, path: str, headers: object, body: bytes) -> tuple[int, dict[str, str], bytes]:
        import http.client

        connection = http.client.HTTPSConnection(*self._upstream, context=self._upstream_context, timeout=30)
        try:
            forwarded = {k: v for k, v in headers.items() if k.lower() in ("host", "content-type", "user-agent")}  # type: ignore[attr-defined]
            connection.request(method, path, body=body or None, headers=forwarded)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def _intercept(self, handler: Any, method: str, body: bytes) -> bool:
        """A subclass may answer a request itself (True) instead of passing it to Pebble."""
        return False

    def _forward(self, handler: Any, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if self._intercept(handler, method, body):
            return
        if method == "POST" and handler.path == "/order-plz":
            payload = json.loads(base64.urlsafe_b64decode(json.loads(body)["payload"] + "=="))
            self.new_orders.append(payload)
            if payload.get("replaces") in self.already_replaced:
                self.already_replaced.discard(str(payload["replaces"]))
                problem = {"type": "urn:ietf:params:acme:error:alreadyReplaced", "detail": "already replaced"}
                self._answer(handler, 409, {"Content-Type": "application/problem+json"}, json.dumps(problem).encode())
                return
        status, headers, answer = self._upstream_call(method, handler.path, handler.headers, body)
        keep = {k: v for k, v in headers.items() if k.lower() in ("content-type", "replay-nonce", "location", "link",
                                                                  "retry-after", "cache-control")}  # fmt: skip
        self._answer(handler, status, keep, answer)

    @staticmethod
    def _answer(handler: Any, status: int, headers: dict[str, str], body: bytes) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)


@pytest.fixture
def ari_proxy(pebble: Pebble, tmp_path: Path) -> Iterator[AriProxy]:
    proxy = AriProxy(pebble, tmp_path)
    try:
        yield proxy
    finally:
        proxy.close()
