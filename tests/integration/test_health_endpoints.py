"""/healthz and /readyz beside /metrics: served over real HTTP, against a real PostgreSQL the test stops.

The database is a throwaway embedded PostgreSQL of this test (never the session's server, which
other tests use); the age of the last cycle is read from a FixedClock the test moves.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from certreconcile.actual.embedded import EmbeddedPostgres
from certreconcile.actual.migrate import upgrade
from certreconcile.actual.repository import PostgresStore
from certreconcile.apply.health import Readiness, database_probe, endpoints_app, serve_endpoints
from certreconcile.apply.metrics import ReconcilerMetrics
from certreconcile.clock import FixedClock
from helpers import server_scratch_dir


def get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, 4xx/5xx included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture
def throwaway_database() -> Iterator[tuple[EmbeddedPostgres, str]]:
    """A PostgreSQL of this test alone, migrated: the test may stop and start it."""
    with server_scratch_dir("crt-readyz") as scratch:
        server = EmbeddedPostgres(scratch / "state")
        try:
            url = server.ensure_running()
            with psycopg.connect(url, autocommit=True) as conn:
                upgrade(conn)
            yield server, url
        finally:
            server.stop()


@pytest.fixture
def endpoints(throwaway_database: tuple[EmbeddedPostgres, str]) -> Iterator[tuple[int, Readiness, FixedClock]]:
    _, url = throwaway_database
    clock = FixedClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    # interval 60s, jitter 10%, grace 30s: ready while the last cycle finished at most 96s ago
    readiness = Readiness.for_interval(
        clock, database_probe(PostgresStore(url, connect_timeout=5)), interval=60, jitter=0.1, grace=30
    )
    metrics = ReconcilerMetrics()
    server, thread = serve_endpoints(endpoints_app(metrics.registry, readiness), "127.0.0.1", 0)
    try:
        yield server.server_port, readiness, clock
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_readyz_follows_the_last_cycle_on_the_injected_clock(endpoints: tuple[int, Readiness, FixedClock]) -> None:
    port, readiness, clock = endpoints
    status, kind, body = get(port, "/healthz")
    assert (status, kind, json.loads(body)) == (200, "application/json", {"status": "alive"})

    status, _, body = get(port, "/readyz")
    assert status == 503  # no cycle yet
    assert json.loads(body) == {
        "status": "unready", "reason": "no reconcile cycle has finished yet", "database": "reachable",
    }  # fmt: skip

    readiness.cycle_finished(clock.now().timestamp(), "success")
    clock.advance(timedelta(seconds=96))
    status, _, body = get(port, "/readyz")
    assert status == 200, body
    assert json.loads(body) == {
        "status": "ready", "database": "reachable", "last_cycle_age_seconds": 96.0, "last_cycle_outcome": "success",
    }  # fmt: skip

    clock.advance(timedelta(seconds=1))  # 97s: more than the interval with its jitter and the grace
    status, _, body = get(port, "/readyz")
    assert status == 503
    assert json.loads(body)["reason"] == "the last cycle finished 97s ago (more than 96s)"

    readiness.cycle_finished(clock.now().timestamp(), "error")  # a finished cycle, whatever its outcome
    assert get(port, "/readyz")[0] == 200
    page = get(port, "/metrics")[2]
    assert "certreconcile_build_info" in page and "process_start_time_seconds" in page  # /metrics beside them


def test_readyz_fails_while_the_database_is_stopped(
    throwaway_database: tuple[EmbeddedPostgres, str], endpoints: tuple[int, Readiness, FixedClock]
) -> None:
    server, _ = throwaway_database
    port, readiness, clock = endpoints
    readiness.cycle_finished(clock.now().timestamp(), "success")
    assert get(port, "/readyz")[0] == 200

    assert server.stop()
    status, _, body = get(port, "/readyz")
    assert status == 503
    answer = json.loads(body)
    assert answer["status"] == "unready"
    assert answer["database"] == "unreachable"
    assert answer["reason"] == "the state database is unreachable (database-unavailable)"
    assert get(port, "/healthz")[0] == 200  # alive all the same: no restart for a database outage

    server.ensure_running()
    assert get(port, "/readyz")[0] == 200  # back as soon as the database answers
