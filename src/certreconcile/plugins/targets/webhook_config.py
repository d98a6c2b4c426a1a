"""The ``webhook`` target kind: its configuration and its factory.

The adapter: :mod:`certreconcile.plugins.targets.webhook`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, StrictBool, field_validator, model_validator
from pydantic_core import PydanticCustomError

from certreconcile.desired.fields import (
    ENV_NAME_PATTERN,
    Duration,
    FsPath,
    ParsedDuration,
    Wire,
)
from certreconcile.plugins.targets.verification import verification

if TYPE_CHECKING:
    from collections.abc import Iterator

    from certreconcile.desired.checks import Finding
    from certreconcile.desired.model import TargetSpec
    from certreconcile.plugins.ports import Target
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create"]

SUMMARY = 'An HTTPS receiver, sent a signed JSON body.'

_RESERVED_WEBHOOK_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection", "user-agent"}
)


class WebhookTargetConfig(Wire):
    """HTTPS POST of each certificate, its chain and its private key (JSON) to a receiver.

    The body is signed with HMAC-SHA256 (``X-Certreconcile-Signature``, over the
    ``X-Certreconcile-Timestamp`` value, a dot and the body) under the secret named by
    ``secret_env``, and/or sent with a mutual-TLS client certificate: at least one of the two.
    HTTPS only, redirects are never followed, and link-local and cloud-metadata addresses are
    refused after DNS resolution unless ``allow_link_local``. The receiver must answer 2xx with
    ``{"fingerprint": "<leaf SHA-256, hex>"}``.
    """

    url: str = Field(pattern=r"^https://[^\s/?#@]+(?:[/?#]\S*)?$")
    """The receiver's https:// URL (http:// is refused: the body holds the private key); no user:password@."""
    secret_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)
    """Name of the environment variable holding the signing secret (never the secret); null: unsigned (mTLS only)."""
    client_cert: FsPath | None = None
    """PEM file of the client certificate for mutual TLS; a relative path is relative to the desired-state directory."""
    client_key: FsPath | None = None
    """PEM file of the client certificate's private key (its path, never its content); with client_cert."""
    ca_bundle: FsPath | None = None
    """PEM file of the CAs trusted for the receiver's TLS; null: the system's trust store."""
    timeout: Duration = ParsedDuration("10s")
    """Timeout of each connect, send and read of one delivery."""
    allow_link_local: StrictBool = False
    """Allow link-local and cloud-metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254). Keep false."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers; not secret (this file is in Git): authenticate with secret_env or mTLS."""

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value)
            valid = bool(parts.hostname) and (parts.port is None or parts.port > 0)
        except ValueError:
            valid = False
        if not valid:
            raise PydanticCustomError("webhook_url", "url needs a host and a port from 1 to 65535")
        return value

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: str) -> str:
        if int(value[:-1]) == 0:
            raise PydanticCustomError("webhook_timeout", "timeout must be longer than zero")
        return value

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for header, text in value.items():
            lowered = header.lower()
            if not header or any(not (c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~")) for c in header):
                raise PydanticCustomError("webhook_header", "{header!r} is not a valid header name", {"header": header})
            if lowered in _RESERVED_WEBHOOK_HEADERS or lowered.startswith("x-certreconcile-"):
                raise PydanticCustomError(
                    "webhook_header_reserved", "the header {header} is set by certreconcile", {"header": header}
                )
            if any(c in text for c in "\r\n\0"):
                raise PydanticCustomError(
                    "webhook_header", "the value of {header} holds a line break", {"header": header}
                )
        return value

    @model_validator(mode="after")
    def _authenticated(self) -> WebhookTargetConfig:
        if (self.client_cert is None) != (self.client_key is None):
            raise PydanticCustomError("webhook_client_pair", "client_cert and client_key go together")
        if self.secret_env is None and self.client_cert is None:
            raise PydanticCustomError(
                "webhook_unauthenticated",
                "a webhook needs secret_env (a signed body) or client_cert/client_key (mutual TLS), or both",
            )
        return self

    def kind_findings(self, path: tuple[str | int, ...]) -> Iterator[Finding]:
        """Checked at validation: an address-literal host the deployment would refuse anyway."""
        from urllib.parse import urlsplit

        from certreconcile.desired.checks import Finding, format_path
        from certreconcile.domain.addresses import address_refusal, host_address, is_legacy_numeric_host

        here = (*path, "url")
        try:
            host = urlsplit(self.url).hostname or ""
        except ValueError:
            return  # reported by the schema
        if is_legacy_numeric_host(host):
            yield Finding(
                here,
                "webhook-numeric-host",
                f"{format_path(here)}: the host {host!r} is an IPv4 address in a legacy numeric form "
                "(decimal, octal or hex), which hides the address it stands for",
                "write the address as four decimal numbers (a.b.c.d), or use the receiver's DNS name",
            )
            return
        address = host_address(host)
        refusal = address_refusal(address, allow_link_local=self.allow_link_local) if address else None
        if refusal is not None:
            yield Finding(
                here,
                "webhook-address-refused",
                f"{format_path(here)}: {host} is {refusal}; the private key would be sent there",
                "point the webhook at the receiver's own address"
                + ("" if refusal == "not a unicast address" else _ALLOW_LINK_LOCAL_HINT),
            )


_ALLOW_LINK_LOCAL_HINT = " (allow_link_local: true only if it really lives there)"

Config = WebhookTargetConfig


def create(spec: TargetSpec, context: PluginContext) -> Target:
    """No I/O here: the secret is read, the host resolved and checked at each delivery."""
    from certreconcile.plugins.targets.webhook import WebhookTarget

    assert isinstance(spec.config, WebhookTargetConfig)
    return WebhookTarget(
        spec.name,
        spec.config,
        env=context.env,
        base_dir=context.desired_dir,
        timeout=spec.config.timeout.delta,
        **verification(spec),
    )
