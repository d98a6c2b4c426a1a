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
        self.send_response(404 if body is None else 200)
        # One request per connection: no kept-alive connection outlives the listener.
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body or b"")))
        if body is not None:
            self.send_header("Content-Type", "text/plain")
        self.end_headers()
        if body is not None:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the validation requests are the CA's, and the journal records the outcome."""


class _ChallengeServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # Bind again at once after the last order closed the listener (no wait for TIME_WAIT);
    # never SO_REUSEPORT, so another process's listener on the port is still a clear error.
    allow_reuse_address = True
    allow_reuse_port = False
    tokens: dict[str, bytes]


class _Listener:
    """One challenge server on one address, shared by every solver and order that uses the address.

    Tokens are counted: the same token presented twice (two orders sharing a pending
    authorization) is served until both orders have cleaned it up.
    """

    def __init__(self, address: tuple[str, int]) -> None:
        self.tokens: dict[str, bytes] = {}
        self._presented: dict[str, int] = {}
        self._server = _ChallengeServer(address, _Handler)  # OSError when the port is taken
        self._server.tokens = self.tokens
        self._thread = threading.Thread(target=self._server.serve_forever, name="acme-http01", daemon=True)
        self._thread.start()

    def add(self, token: str, key_authorization: str) -> None:
        self.tokens[token] = key_authorization.encode()
        self._presented[token] = self._presented.get(token, 0) + 1

    def remove(self, token: str) -> None:
        count = self._presented.pop(token, 0) - 1
        if count > 0:
            self._presented[token] = count
        else:
            self.tokens.pop(token, None)

    @property
    def idle(self) -> bool:
        return not self._presented

    def stop(self) -> None:
        """Close the listening socket; returns once it is closed, so the port can be bound again."""
        # Wake the serve_forever loop at once (a shut-down listening socket is readable),
        # instead of waiting for its next poll: orders in a row start and stop it quickly.
        with contextlib.suppress(OSError):
            self._server.socket.shutdown(socket.SHUT_RDWR)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# Every listener of this process, by address. Starting and stopping happen under the lock, so a
# present never finds the port still held by a listener that a cleanup is closing.
_LISTENERS: dict[tuple[str, int], _Listener] = {}
_LISTENERS_LOCK = threading.Lock()


class StandaloneHttp01Solver:
    """Answers HTTP-01 on ``host:port`` while at least one token is presented, and only then.

    One server per address, shared by the orders in flight (also those of other issuers
    listening on the same address): it starts with the first token and stops when the last
    one is cleaned up, so nothing listens between applies.
    """

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)

    @property
    def listening(self) -> bool:
        with _LISTENERS_LOCK:
            return self._address in _LISTENERS

    def present(self, token: str, key_authorization: str) -> None:
        _check_token(token)
        with _LISTENERS_LOCK:
            listener = _LISTENERS.get(self._address)
            if listener is None:
                try:
                    listener = _Listener(self._address)
                except OSError as exc:
                    host, port = self._address
                    raise IssuerError(
                        f"cannot listen on {host}:{port} for HTTP-01 ({exc.strerror or exc})",
                        code="acme-http01-listen",
                        hint="free the port, or set http01.standalone.listen (or use webroot)",
                    ) from exc
                _LISTENERS[self._address] = listener
            listener.add(token, key_authorization)

    def cleanup(self, token: str) -> None:
        with _LISTENERS_LOCK:
            listener = _LISTENERS.get(self._address)
            if listener is None:
                return
            listener.remove(token)
            if listener.idle:
                del _LISTENERS[self._address]
                listener.stop()


class WebrootHttp01Solver:
    """Writes ``<root>/.well-known/acme-challenge/<token>`` (world-readable: it is public) and removes it."""

    def __init__(self, root: Path) -> None:
        self._directory = root / CHALLENGE_PATH.strip("/")

    @property
    def challenge_directory(self) -> Path:
        """``<root>/.well-known/acme-challenge``, made by the first present (``check`` removes what it made)."""
        return self._directory

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
