"""The HTTP endpoints of ``certreconcile run --metrics-port``: ``/metrics``, ``/healthz`` and ``/readyz``.

* ``/healthz``: 200 while the process answers (a liveness probe: restart it when this fails).
* ``/readyz``: 200 only when the state database answers a query now AND the last reconcile cycle
  finished within its interval (with jitter) plus a grace; else 503. Both answer a short JSON
  object: ``{"status": "ready", ...}`` or ``{"status": "unready", "reason": "..."}``. Before the
  first cycle finishes the process is not ready.
* anything else: the Prometheus metrics (prometheus-client's own WSGI app).

The age of the last cycle is read from the injected clock (tests move a fixed clock). The reason
names an error code or an age, never a URL or a secret. Loopback by default; no TLS, no auth:
put a proxy in front to expose it.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from certreconcile.actual.store import StateStore
from certreconcile.clock import Clock
from certreconcile.errors import CertReconcileError

__all__ = ["DEFAULT_READY_GRACE", "Readiness", "ReadyAnswer", "database_probe", "endpoints_app", "serve_endpoints"]

#: How much longer than its interval (with jitter) a cycle may take before ``/readyz`` fails.
DEFAULT_READY_GRACE = 300.0

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class ReadyAnswer:
    ready: bool
    body: dict[str, object]


class Readiness:
    """What ``/readyz`` answers: a database probe (raises CertReconcileError when unreachable) and the last cycle."""

    def __init__(self, clock: Clock, probe: Callable[[], None], *, max_age: float) -> None:
        self.clock = clock
        self.probe = probe
        self.max_age = max_age  # seconds: interval x (1 + jitter) + grace
        self._lock = threading.Lock()
        self._last: tuple[float, str] | None = None  # (finished at, outcome)

    @classmethod
    def for_interval(
        cls, clock: Clock, probe: Callable[[], None], *, interval: float, jitter: float,
        grace: float = DEFAULT_READY_GRACE,
    ) -> Readiness:  # fmt: skip
        return cls(clock, probe, max_age=interval * (1.0 + jitter) + grace)

    def cycle_finished(self, finished_at: float, outcome: str) -> None:
        """Record a finished cycle (Unix seconds from the loop's clock) and its outcome."""
        with self._lock:
            self._last = (finished_at, outcome)

    def check(self) -> ReadyAnswer:
        reasons: list[str] = []
        body: dict[str, object] = {}
        try:
            self.probe()
            body["database"] = "reachable"
        except CertReconcileError as exc:
            body["database"] = "unreachable"
            reasons.append(f"the state database is unreachable ({exc.code})")
        with self._lock:
            last = self._last
        if last is None:
            reasons.append("no reconcile cycle has finished yet")
        else:
            age = self.clock.now().timestamp() - last[0]
            body["last_cycle_age_seconds"] = round(age, 3)
            body["last_cycle_outcome"] = last[1]
            if age > self.max_age:
                reasons.append(f"the last cycle finished {age:.0f}s ago (more than {self.max_age:.0f}s)")
        if reasons:
            return ReadyAnswer(False, {"status": "unready", "reason": "; ".join(reasons), **body})
        return ReadyAnswer(True, {"status": "ready", **body})


def database_probe(store: StateStore) -> Callable[[], None]:
    """One query on a new connection; raises CertReconcileError (``database-unavailable``...) when it fails."""

    def probe() -> None:
        with store.session() as session:
            session.meta()

    return probe


def _json(start_response: StartResponse, status: str, body: dict[str, object]) -> list[bytes]:
    data = json.dumps(body, sort_keys=True).encode() + b"\n"
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store")])  # fmt: skip
    return [data]


def endpoints_app(registry: CollectorRegistry, readiness: Readiness | None) -> WsgiApp:
    """``/healthz``, ``/readyz`` (503 without a readiness) and, on every other path, the metrics."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/healthz":
            return _json(start_response, "200 OK", {"status": "alive"})
        if path == "/readyz":
            if readiness is None:
                return _json(start_response, "503 Service Unavailable", {"status": "unready", "reason": "starting"})
            answer = readiness.check()
            return _json(start_response, "200 OK" if answer.ready else "503 Service Unavailable", answer.body)
        page: Iterable[bytes] = metrics(environ, start_response)
        return page

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scrape never holds the shutdown


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr: probes every few seconds would drown the reconciler's lines."""


def serve_endpoints(app: WsgiApp, address: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``app`` on ``address:port`` (0: a free port) from a daemon thread. Raises OSError."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    server_class = type("EndpointServer", (_ThreadingServer,), {"address_family": family})
    server: WSGIServer = make_server(address, port, app, server_class, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-endpoints", daemon=True)
    thread.start()
    return server, thread
