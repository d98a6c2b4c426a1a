"""The applier's client of one agent: JSON over HTTPS with mutual TLS (stdlib ``http.client`` and ``ssl``).

Trust: the fleet CA's certificate only. The agent is named by its certificate's URI SAN, not by
its host name: after the handshake the client requires exactly ``agent_uri(name)`` and refuses
anything else (``agent-identity-mismatch``). Every request gets a fresh timestamp (the injected
clock) and nonce. A refused connection, a timeout or a failed handshake is ``agent-unreachable``;
an answer with an HTTP status >= 400 is a :class:`~certreconcile.errors.TargetError` with the
agent's own code and message. Messages are one line and never hold a secret.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from certreconcile.clock import Clock
from certreconcile.error_codes import is_registered
from certreconcile.errors import CertReconcileError, TargetError
from certreconcile.fleet.protocol import (
    MAX_BODY_BYTES,
    OPERATIONS,
    ErrorBody,
    Operation,
    agent_uri,
    encode_request,
    new_nonce,
    path_for,
)

__all__ = ["AgentClient", "AgentUnreachable", "Contact", "ContactLog"]

_R = TypeVar("_R", bound=BaseModel)


class AgentUnreachable(TargetError):
    """The agent did not answer: refused, timed out, or the TLS handshake failed."""


@dataclass(frozen=True, slots=True)
class Contact:
    last_seen_at: datetime | None  # the last time the agent answered
    last_error: str | None  # why the latest contact failed (None: it answered)
    error_at: datetime | None = None


class ContactLog:
    """When each agent last answered, and why the latest contact failed: shared by a process's clients."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._contacts: dict[str, Contact] = {}

    def answered(self, agent: str, at: datetime) -> None:
        with self._lock:
            old = self._contacts.get(agent, Contact(None, None))
            seen = at if old.last_seen_at is None else max(old.last_seen_at, at)
            failed_after = old.error_at is not None and old.error_at > at
            self._contacts[agent] = Contact(seen, old.last_error if failed_after else None,
                                            old.error_at if failed_after else None)  # fmt: skip

    def failed(self, agent: str, at: datetime, error: str) -> None:
        with self._lock:
            old = self._contacts.get(agent, Contact(None, None))
            if old.last_seen_at is None or old.last_seen_at <= at:
                self._contacts[agent] = Contact(old.last_seen_at, error, at)

    def snapshot(self) -> Mapping[str, Contact]:
        with self._lock:
            return dict(self._contacts)


def _where(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise CertReconcileError(f"agent URL {url!r} is not https://HOST:PORT", code="config-invalid",
                                 hint="declare the agent's url as https://HOST:PORT")  # fmt: skip
    port = parts.port or 443
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return parts.hostname, port, f"https://{host}:{port}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS handshake failed: {exc.verify_message or 'certificate verify failed'}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or type(exc).__name__}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


class AgentClient:
    """Requests to one agent. Thread-safe: one connection per request."""

    def __init__(
        self,
        name: str,
        url: str,
        timeout: timedelta,
        context: Callable[[], ssl.SSLContext],
        clock: Clock,
        contacts: ContactLog | None = None,
    ) -> None:
        self.name = name
        self._host, self._port, self.url = _where(url)
        self._timeout = timeout.total_seconds()
        self._context = context
        self._clock = clock
        self.contacts = contacts if contacts is not None else ContactLog()

    def __repr__(self) -> str:
        return f"AgentClient({self.name}, {self.url})"

    def call(self, operation: Operation, **fields: Any) -> BaseModel:
        """Send one request of ``operation`` and return its parsed answer."""
        request_type, _response_type = OPERATIONS[operation]
        request = request_type(timestamp=self._clock.now(), nonce=new_nonce(), **fields)
        body = encode_request(request)
        try:
            status, data = self._exchange(operation, body)
        except AgentUnreachable as exc:
            self.contacts.failed(self.name, self._clock.now(), exc.one_line())
            raise
        finally:
            del body
        self.contacts.answered(self.name, self._clock.now())
        return self._parse(operation, status, data)

    def typed(self, operation: Operation, response_type: type[_R], **fields: Any) -> _R:
        answer = self.call(operation, **fields)
        assert isinstance(answer, response_type)
        return answer

    def _unreachable(self, reason: str) -> AgentUnreachable:
        return AgentUnreachable(
            f"agent {self.name} at {self.url} did not answer: {reason}",
            code="agent-unreachable",
            hint="check that the agent runs and that the applier reaches it; the change stays open until it answers",
        )

    def _exchange(self, operation: Operation, body: bytes) -> tuple[int, bytes]:
        try:
            context = self._context()
        except CertReconcileError as exc:  # no fleet CA, no KMS: nothing can be asked
            raise self._unreachable(f"no applier identity ({exc.code}: {exc.message})") from exc
        connection = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=context)
        try:
            try:
                connection.connect()
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(_reason(exc)) from None
            self._check_peer(connection)
            try:
                connection.request("POST", path_for(operation), body=body,
                                   headers={"Content-Type": "application/json", "Accept": "application/json"})
                response = connection.getresponse()
                data = response.read(MAX_BODY_BYTES + 1)
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(_reason(exc)) from None
            return response.status, data
        finally:
            connection.close()

    def _check_peer(self, connection: http.client.HTTPSConnection) -> None:
        sock = connection.sock
        peer = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
        sans: Any = (peer or {}).get("subjectAltName", ())
        uris = sorted(str(value) for kind, value in sans if kind == "URI")
        if uris != [agent_uri(self.name)]:
            error = TargetError(
                f"the server at {self.url} is not agent {self.name}: its certificate names "
                f"{', '.join(uris) or 'no agent'}",
                code="agent-identity-mismatch",
                hint="check the agent's url in `agents:`; each agent serves the certificate enrolled for its name",
            )
            self.contacts.failed(self.name, self._clock.now(), error.one_line())
            raise error

    def _parse(self, operation: Operation, status: int, data: bytes) -> BaseModel:
        _request_type, response_type = OPERATIONS[operation]
        if len(data) > MAX_BODY_BYTES:
            raise self._invalid(f"its answer is larger than {MAX_BODY_BYTES} bytes")
        try:
            if status >= 400:
                detail = ErrorBody.model_validate(json.loads(data)).error
            else:
                return response_type.model_validate(json.loads(data))
        except (ValueError, ValidationError):
            raise self._invalid(f"its answer to {operation} (HTTP {status}) is not the protocol's") from None
        code = detail.code if is_registered(detail.code) else "agent-error"
        message = detail.message.splitlines()[0] if detail.message else "no message"
        suffix = f" ({detail.code})" if code != detail.code else ""
        return _raise(TargetError(f"agent {self.name} refused {operation}: {message}{suffix}", code=code,
                                  hint=detail.hint or ""))  # fmt: skip

    def _invalid(self, why: str) -> TargetError:
        return TargetError(f"agent {self.name} at {self.url}: {why}", code="agent-response-invalid",
                           hint="run the same certreconcile version on the agent and the applier")  # fmt: skip


def _raise(error: CertReconcileError) -> BaseModel:
    raise error
