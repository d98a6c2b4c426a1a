"""The ``email`` sink: one plain-text message through SMTP (STARTTLS when declared, login from the environment)."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from certreconcile.desired.notify_sinks import EmailSinkConfig
from certreconcile.errors import NotifyError
from certreconcile.notify.message import Message
from certreconcile.notify.senders import env_value

__all__ = ["EmailSender"]


class EmailSender:
    def __init__(self, sink: str, config: EmailSinkConfig, environ: Mapping[str, str]) -> None:
        self.sink, self.config, self.environ = sink, config, environ

    def _credentials(self) -> tuple[str, str] | None:
        config = self.config
        if config.username_env is None:
            return None
        user = env_value(self.sink, config.username_env, self.environ, "SMTP user name")
        password = ""
        if config.password_env is not None:
            password = env_value(self.sink, config.password_env, self.environ, "SMTP password")
        return user, password

    def _email(self, message: Message, now: datetime) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self.config.sender
        email["To"] = ", ".join(self.config.to)
        email["Subject"] = message.subject
        email["Date"] = format_datetime(now)
        email["Message-ID"] = make_msgid(idstring=message.id, domain="certreconcile")
        email["X-Certreconcile-Event"] = message.type
        email.set_content(message.text)
        return email

    def send(self, message: Message, now: datetime) -> None:
        config = self.config
        credentials = self._credentials()  # before connecting: an unset variable is reported as such
        where = f"{config.host}:{config.port}"
        try:
            with smtplib.SMTP(config.host, config.port, timeout=config.timeout.delta.total_seconds()) as smtp:
                if config.starttls:
                    smtp.ehlo()
                    if not smtp.has_extn("starttls"):
                        raise NotifyError(
                            f"notify sink {self.sink}: the SMTP server {where} does not offer STARTTLS",
                            code="notify-smtp-failed",
                            hint="use the server's submission port (587), or set starttls: false for a local relay",
                        )
                    smtp.starttls(context=ssl.create_default_context())
                if credentials is not None:
                    smtp.login(*credentials)
                smtp.send_message(self._email(message, now))
        except smtplib.SMTPException as exc:
            code = getattr(exc, "smtp_code", None)
            detail = f"{type(exc).__name__}" + (f" {code}" if code else "")
            raise NotifyError(f"notify sink {self.sink}: sending through {where} failed ({detail})",
                              code="notify-smtp-failed", hint="check the server, the login and the addresses; "
                              "the notification is retried") from None  # fmt: skip
        except (OSError, ssl.SSLError) as exc:
            raise NotifyError(f"notify sink {self.sink}: cannot reach the SMTP server {where} ({type(exc).__name__})",
                              code="notify-smtp-failed", hint="is the server up? the notification is retried"
                              ) from None  # fmt: skip
