"""The standalone HTTP-01 solver under concurrency: many orders in flight share one listener.

Real sockets and real HTTP requests on a port of 127.0.0.1; no sleeps: the threads start
together at a barrier and run a bounded number of present / fetch / cleanup cycles each.
"""

from __future__ import annotations

import http.client
import itertools
import secrets
import socket
import threading

import pytest

from certreconcile.errors import IssuerError
from certreconcile.plugins.issuers.acme.solvers import CHALLENGE_PATH, StandaloneHttp01Solver
from kms_servers import free_port_outside_ephemeral

CYCLES = 60
TIMEOUT = 10.0  # a guard against a hang, never waited out when the solver works


def _fetch(port: int, token: str) -> tuple[int, bytes] | None:
    """(status, body) of the challenge URL, or None when nothing listens on the port.

    Reset counts as nothing listening: a connection queued on a listener that closes.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request("GET", CHALLENGE_PATH + token)
        response = connection.getresponse()
        return response.status, response.read()
    except (ConnectionRefusedError, ConnectionResetError):
        return None
    finally:
        connection.close()


def _cycle(solver: StandaloneHttp01Solver, port: int) -> str | None:
    """One order's life: present, the CA's request, cleanup, a late request. What went wrong, if anything."""
    token = secrets.token_urlsafe(16)
    key_authorization = f"{token}.{secrets.token_urlsafe(32)}"
    try:
        solver.present(token, key_authorization)
    except IssuerError as exc:
        return f"present failed: {exc.code}: {exc}"
    try:
        served = _fetch(port, token)
    finally:
        solver.cleanup(token)
    if served != (200, key_authorization.encode()):
        return f"while presented, the token was answered with {served!r}"
    gone = _fetch(port, token)
    # Gone: a 404 while other orders keep the listener up, or nothing listening at all.
    if gone is not None and gone != (404, b""):
        return f"after cleanup, the token was answered with {gone!r}"
    return None


def _quick_order(solver: StandaloneHttp01Solver) -> str | None:
    """An order that fails before the CA asks: present and cleanup at once (the listener's churn)."""
    token = secrets.token_urlsafe(16)
    try:
        solver.present(token, f"{token}.quick")
    except IssuerError as exc:
        return f"present failed: {exc.code}: {exc}"
    solver.cleanup(token)
    return None


def _cycles(solver: StandaloneHttp01Solver, port: int, barrier: threading.Barrier, failures: list[str]) -> None:
    barrier.wait(timeout=TIMEOUT)
    for _ in range(CYCLES):
        try:
            failure = _cycle(solver, port) or _quick_order(solver)
        except Exception as exc:  # a worker's error is a test failure, not a lost thread warning
            failure = f"{type(exc).__name__}: {exc}"
        if failure is not None:
            failures.append(failure)


def _run(solvers: list[StandaloneHttp01Solver], port: int, count: int) -> list[str]:
    failures: list[str] = []
    barrier = threading.Barrier(count)
    chosen = itertools.cycle(solvers)
    threads = [
        threading.Thread(target=_cycles, args=(next(chosen), port, barrier, failures), daemon=True)
        for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def _nothing_listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    except ConnectionRefusedError:
        return True
    return False


# With fewer threads the listener goes idle more often: the closing and reopening is what raced.
@pytest.mark.parametrize(
    ("solvers", "threads"),
    [(1, 4), (1, 8), (2, 8)],
    ids=["one-issuer-4-threads", "one-issuer-8-threads", "two-issuers-same-address-8-threads"],
)
def test_concurrent_orders_share_the_listener_and_every_token_is_served(solvers: int, threads: int) -> None:
    port = free_port_outside_ephemeral()
    instances = [StandaloneHttp01Solver("127.0.0.1", port) for _ in range(solvers)]
    failures = _run(instances, port, threads)
    assert failures == [], f"{len(failures)} of {threads * CYCLES} cycles failed, first: {failures[:3]}"
    # The last cleanup closed the listener: nothing listens between applies.
    assert not any(solver.listening for solver in instances)
    assert _nothing_listens(port)


def test_a_port_taken_by_another_process_is_a_clear_error_and_nothing_is_left_presented() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        solver = StandaloneHttp01Solver("127.0.0.1", port)
        with pytest.raises(IssuerError) as caught:
            solver.present("token", "token.thumbprint")
        assert caught.value.code == "acme-http01-listen"
        assert f"127.0.0.1:{port}" in str(caught.value)
        assert not solver.listening
    # The port is free again: the next present listens, and the failed token was not kept.
    solver.present("other", "other.thumbprint")
    try:
        assert _fetch(port, "token") == (404, b"")
        assert _fetch(port, "other") == (200, b"other.thumbprint")
    finally:
        solver.cleanup("other")
    assert not solver.listening


def test_a_token_presented_by_two_orders_is_served_until_both_cleaned_it_up() -> None:
    # Two orders for the same name may share the CA's pending authorization, so the same token.
    port = free_port_outside_ephemeral()
    first, second = StandaloneHttp01Solver("127.0.0.1", port), StandaloneHttp01Solver("127.0.0.1", port)
    first.present("shared", "shared.thumbprint")
    second.present("shared", "shared.thumbprint")
    first.cleanup("shared")
    try:
        assert _fetch(port, "shared") == (200, b"shared.thumbprint")
    finally:
        second.cleanup("shared")
    assert _nothing_listens(port)
    assert not first.listening and not second.listening
