"""The sinks of ``notify:``: one configuration model per kind (``webhook``, ``email``, ``apprise``).

Like a plugin entry, a sink holds exactly one kind key (:class:`~certreconcile.desired.documents.SinkEntry`),
whose value is that kind's configuration. Secrets are never written here: each is named by a ``*_env``
key and read from the environment when a notification is sent (:mod:`certreconcile.notify`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from certreconcile.desired.fields import ENV_NAME_PATTERN, Duration, ParsedDuration, Wire

__all__ = [
    "SINK_KINDS",
    "AppriseSinkConfig",
    "EmailSinkConfig",
    "NotifyEventName",
    "WebhookSinkConfig",
]

#: The events a sink may ask for (desired.model.NOTIFY_EVENTS, in the same order).
NotifyEventName = Literal["issued", "renewed", "failed", "verification_failed", "expiring", "agent_unreachable"]

_URL_PATTERN = r"^https?://[^\s/?#]+[^\s]*$"
_EMAIL_PATTERN = r"^[^\s@<>]+@[^\s@<>]+$"


class WebhookSinkConfig(Wire):
    """An HTTP POST of JSON, signed per the Standard Webhooks specification."""

    url: str = Field(pattern=_URL_PATTERN)
    """Where to POST, e.g. https://hooks.example.com/certreconcile."""
    secret_env: str = Field(pattern=ENV_NAME_PATTERN)
    """The variable holding the signing secret: ``whsec_`` and base64 (24 to 64 random bytes)."""
    timeout: Duration = ParsedDuration("10s")
    """How long one delivery may take."""


class EmailSinkConfig(Wire):
    """An e-mail through an SMTP server."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, populate_by_name=True)

    host: str = Field(min_length=1, pattern=r"^[^\s]+$")
    """The SMTP server's host name or address."""
    port: int = Field(default=587, ge=1, le=65535)
    """The SMTP server's port (587: submission with STARTTLS; 25: plain relay)."""
    starttls: bool = True
    """Upgrade the connection with STARTTLS before logging in (refused if the server does not offer it)."""
    sender: str = Field(alias="from", pattern=_EMAIL_PATTERN)
    """The From address."""
    to: tuple[str, ...] = Field(min_length=1)
    """The recipients."""
    username_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)
    """The variable holding the SMTP user name; null: no login."""
    password_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)
    """The variable holding the SMTP password (with username_env)."""
    timeout: Duration = ParsedDuration("30s")
    """How long one delivery may take."""


class AppriseSinkConfig(Wire):
    """Chat and push services through Apprise (the optional extra ``certreconcile[apprise]``)."""

    urls_env: str = Field(pattern=ENV_NAME_PATTERN)
    """The variable holding the Apprise URLs (space- or comma-separated): they carry tokens."""


#: kind key → its configuration model.
SINK_KINDS: dict[str, type[Wire]] = {
    "apprise": AppriseSinkConfig,
    "email": EmailSinkConfig,
    "webhook": WebhookSinkConfig,
}
