"""Real receivers of notifications for the tests, on 127.0.0.1: an HTTP receiver and an SMTP server.

* :class:`HttpReceiver`: ``http.server`` in a thread; records every POST (path, headers, exact body)
  and answers 204. ``start()`` binds its port (kept across a stop, so "down, then back" is the same
  address); while stopped nothing listens there (connections are refused).
* :class:`SmtpServer`: aiosmtpd's ``Controller`` with a handler keeping each message, and a login
  (AUTH PLAIN/LOGIN over the plain connection) that accepts one user and password.
"""

from __future__ import annotations

import dataclasses
import email
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["HttpReceiver", "Post", "SmtpServer", "free_port", "smtp_server"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclasses.dataclass(frozen=True)
class Post:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


class HttpReceiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.posts: list[Post] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                with receiver._lock:
                    receiver.posts.append(Post(self.path, headers, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None


@dataclasses.dataclass
class SmtpServer:
    host: str
    port: int
    messages: list[Message]
    logins: list[str]


@contextmanager
def smtp_server(user: str, password: str) -> Iterator[SmtpServer]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    server = SmtpServer("127.0.0.1", free_port(), [], [])

    class Handler:
        async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
            server.messages.append(email.message_from_bytes(envelope.original_content))
            return "250 OK"

    def authenticate(smtp: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login.decode() == user and data.password.decode() == password
        if ok:
            server.logins.append(user)
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535 itself

    controller = Controller(
        Handler(), hostname=server.host, port=server.port, authenticator=authenticate, auth_require_tls=False
    )
    controller.start()
    try:
        yield server
    finally:
        controller.stop()
