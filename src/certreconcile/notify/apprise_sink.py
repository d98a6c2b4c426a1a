"""The ``apprise`` sink: chat and push services through Apprise (the optional extra ``certreconcile[apprise]``).

The URLs come from the environment (they carry tokens): never logged, never in an error (a URL is named
by its position). Apprise's own log and urllib3's are silenced while it sends, as they may print them.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime

from certreconcile.desired.notify_sinks import AppriseSinkConfig
from certreconcile.errors import NotifyError
from certreconcile.notify.message import Message
from certreconcile.notify.senders import env_value

__all__ = ["AppriseSender"]


_QUIET_LOCK = threading.Lock()
_QUIETED: dict[str, tuple[int, int, bool]] = {}  # logger name -> (senders inside, its level, its propagate)


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Silence the logger ``name`` (and its children) while any thread is inside.

    Loggers are process-wide and sinks send from several threads (replicas, the outbox): the first
    thread in saves the logger's settings and the last one out restores them, so one sender leaving
    never lets another's lines (and their URLs) through, nor leaves the logger silenced for good.
    """
    logger = logging.getLogger(name)
    with _QUIET_LOCK:
        inside, level, propagate = _QUIETED.get(name, (0, logger.level, logger.propagate))
        _QUIETED[name] = (inside + 1, level, propagate)
        if inside == 0:
            logger.setLevel(logging.CRITICAL + 1)
            logger.propagate = False
    try:
        yield
    finally:
        with _QUIET_LOCK:
            inside, level, propagate = _QUIETED.pop(name)
            if inside > 1:
                _QUIETED[name] = (inside - 1, level, propagate)
            else:
                logger.setLevel(level)
                logger.propagate = propagate


class AppriseSender:
    def __init__(self, sink: str, config: AppriseSinkConfig, environ: Mapping[str, str]) -> None:
        self.sink, self.config, self.environ = sink, config, environ

    def send(self, message: Message, now: datetime) -> None:
        try:
            import apprise
        except ImportError:
            raise NotifyError(
                f"notify sink {self.sink}: the apprise sink needs the Apprise library",
                code="notify-apprise-missing",
                hint="pip install 'certreconcile[apprise]'",
            ) from None
        text = env_value(self.sink, self.config.urls_env, self.environ, "Apprise URLs")
        urls = [url for url in re.split(r"[\s,]+", text) if url]
        with _quiet("apprise"), _quiet("urllib3"):  # urllib3's debug lines name each request's path
            notifier = apprise.Apprise()
            for index, url in enumerate(urls, start=1):
                if not notifier.add(url):
                    raise NotifyError(
                        f"notify sink {self.sink}: Apprise does not recognise URL #{index} of {self.config.urls_env}",
                        code="notify-apprise-failed",
                        hint="check the URL's scheme against Apprise's list of services",
                    )
            sent = notifier.notify(title=message.subject, body=message.text)
        if not sent:
            raise NotifyError(
                f"notify sink {self.sink}: Apprise could not deliver to every URL of {self.config.urls_env}",
                code="notify-apprise-failed",
                hint="is the service up and the token valid? the notification is retried",
            )
