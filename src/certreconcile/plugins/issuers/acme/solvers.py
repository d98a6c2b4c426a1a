"""HTTP-01 solvers: a built-in standalone server, or token files under a web server's root."""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import socket
import threading
from pathlib import Path

from certreconcile.errors import IssuerError

__all__ = ["CHALLENGE_PATH", "StandaloneHttp01Solver", "WebrootHttp01Solver"]

CHALLENGE_PATH = "/.well-known/acme-challenge/"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")  # base64url (RFC 8555 §8.3): never a path


def _check_token(token: str) -> None:
    if not _TOKEN.match(token):
        raise IssuerError(f"the CA sent an HTTP-01 token that is not base64url ({token[:40]!r})", code="acme-bad-token")


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _ChallengeServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body: bytes | None = None
        if self.path.startswith(CHALLENGE_PATH):
            body = self.server.tokens.get(self.path[len(CHALLENGE_PATH) :])
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the validation requests are the CA's, and the journal records the outcome."""


class _ChallengeServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    tokens: dict[str, bytes]


class StandaloneHttp01Solver:
    """Answers HTTP-01 on ``host:port`` while at least one token is presented, and only then.

    One server per solver, shared by the orders in flight: it starts with the first token
    and stops when the last one is cleaned up, so nothing listens between applies.
    """

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._lock = threading.Lock()
        self._tokens: dict[str, bytes] = {}
        self._server: _ChallengeServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def listening(self) -> bool:
        return self._server is not None

    def present(self, token: str, key_authorization: str) -> None:
        _check_token(token)
        with self._lock:
            self._tokens[token] = key_authorization.encode()
            if self._server is None:
                try:
                    server = _ChallengeServer(self._address, _Handler)
                except OSError as exc:
                    self._tokens.pop(token, None)
                    host, port = self._address
                    raise IssuerError(
                        f"cannot listen on {host}:{port} for HTTP-01 ({exc.strerror or exc})",
                        code="acme-http01-listen",
                        hint="free the port, or set http01.standalone.listen (or use webroot)",
                    ) from exc
                server.tokens = self._tokens
                self._server = server
                self._thread = threading.Thread(target=server.serve_forever, name="acme-http01", daemon=True)
                self._thread.start()

    def cleanup(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)
            if self._tokens or self._server is None:
                return
            server, thread = self._server, self._thread
            self._server = self._thread = None
        # Wake the serve_forever loop at once (a shut-down listening socket is readable),
        # instead of waiting for its next poll: orders in a row start and stop it quickly.
        with contextlib.suppress(OSError):
            server.socket.shutdown(socket.SHUT_RDWR)
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)


class WebrootHttp01Solver:
    """Writes ``<root>/.well-known/acme-challenge/<token>`` (world-readable: it is public) and removes it."""

    def __init__(self, root: Path) -> None:
        self._directory = root / CHALLENGE_PATH.strip("/")

    def present(self, token: str, key_authorization: str) -> None:
        _check_token(token)
        try:
            self._directory.mkdir(parents=True, exist_ok=True, mode=0o755)
            temporary = self._directory / f".{token}.tmp"
            temporary.write_text(key_authorization)
            temporary.chmod(0o644)
            os.replace(temporary, self._directory / token)
        except OSError as exc:
            raise IssuerError(
                f"cannot write the HTTP-01 token under {self._directory} ({exc.strerror or exc})",
                code="acme-webroot-write",
                hint="check that http01.webroot.path exists and is writable",
            ) from exc

    def cleanup(self, token: str) -> None:
        _check_token(token)
        with contextlib.suppress(FileNotFoundError):
            (self._directory / token).unlink()
