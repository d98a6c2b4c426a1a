"""One thread's keep-alive HTTP/1.1 connections to a CA, straight over ``http.client``.

The signed ACME requests of :class:`~certreconcile.plugins.issuers.acme.client.DirectClientNetwork`
go through here: one connection per CA host, reused while the CA keeps it open, TLS verified
against the bundle (or certifi's, as requests does). No redirects, no retries (the callers
decide: a request that creates something is never sent twice). urllib3's pool manager did the
same with several layers more per request (URL parsing, pool lookup, timeout objects, header
dictionaries, a response wrapper), which cost about as much CPU as the request itself.

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


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection the server has closed (or written to): readable before we ask."""
    sock = connection.sock
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class KeepAliveTransport:
    """Used by one thread at a time (as the network objects built on it are)."""

    def __init__(self, verify: str | bool) -> None:
        self._context = _context(verify)
        self._connections: dict[tuple[str, str, int], http.client.HTTPConnection] = {}

    def _connection(self, scheme: str, host: str, port: int, timeout: float) -> http.client.HTTPConnection:
        key = (scheme, host, port)
        connection = self._connections.get(key)
        if connection is not None and _closed_by_peer(connection):
            connection.close()
            connection = None
        if connection is None:
            if scheme == "https":
                connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._context)
            else:
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
            self._connections[key] = connection
        elif connection.timeout != timeout and connection.sock is not None:
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
        connection = self._connection(scheme, parts.hostname, port, timeout)
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            content = response.read()
        except BaseException as exc:
            connection.close()
            self._connections.pop(key, None)
            if isinstance(exc, Exception):
                raise _as_requests_error(exc) from exc
            raise
        if response.will_close:
            connection.close()
            self._connections.pop(key, None)
        return Answer(response.status, response.reason or "", response.getheaders(), content)

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
