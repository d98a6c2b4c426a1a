"""The applier-agent wire contract: JSON over HTTPS with mutual TLS, versioned paths.

Every request is a ``POST`` of one JSON object to ``/v1/<operation>``. Both sides authenticate
with certificates from the fleet CA; the applier's carries the URI SAN :data:`APPLIER_URI`, an
agent's :func:`agent_uri`. Each body carries ``timestamp`` and ``nonce``: an agent refuses a
request whose timestamp is farther than its window from its own clock (either way) and a nonce
it has already seen within that window.

Errors are answered with an HTTP status >= 400 and an :class:`ErrorBody`. Nothing here is a
secret except :attr:`DeployRequest.key_pem`, which must never reach a log, a repr or an error.
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from certreconcile.domain.names import CERT_NAME_PATTERN

__all__ = [
    "AGENT_URI_PREFIX",
    "API_VERSION",
    "APPLIER_URI",
    "DEFAULT_AGENT_CERT_LIFETIME",
    "DEFAULT_REQUEST_WINDOW",
    "MAX_BODY_BYTES",
    "NONCE_PATTERN",
    "OPERATIONS",
    "AgentName",
    "CertificateRequest",
    "CertificateResponse",
    "CsrRequest",
    "CsrResponse",
    "DeployRequest",
    "DeployResponse",
    "ErrorBody",
    "ErrorDetail",
    "HelloRequest",
    "HelloResponse",
    "ObserveRequest",
    "ObserveResponse",
    "RequestBase",
    "agent_name_from_uri",
    "agent_uri",
    "encode_request",
    "new_nonce",
    "path_for",
]

API_VERSION = "v1"
APPLIER_URI = "spiffe://certreconcile/applier"
AGENT_URI_PREFIX = "spiffe://certreconcile/agent/"
#: How far a request's timestamp may be from the agent's clock, either way, unless configured.
DEFAULT_REQUEST_WINDOW = timedelta(minutes=5)
#: The lifetime of an agent certificate signed by the fleet CA; renewed when a third is left.
DEFAULT_AGENT_CERT_LIFETIME = timedelta(days=30)
#: The largest request body an agent reads (a bundle is a few KiB).
MAX_BODY_BYTES = 1 << 20
NONCE_PATTERN = r"^[A-Za-z0-9_-]{22,64}$"

AgentName = Annotated[str, Field(pattern=CERT_NAME_PATTERN)]
LocalTargetName = Annotated[str, Field(pattern=CERT_NAME_PATTERN)]
CertName = Annotated[str, Field(pattern=CERT_NAME_PATTERN)]
Fingerprint = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]  # SHA-256 of the leaf's DER, lower-case hex

_AGENT_URI_RE = re.compile("^" + re.escape(AGENT_URI_PREFIX) + "(" + CERT_NAME_PATTERN[1:-1] + ")$")


def agent_uri(name: str) -> str:
    """The URI SAN of agent ``name``'s certificate."""
    return AGENT_URI_PREFIX + name


def agent_name_from_uri(uri: str) -> str | None:
    """The agent name of an agent URI SAN; None for anything else."""
    match = _AGENT_URI_RE.match(uri)
    return match.group(1) if match else None


def new_nonce() -> str:
    """A fresh request nonce: 24 random bytes, base64url (32 characters)."""
    return secrets.token_urlsafe(24)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestBase(_Model):
    """What every request carries: when it was made (UTC) and a nonce used once."""

    timestamp: datetime
    nonce: Annotated[str, Field(pattern=NONCE_PATTERN)]

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamp must carry a time zone (UTC, e.g. 2026-12-06T07:00:00Z)")
        return value.astimezone(UTC)


class DeployRequest(RequestBase):
    """Deploy one certificate into one of the agent's local targets, then verify it is served.

    Idempotent by fingerprint: when the target already serves ``fingerprint``, nothing is written.
    """

    target: LocalTargetName  # a target of the agent's own configuration; never a path
    name: CertName
    domains: tuple[str, ...] = Field(min_length=1, max_length=100)
    cert_pem: str = Field(max_length=64 * 1024)
    chain_pem: str = Field(default="", max_length=256 * 1024)
    key_pem: SecretStr = Field(max_length=64 * 1024)  # the only secret on the wire
    fingerprint: Fingerprint


class DeployResponse(_Model):
    target: str
    name: str
    fingerprint: str | None  # what the target serves after the deploy (None: nothing)
    verified: bool  # True only when ``fingerprint`` equals the requested one, proven by handshake or read-back
    changed: bool  # False: the target already served it, nothing was written
    attempts: int = 0
    error: str | None = None  # one line, never a secret


class ObserveRequest(RequestBase):
    """What a local target serves for one certificate (``plan --refresh`` and verification)."""

    target: LocalTargetName
    name: CertName
    domains: tuple[str, ...] = Field(min_length=1, max_length=100)


class ObserveResponse(_Model):
    target: str
    name: str
    fingerprint: str | None
    serial_number: str | None = None
    not_after: datetime | None = None
    error: str | None = None
    unknown: bool = False  # the local target cannot tell what it serves


class HelloRequest(RequestBase):
    """Who is there: the agent's name, version, local target names and its own certificate."""


class HelloResponse(_Model):
    name: str
    version: str
    targets: tuple[str, ...]
    cert_fingerprint: str
    cert_serial: str
    cert_not_after: datetime


class CsrRequest(RequestBase):
    """A new CSR for the agent's own certificate, signed by the key that never leaves its host."""


class CsrResponse(_Model):
    csr_pem: str


class CertificateRequest(RequestBase):
    """Install a renewed certificate for the agent's own key (from the answer to a CSR request).

    The agent checks that it is for its own key and name and chains to its fleet CA, then
    replaces its certificate file atomically and serves new connections with it.
    """

    cert_pem: str = Field(max_length=64 * 1024)
    ca_pem: str = Field(max_length=64 * 1024)  # the fleet CA certificate that signed it


class CertificateResponse(_Model):
    fingerprint: str
    serial: str
    not_after: datetime


class ErrorDetail(_Model):
    code: str  # a registered error code (certreconcile.error_codes)
    message: str  # one line, never a secret
    hint: str | None = None


class ErrorBody(_Model):
    error: ErrorDetail


Operation = Literal["hello", "deploy", "observe", "csr", "certificate"]
OPERATIONS: dict[str, tuple[type[RequestBase], type[_Model]]] = {
    "hello": (HelloRequest, HelloResponse),
    "deploy": (DeployRequest, DeployResponse),
    "observe": (ObserveRequest, ObserveResponse),
    "csr": (CsrRequest, CsrResponse),
    "certificate": (CertificateRequest, CertificateResponse),
}


def path_for(operation: Operation) -> str:
    return f"/{API_VERSION}/{operation}"


def encode_request(request: RequestBase) -> bytes:
    """The request's JSON body, with the key revealed (pydantic masks a ``SecretStr`` when dumping).

    The bytes hold the plaintext key of a deploy: write them to the TLS socket and nowhere else.
    """
    body = request.model_dump(mode="json")
    if isinstance(request, DeployRequest):
        body["key_pem"] = request.key_pem.get_secret_value()
    return json.dumps(body, separators=(",", ":")).encode()
