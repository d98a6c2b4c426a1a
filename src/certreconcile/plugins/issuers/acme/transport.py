"""One thread's keep-alive HTTP/1.1 connections to a CA, over plain sockets.

The signed ACME requests of :class:`~certreconcile.plugins.issuers.acme.client.DirectClientNetwork`
go through here: one connection per CA host, reused while the CA keeps it open (and replaced
when the CA closed it while idle), TLS verified against the bundle (or certifi's, as requests
does). No redirects, no retries (the callers decide: a request that creates something is never
sent twice). urllib3's pool manager did the same with several layers more per request (URL
parsing, pool lookup, timeout objects, header dictionaries, a response wrapper), and
``http.client`` under it parses headers with the ``email`` package: together they cost about as
much CPU as the rest of the request.

Errors leave as ``requests``' (SSLError, Timeout, ConnectionError), as the issuer expects.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import urllib.parse
from dataclasses import dataclass

import requests

__all__ = ["Answer", "KeepAliveTransport"]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]  # in the order received, repeated names kept
    body: bytes


def _context(verify: str | bool) -> ssl.SSLContext:
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    bundle = verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH
    return ssl.create_default_context(cafile=bundle)


_MAX_LINE = 65536
_MAX_HEADERS = 200


class _Connection:
    """One HTTP/1.1 connection: the request written as bytes, the answer read from a buffered reader.

    ``http.client`` parses every answer's headers with the ``email`` package's feed parser, the
    largest part of a request's CPU here; ACME answers are small and well-formed, so the status
    line and the headers are split directly (RFC 9112: obsolete line folding joined, repeated
    names kept). Bodies by Content-Length, chunked, or until the server closes.
    """

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None, timeout: float) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            self.sock = context.wrap_socket(sock, server_hostname=host) if context is not None else sock
        except BaseException:
            sock.close()
            raise
        self.reader = self.sock.makefile("rb")
        self.timeout = timeout
        self.host_header = host if port in (80, 443) else f"{host}:{port}"
        if ":" in host:  # an IPv6 literal
            self.host_header = f"[{host}]" if port in (80, 443) else f"[{host}]:{port}"

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def closed_by_peer(self) -> bool:
        """An idle kept-alive connection the server has closed (or written to): readable before we ask."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def exchange(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> tuple[Answer, bool]:
        """Send one request, read its answer; True: the connection may be used again."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}", "Accept-Encoding: identity"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        while True:
            status, reason, version = self._status_line()
            pairs = self._headers()
            if not 100 <= status < 200:
                break  # an interim answer (100 Continue): the real one follows
        fields = {name.lower(): value for name, value in pairs}
        keep = version == "HTTP/1.1" and "close" not in fields.get("connection", "").lower()
        if method == "HEAD" or status in (204, 304):
            content = b""
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            content = self._chunked()
        elif "content-length" in fields:
            content = self._exactly(int(fields["content-length"]))
        else:
            content, keep = self.reader.read(), False  # until the server closes
        return Answer(status, reason, pairs, content), keep

    def _line(self) -> bytes:
        line = self.reader.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        return line

    def _status_line(self) -> tuple[int, str, str]:
        line = self._line()
        if not line:
            raise http.client.RemoteDisconnected("the server closed the connection without an answer")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
            raise http.client.BadStatusLine(line.decode("latin-1", "replace")[:100])
        return int(code), reason, version

    def _headers(self) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        while True:
            line = self._line()
            if line in (b"\r\n", b"\n", b""):
                return pairs
            text = line.decode("latin-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and pairs:  # obsolete line folding: part of the previous value
                name, value = pairs[-1]
                pairs[-1] = (name, f"{value} {text.strip()}")
                continue
            name, colon, value = text.partition(":")
            if not colon:
                raise http.client.HTTPException("a malformed header line")
            pairs.append((name.strip(), value.strip()))
            if len(pairs) > _MAX_HEADERS:
                raise http.client.HTTPException("too many headers")

    def _exactly(self, size: int) -> bytes:
        data = self.reader.read(size)
        if len(data) != size:
            raise http.client.IncompleteRead(data, size - len(data))
        return data

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self._line().split(b";", 1)[0].strip() or b"x", 16)
            if size == 0:
                while self._line() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            parts.append(self._exactly(size))
            self._line()  # the CRLF after the chunk


class KeepAliveTransport:
    """Used by one thread at a time (as the network objects built on it are)."""

    def __init__(self, verify: str | bool) -> None:
        self._context = _context(verify)
        self._connections: dict[tuple[str, str, int], _Connection] = {}

    def _connection(self, scheme: str, host: str, port: int, timeout: float) -> _Connection:
        key = (scheme, host, port)
        connection = self._connections.get(key)
        if connection is not None and connection.closed_by_peer():
            connection.close()
            connection = None
        if connection is None:
            connection = _Connection(host, port, self._context if scheme == "https" else None, timeout)
            self._connections[key] = connection
        elif connection.timeout != timeout:
            connection.timeout = timeout
            connection.sock.settimeout(timeout)
        return connection

    def request(self, method: str, url: str, body: bytes | str | None, headers: dict[str, str],
                timeout: float) -> Answer:  # fmt: skip
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise requests.exceptions.InvalidURL(f"not an HTTP(S) URL: {scheme}://")
        port = parts.port or (443 if scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (scheme, parts.hostname, port)
        data = body.encode() if isinstance(body, str) else body
        connection: _Connection | None = None
        try:
            connection = self._connection(scheme, parts.hostname, port, timeout)
            answer, keep = connection.exchange(method, target, data, headers)
        except BaseException as exc:
            if connection is not None:
                connection.close()
            self._connections.pop(key, None)
            if isinstance(exc, Exception):
                raise _as_requests_error(exc) from exc
            raise
        if not keep:
            connection.close()
            self._connections.pop(key, None)
        return answer

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()


def _as_requests_error(exc: Exception) -> Exception:
    """The requests exception the issuer's retry and error rules understand (never a URL)."""
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return requests.exceptions.SSLError(str(exc))
    if isinstance(exc, socket.timeout | TimeoutError):
        return requests.exceptions.Timeout(str(exc))
    if isinstance(exc, OSError | http.client.HTTPException):
        return requests.exceptions.ConnectionError(f"{type(exc).__name__}: {exc}")
    return exc
