"""The agent's HTTPS server (standard library only): mutual TLS, one POST of JSON per request.

Each accepted connection is wrapped with the server context current at that moment (a renewed
certificate serves new connections without a restart); the TLS handshake runs in the request's
thread. Every request is checked in this order, and refused with an :class:`ErrorBody` at the
first failure, before anything is written:

1. the client certificate chains to the fleet CA (the handshake) and carries the applier's URI SAN;
2. ``POST`` to a path of :data:`OPERATIONS`; a body of at most :data:`MAX_BODY_BYTES`;
3. the body decodes into the operation's request model (unknown fields refused);
4. its timestamp is within the window of the agent's clock, its nonce was not seen (handlers.py).

One log line per request (operation, target, certificate name, result), never the key.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel

from certreconcile.agent.handlers import Refusal, handle
from certreconcile.agent.runtime import AgentRuntime
from certreconcile.errors import CertReconcileError
from certreconcile.fleet.protocol import API_VERSION, APPLIER_URI, MAX_BODY_BYTES, OPERATIONS, ErrorBody, ErrorDetail

__all__ = ["AgentHttpServer", "logger"]

logger = logging.getLogger("certreconcile.agent")

HANDSHAKE_TIMEOUT = 10.0  # seconds for a client to finish the TLS handshake
REQUEST_TIMEOUT = 30.0  # seconds for a client to send its request once the handshake is done


class AgentHttpServer(ThreadingHTTPServer):
    """ThreadingHTTPServer over mutual TLS; ``runtime`` may be replaced (SIGHUP) while it runs."""

    daemon_threads = False  # a stop waits for the requests in flight (block_on_close)
    block_on_close = True

    def __init__(self, runtime: AgentRuntime, host: str, port: int) -> None:
        self.runtime = runtime
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), AgentRequestHandler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        context, _ = self.runtime.identity.current()
        return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            logger.info("agent %s: handshake from %s refused: %s", self.runtime.config.name, client_address[0], reason)
            return
        request.settimeout(REQUEST_TIMEOUT)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.info("agent %s: connection from %s ended with an error", self.runtime.config.name, client_address[0])


def _peer_uris(connection: Any) -> list[str]:
    certificate = connection.getpeercert() if isinstance(connection, ssl.SSLSocket) else None
    if not certificate:
        return []
    names: tuple[tuple[str, str], ...] = certificate.get("subjectAltName", ())  # type: ignore[assignment]
    return [value for kind, value in names if kind == "URI"]


class AgentRequestHandler(BaseHTTPRequestHandler):
    server: AgentHttpServer
    protocol_version = "HTTP/1.1"
    server_version = "certreconcile-agent"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # the base class's signature
        """Silence the base class's access log: :meth:`_log` writes one line per request instead."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's errors (a malformed request line or header) as an :class:`ErrorBody` too."""
        text = (message or "malformed HTTP request").replace("\n", " ")[:200]
        self._respond(self._refused(Refusal(code, "agent-request-invalid", text), "-"))

    def do_POST(self) -> None:  # http.server's naming
        self._respond(self._answer())

    def _refuse_method(self) -> None:
        refusal = Refusal(405, "agent-request-invalid", f"{self.command} is not allowed: every request is a POST")
        self._respond(self._refused(refusal, "-"))

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _refuse_method

    def _answer(self) -> tuple[int, bytes]:
        runtime = self.server.runtime
        prefix = f"/{API_VERSION}/"
        operation = self.path.removeprefix(prefix) if self.path.startswith(prefix) else ""
        operation = operation if operation in OPERATIONS else ""
        fields: dict[str, str] = {}
        try:
            if APPLIER_URI not in _peer_uris(self.connection):
                raise Refusal(
                    403,
                    "agent-client-refused",
                    f"the client certificate does not carry {APPLIER_URI}",
                    "only the applier's certificate (signed by the fleet CA) may call an agent",
                )
            if not operation:
                raise Refusal(404, "agent-request-invalid", f"no operation at {self.path[:100]!r}", "POST /v1/<op>")
            body = self._read_body()
            fields = _request_fields(body)
            response = handle(runtime, operation, body)
        except Refusal as refusal:
            return self._refused(refusal, operation or "-", fields)
        except CertReconcileError as exc:
            return self._refused(Refusal(500, exc.code, exc.message, exc.hint or None), operation, fields)
        except Exception:  # one request failed; the agent keeps serving the others
            logger.exception("agent %s: %s failed", runtime.config.name, operation)
            failed = Refusal(500, "internal-error", f"the agent failed on {operation}: a bug, see its log")
            return self._refused(failed, operation, fields)
        self._log(operation, fields, "ok" + _summary(response))
        return 200, response.model_dump_json().encode()

    def _read_body(self) -> bytes:
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            raise Refusal(411, "agent-request-invalid", "the request has no Content-Length")
        length = int(length_header)
        if length > MAX_BODY_BYTES:
            raise Refusal(413, "agent-request-invalid", f"the body is larger than {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length)

    def _refused(self, refusal: Refusal, operation: str, fields: dict[str, str] | None = None) -> tuple[int, bytes]:
        self._log(operation, fields or {}, f"refused {refusal.status} {refusal.code}: {refusal.message}")
        body = ErrorBody(error=ErrorDetail(code=refusal.code, message=refusal.message, hint=refusal.hint))
        return refusal.status, body.model_dump_json().encode()

    def _respond(self, answer: tuple[int, bytes]) -> None:
        status, body = answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        # One request per connection: a stop never waits for an idle kept-alive connection, and each
        # request is served with the certificate current when its connection was accepted.
        self.close_connection = True
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _log(self, operation: str, fields: dict[str, str], result: str) -> None:
        where = " ".join(f"{key}={value}" for key, value in fields.items())
        client = self.client_address[0] if self.client_address else "-"
        name = self.server.runtime.config.name
        logger.info("agent %s: %s %s from %s: %s", name, operation, where or "-", client, result.replace("\n", " "))


def _request_fields(body: bytes) -> dict[str, str]:
    """The target and certificate name a request names, for the log line only (never the key)."""
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: _printable(data[key]) for key in ("target", "name") if isinstance(data.get(key), str)}


_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")


def _printable(value: str) -> str:
    """A value as written by the client, safe for one log line: 80 characters, no space or control character."""
    return _UNPRINTABLE.sub("?", value[:80])


def _summary(response: BaseModel) -> str:
    data = response.model_dump(include={"changed", "verified", "fingerprint", "error"})
    return "".join(f" {key}={value}" for key, value in data.items() if value is not None)
