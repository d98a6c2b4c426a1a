"""The signed ACME channel's transport (urllib3 straight, requests behind a proxy) against local servers.

Pebble exercises the happy path end to end (tests/e2e/test_acme_pebble.py); here each way the
transport can differ from requests is pinned: TLS trust, errors mapped to what the issuer
understands, the answer as certbot's ClientNetwork reads it, metrics, proxies.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from acme import messages
from cryptography.hazmat.primitives.asymmetric import ec
from josepy import jwa, jwk, jws

from acme_servers import make_tls_bundle
from certreconcile.plugins.issuers.acme.client import (
    DirectClientNetwork,
    set_request_observer,
    transport_error,
)


def _nonce(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, bytes]]  # (method, request target, body), set per server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Replay-Nonce", _nonce(f"nonce-{len(self.seen)}"))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.seen.append(("HEAD", self.path, b""))
        self._answer(200)

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, b""))
        if self.path.endswith("/slow"):
            time.sleep(1.5)
        self._answer(200, b'{"status": "valid"}', {"Content-Type": "application/json"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(("POST", self.path, body))
        if self.path.endswith("/redirect"):
            self._answer(302, b"", {"Location": "/elsewhere"})
            return
        if self.path.endswith("/problem"):
            problem = {"type": "urn:ietf:params:acme:error:malformed", "detail": "no such thing", "status": 400}
            self._answer(400, json.dumps(problem).encode(), {"Content-Type": "application/problem+json"})
            return
        self.send_response(201)
        self.send_header("Replay-Nonce", _nonce("nonce-post"))
        self.send_header("Content-Type", "application/json")
        self.send_header("Location", "https://ca.test/acme/order/1")
        self.send_header("Link", '<https://ca.test/acme/directory>;rel="index"')
        self.send_header("Link", '<https://ca.test/acme/cert/1/alt>;rel="alternate"')
        answer = '{"status": "pending", "détail": "é"}'.encode()
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@contextlib.contextmanager
def _server(context: ssl.SSLContext | None) -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    seen: list[tuple[str, str, bytes]] = []
    handler = type("Handler", (_Handler,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if context is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    ca, cert, key = make_tls_bundle(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return ca, context


def _directory(base: str) -> messages.Directory:
    return messages.Directory.from_json({"newNonce": f"{base}/nonce", "newOrder": f"{base}/new-order"})


def _network(base: str, verify: str | bool) -> tuple[DirectClientNetwork, jwk.JWK]:
    key = jwk.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    network = DirectClientNetwork(key, jwa.ES256, verify, _directory(base))
    network.account = messages.RegistrationResource(body=messages.Registration(), uri=f"{base}/acct/1")
    return network, key


def test_a_signed_post_arrives_as_jws_and_the_answer_reads_as_requests_would(tls: tuple[Path, ssl.SSLContext]) -> None:
    ca, context = tls
    seen_requests: list[tuple[str, int]] = []
    durations: list[float] = []
    set_request_observer(lambda endpoint, status, seconds: (seen_requests.append((endpoint, status)),
                                                           durations.append(seconds)))  # fmt: skip
    try:
        with _server(context) as (base, seen):
            network, key = _network(base, str(ca))
            response = network.post(f"{base}/new-order", messages.NewOrder(), new_nonce_url=f"{base}/nonce")
            network.post(f"{base}/new-order", messages.NewOrder(), new_nonce_url=f"{base}/nonce")
    finally:
        set_request_observer(None)
    # the second POST uses the nonce of the first answer: no second HEAD
    assert [(method, path) for method, path, _ in seen] == [
        ("HEAD", "/nonce"),
        ("POST", "/new-order"),
        ("POST", "/new-order"),
    ]
    body = json.loads(seen[1][2])
    signed = jws.JWS.from_json(body)
    assert signed.verify(key.public_key())  # signed by the account key
    protected = json.loads(jws.b64.b64decode(body["protected"]))
    assert protected["url"] == f"{base}/new-order"
    assert protected["nonce"] == _nonce("nonce-1")  # the nonce the HEAD answered
    assert json.loads(jws.b64.b64decode(json.loads(seen[2][2])["protected"]))["nonce"] == _nonce("nonce-post")
    assert protected["kid"] == f"{base}/acct/1"
    assert response.status_code == 201
    assert response.json() == {"status": "pending", "détail": "é"}
    assert response.text == '{"status": "pending", "détail": "é"}'  # UTF-8, as ClientNetwork decodes
    assert response.headers["location"] == "https://ca.test/acme/order/1"  # case-insensitive
    assert response.links["alternate"]["url"] == "https://ca.test/acme/cert/1/alt"  # both Link headers kept
    assert response.links["index"]["url"] == "https://ca.test/acme/directory"
    assert seen_requests == [("newNonce", 200), ("newOrder", 201), ("newOrder", 201)]  # metrics observed
    assert len(durations) == 3 and all(seconds >= 0 for seconds in durations)  # each request timed


def test_before_the_account_exists_the_jws_carries_the_public_key(tls: tuple[Path, ssl.SSLContext]) -> None:
    ca, context = tls
    with _server(context) as (base, seen):
        network, key = _network(base, str(ca))
        network.account = None
        network.post(f"{base}/new-account", messages.Registration(contact=("mailto:ops@example.test",)),
                     new_nonce_url=f"{base}/nonce")  # fmt: skip
    body = json.loads(seen[1][2])
    protected = json.loads(jws.b64.b64decode(body["protected"]))
    assert "kid" not in protected
    assert jwk.JWK.from_json(protected["jwk"]) == key.public_key()
    assert protected["alg"] == "ES256"
    assert json.loads(jws.b64.b64decode(body["payload"])) == {"contact": ["mailto:ops@example.test"]}
    assert jws.JWS.from_json(body).verify()  # acme's own reader accepts it with the embedded key


def test_a_problem_document_raises_acme_error(tls: tuple[Path, ssl.SSLContext]) -> None:
    ca, context = tls
    with _server(context) as (base, _):
        network, _key = _network(base, str(ca))
        with pytest.raises(messages.Error) as caught:
            network.post(f"{base}/problem", messages.NewOrder(), new_nonce_url=f"{base}/nonce")
    assert caught.value.code == "malformed"
    assert caught.value.detail == "no such thing"


def test_redirects_are_not_followed(tls: tuple[Path, ssl.SSLContext]) -> None:
    ca, context = tls
    with _server(context) as (base, seen):
        network, _key = _network(base, str(ca))
        response = network.post(f"{base}/redirect", messages.NewOrder(), new_nonce_url=f"{base}/nonce")
    assert response.status_code == 302
    assert [path for _, path, _ in seen] == ["/nonce", "/redirect"]  # /elsewhere never asked


def test_a_server_certificate_outside_the_bundle_is_refused(tls: tuple[Path, ssl.SSLContext], tmp_path: Path) -> None:
    _ca, context = tls
    other_ca, _cert, _key = make_tls_bundle(tmp_path / "other")
    with _server(context) as (base, seen):
        for verify in (str(other_ca), True):  # another CA's bundle, and certifi's public roots
            network, _key = _network(base, verify)
            with pytest.raises(requests.exceptions.SSLError) as caught:
                network.head(f"{base}/nonce")
            assert transport_error("reading the directory", caught.value).code == "acme-tls"
    assert seen == []  # no request got through


def test_unreachable_and_slow_servers_map_to_requests_errors(tls: tuple[Path, ssl.SSLContext]) -> None:
    ca, context = tls
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"https://127.0.0.1:{probe.getsockname()[1]}"  # bound, never listening: refused
    network, _key = _network(closed, str(ca))
    with pytest.raises(requests.exceptions.ConnectionError) as refused:
        network.head(f"{closed}/nonce")
    assert transport_error("polling", refused.value).code == "acme-unreachable"
    with _server(context) as (base, _):
        network, _key = _network(base, str(ca))
        network._default_timeout = 0.3  # type: ignore[assignment]
        with pytest.raises(requests.exceptions.Timeout) as slow:
            network.get(f"{base}/slow")
    error = transport_error("polling", slow.value)
    assert error.code == "acme-unreachable" and "Timeout" in error.message


def test_behind_a_proxy_requests_carries_the_request() -> None:
    """With a proxy configured the request goes to the proxy (requests' path), not to the CA."""
    with _server(None) as (proxy, proxied), _server(None) as (ca, direct):
        network, _key = _network(ca, False)
        network.session.proxies = {"http": proxy}
        network.head(f"{ca}/nonce")
        assert proxied == [("HEAD", f"{ca}/nonce", b"")]  # the absolute URI: a proxy request
        assert direct == []
        network.session.proxies = {}
        network.head(f"{ca}/nonce")
        assert direct == [("HEAD", "/nonce", b"")]


class _CountingHandler(_Handler):
    """Records each request's client port (one per TCP connection); ``close_after`` closes silently."""

    ports: list[int]
    close_after: bool = False
    closed: threading.Event

    def handle(self) -> None:
        if not self.close_after:
            super().handle()
            return
        self.handle_one_request()  # answers with keep-alive, then hangs up without saying so
        self.close_connection = True

    def finish(self) -> None:
        super().finish()
        self.closed.set()

    def send_response(self, code: int, message: str | None = None) -> None:
        self.ports.append(self.client_address[1])
        super().send_response(code, message)


@contextlib.contextmanager
def _counting_server(
    context: ssl.SSLContext, *, close_after: bool
) -> Iterator[tuple[str, list[int], threading.Event]]:
    ports: list[int] = []
    closed = threading.Event()
    handler = type("Handler", (_CountingHandler,), {"seen": [], "ports": ports, "close_after": close_after,
                                                    "closed": closed})  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", ports, closed
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_requests_share_one_kept_alive_connection(tls: tuple[Path, ssl.SSLContext]) -> None:
    ca, context = tls
    with _counting_server(context, close_after=False) as (base, ports, _closed):
        network, _key = _network(base, str(ca))
        for _ in range(3):
            assert network.get(f"{base}/order").json() == {"status": "valid"}
        network.head(f"{base}/nonce")
    assert len(ports) == 4 and len(set(ports)) == 1  # one TLS handshake for all four


def test_a_connection_the_ca_closed_while_idle_is_replaced_before_the_next_request(
    tls: tuple[Path, ssl.SSLContext],
) -> None:
    ca, context = tls
    with _counting_server(context, close_after=True) as (base, ports, closed):
        network, _key = _network(base, str(ca))
        assert network.get(f"{base}/order").json() == {"status": "valid"}
        assert closed.wait(5)  # the CA hung up the idle connection
        response = network.post(f"{base}/new-order", messages.NewOrder(), new_nonce_url=f"{base}/nonce")
    assert response.status_code == 201  # sent on a new connection, not lost on the closed one
    assert len(ports) == 3 and len(set(ports)) == 3


class _RawHandler(http.server.BaseHTTPRequestHandler):
    """Answers framed the ways a CA's HTTP server may frame them, written byte for byte."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/chunked":  # an interim answer, a folded header, a chunked body with a trailer
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n"
                             b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLink: <https://ca.test/a>;\r\n"
                             b' rel="alternate"\r\nTransfer-Encoding: chunked\r\n\r\n'
                             b"7;ext=1\r\n{\"statu\r\n9\r\ns\": \"ok\"}\r\n0\r\nTrailer: x\r\n\r\n")  # fmt: skip
        else:  # no length: the body ends when the server closes
            self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"status\": \"closed\"}")
            self.close_connection = True


def test_chunked_folded_interim_and_close_delimited_answers_read_whole(tls: tuple[Path, ssl.SSLContext]) -> None:
    ca, context = tls
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RawHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        network, _key = _network(base, str(ca))
        chunked = network.get(f"{base}/chunked")
        assert chunked.json() == {"status": "ok"}
        assert chunked.links["alternate"]["url"] == "https://ca.test/a"  # the folded line joined
        assert network.get(f"{base}/chunked").json() == {"status": "ok"}  # the connection was left clean
        assert network.get(f"{base}/closing").json() == {"status": "closed"}
        assert network.get(f"{base}/chunked").json() == {"status": "ok"}  # on a new connection
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
