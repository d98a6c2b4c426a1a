"""Bounded retries of the ACME channel against a local HTTP server that answers as told, with an injected sleep.

Idempotent requests (GET, POST-as-GET, newNonce) are retried on a 5xx/429, honouring ``Retry-After``
up to the policy's cap; a request that creates something (newOrder) never is; ``badNonce`` always is,
at once, with a fresh nonce. Nothing here waits real time: the policy's sleep records the waits.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import threading
from collections.abc import Iterator

import pytest
import requests
from acme import messages
from cryptography.hazmat.primitives.asymmetric import ec
from josepy import jwa, jwk

from certreconcile.plugins.issuers.acme.client import AcmeConnection, transport_error
from certreconcile.retry import RetryPolicy, RetryStats, Verdict
from kms_servers import free_port

#: (status, extra headers, body) answers per path, consumed in order; an empty queue answers 200.
Script = dict[str, list[tuple[int, dict[str, str], dict[str, str]]]]


def _nonce(n: int) -> str:
    return base64.urlsafe_b64encode(f"nonce-{n}".encode()).rstrip(b"=").decode()


@contextlib.contextmanager
def scripted_ca(script: Script) -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _reply(self) -> None:
            if self.command == "POST":
                self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(f"{self.command} {self.path}")
            queue = script.get(self.path, [])
            status, headers, body = queue.pop(0) if queue else (200, {}, {"status": "valid"})
            payload = json.dumps(body).encode() if self.command != "HEAD" else b""
            self.send_response(status)
            self.send_header("Replay-Nonce", _nonce(len(seen)))
            content_type = "application/problem+json" if status >= 400 else "application/json"
            self.send_header("Content-Type", content_type)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_HEAD = _reply

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def unavailable(retry_after: str) -> tuple[int, dict[str, str], dict[str, str]]:
    problem = {"type": "urn:ietf:params:acme:error:serverInternal", "detail": "maintenance"}
    return 503, {"Retry-After": retry_after}, problem


BAD_NONCE = (400, {}, {"type": "urn:ietf:params:acme:error:badNonce", "detail": "stale"})


def connection(base: str, slept: list[float]) -> tuple[AcmeConnection, RetryStats]:
    directory = messages.Directory.from_json({"newNonce": f"{base}/nonce", "newOrder": f"{base}/new-order"})
    stats = RetryStats()
    policy = RetryPolicy(attempts=4, total=60.0, first_delay=0.1, max_delay=10.0, sleep=slept.append, stats=stats)
    conn = AcmeConnection(directory, jwk.JWKEC(key=ec.generate_private_key(ec.SECP256R1())), jwa.ES256, False,
                          retry=policy)  # fmt: skip
    conn.use_account(f"{base}/acct/1")
    return conn, stats


def test_a_503_with_retry_after_is_waited_out_for_a_post_as_get() -> None:
    slept: list[float] = []
    with scripted_ca({"/order/1": [unavailable("7"), unavailable("2")]}) as (base, seen):
        conn, stats = connection(base, slept)
        response = conn.post_as_get(f"{base}/order/1")
    assert response.json() == {"status": "valid"}
    assert seen.count("POST /order/1") == 3  # two refusals, then the answer
    assert slept == [7.0, 2.0]  # Retry-After honoured (above the 0.1 s, 0.2 s backoff)
    assert stats.retries == 2


def test_a_retry_after_beyond_the_cap_is_not_waited_out() -> None:
    slept: list[float] = []
    with scripted_ca({"/order/1": [unavailable("3600")]}) as (base, seen):
        conn, _stats = connection(base, slept)
        with pytest.raises(messages.Error) as raised:
            conn.post_as_get(f"{base}/order/1")
    assert seen.count("POST /order/1") == 1 and slept == []
    assert transport_error("polling the order", raised.value).code == "acme-server-error"


def test_retries_of_a_server_that_keeps_failing_are_bounded() -> None:
    slept: list[float] = []
    with scripted_ca({"/dir": [unavailable("1")] * 10}) as (base, seen):
        conn, stats = connection(base, slept)
        with pytest.raises(messages.Error):
            conn.get(f"{base}/dir")
    assert seen.count("GET /dir") == 4  # the policy's attempts, no more
    assert slept == [1.0, 1.0, 1.0] and stats.gave_up == 1


def test_a_new_order_is_never_sent_twice() -> None:
    """A 503 on newOrder may hide an order the CA made: the journal resumes it, the client never re-sends it."""
    slept: list[float] = []
    with scripted_ca({"/new-order": [unavailable("1")]}) as (base, seen):
        conn, _ = connection(base, slept)
        with pytest.raises(messages.Error):
            conn.post(f"{base}/new-order", messages.NewOrder())
    assert seen.count("POST /new-order") == 1 and slept == []


def test_a_bad_nonce_is_retried_at_once_with_a_fresh_nonce_even_for_a_new_order() -> None:
    slept: list[float] = []
    with scripted_ca({"/new-order": [BAD_NONCE, BAD_NONCE, BAD_NONCE]}) as (base, seen):
        conn, stats = connection(base, slept)
        response = conn.post(f"{base}/new-order", messages.NewOrder())
    assert response.status_code == 200
    assert seen.count("POST /new-order") == 4  # certbot's network alone gives up after the second
    assert slept == [0.0, 0.0, 0.0] and stats.retries == 3


def test_an_unreachable_ca_is_retried_then_reported() -> None:
    slept: list[float] = []
    base = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    conn, _stats = connection(base, slept)
    with pytest.raises(requests.exceptions.ConnectionError) as raised:
        conn.post_as_get(f"{base}/order/1")
    assert slept == [0.1, 0.2, 0.4]  # the backoff, bounded by the attempts
    assert transport_error("polling the order", raised.value).code == "acme-unreachable"


def test_the_total_time_bounds_the_retries() -> None:
    slept: list[float] = []
    clock = iter(range(0, 1000, 10))  # every look at the clock: 10 s later
    policy = RetryPolicy(attempts=100, total=35.0, sleep=slept.append, monotonic=lambda: float(next(clock)))
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        raise OSError("down")

    with pytest.raises(OSError):
        policy.call("x", failing, lambda exc: Verdict(True, None, "down"))
    assert 2 <= len(calls) <= 4
