"""Send one message to one sink: the kinds ``webhook``, ``email`` and ``apprise``.

Each sender reads its secrets from the environment when it sends (never earlier, never stored), and
raises :class:`~certreconcile.errors.NotifyError` with a one-line message that names the sink and what
failed (a status, an exception's type), never a secret, a URL's credentials or query, or a body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit

from certreconcile.desired.model import NotifySinkSpec
from certreconcile.desired.notify_sinks import AppriseSinkConfig, EmailSinkConfig, WebhookSinkConfig
from certreconcile.errors import NotifyError
from certreconcile.notify.message import Message

__all__ = ["Sender", "sender_for", "sign", "webhook_secret"]

SECRET_PREFIX = "whsec_"  # noqa: S105  the prefix of every Standard Webhooks secret, not a secret


class Sender(Protocol):
    def send(self, message: Message, now: datetime) -> None:
        """Deliver ``message`` (``now``: the webhook-timestamp); raises NotifyError."""
        ...


def env_value(sink: str, variable: str, environ: Mapping[str, str], what: str) -> str:
    value = environ.get(variable, "").strip()
    if not value:
        raise NotifyError(
            f"notify sink {sink}: the environment variable {variable} ({what}) is not set",
            code="notify-env-unset",
            hint=f"export {variable} where run and apply run; the notification is retried",
        )
    return value


def webhook_secret(sink: str, text: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: ``whsec_`` then base64."""
    if text.startswith(SECRET_PREFIX):
        try:
            key = base64.b64decode(text.removeprefix(SECRET_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) >= 16:
            return key
    raise NotifyError(
        f"notify sink {sink}: the webhook secret is not whsec_ followed by base64 of at least 16 bytes",
        code="notify-secret-invalid",
        hint="make one: python -c 'import base64,os; print(\"whsec_\" + base64.b64encode(os.urandom(32)).decode())'",
    )


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` and base64(HMAC-SHA256(key, "id.timestamp.body"))."""
    content = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment: what errors and logs may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path or '/'}"


class WebhookSender:
    def __init__(self, sink: str, config: WebhookSinkConfig, environ: Mapping[str, str]) -> None:
        self.sink, self.config, self.environ = sink, config, environ

    def send(self, message: Message, now: datetime) -> None:
        import httpx

        key = webhook_secret(self.sink, env_value(self.sink, self.config.secret_env, self.environ, "webhook secret"))
        timestamp = int(now.timestamp())
        headers = {
            "content-type": "application/json",
            "user-agent": "certreconcile",
            "webhook-id": message.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, message.id, timestamp, message.body),
        }
        where = public_url(self.config.url)
        try:
            response = httpx.post(
                self.config.url, content=message.body, headers=headers,
                timeout=self.config.timeout.delta.total_seconds(), follow_redirects=False,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            raise NotifyError(f"notify sink {self.sink}: POST {where} failed ({type(exc).__name__})",
                              hint="is the receiver up? the notification is retried") from None  # fmt: skip
        if not 200 <= response.status_code < 300:
            raise NotifyError(f"notify sink {self.sink}: POST {where} answered HTTP {response.status_code}",
                              hint="the receiver must answer 2xx; the notification is retried")  # fmt: skip


def _sender(config: object, sink: str, environ: Mapping[str, str]) -> Sender:
    if isinstance(config, WebhookSinkConfig):
        return WebhookSender(sink, config, environ)
    if isinstance(config, EmailSinkConfig):
        from certreconcile.notify.email import EmailSender

        return EmailSender(sink, config, environ)
    if isinstance(config, AppriseSinkConfig):
        from certreconcile.notify.apprise_sink import AppriseSender

        return AppriseSender(sink, config, environ)
    raise NotifyError(f"notify sink {sink}: unknown kind", hint="use webhook, email or apprise")


def sender_for(spec: NotifySinkSpec, environ: Mapping[str, str]) -> Sender:
    """The sender of a declared sink."""
    return _sender(spec.config, spec.name, environ)


SenderFactory = Callable[[NotifySinkSpec, Mapping[str, str]], Sender]
