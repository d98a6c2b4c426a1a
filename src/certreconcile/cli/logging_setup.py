"""The log output of the long-running commands (``run``, ``agent``): ``--log-level`` and ``--log-format``.

``text`` keeps the lines people read (``2026-01-01T12:00:00+0000 INFO cycle success: ...``);
``json`` writes one JSON object per line for a log pipeline (Loki, Elasticsearch, journald's
``MESSAGE``): ``timestamp`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``, ``message``,
then the fields of :data:`certreconcile.logcontext.LOG_FIELDS` that apply (``certificate``,
``serial``, ``issuer``, ``target``, ``step``...), from the enclosing
:func:`~certreconcile.logcontext.log_context` or the call's ``extra=``.

The standard library's ``logging.Formatter`` and ``json`` are enough for that: the fields are a
fixed allow-list (a field library's habit of writing every ``extra`` attribute is what we must
not have: that is how a secret reaches a log), and the runtime gains no dependency. A record
with an exception writes only the exception's type, never a traceback (frames may hold secrets).

certreconcile's loggers write at ``--log-level``; other libraries' loggers at warning and above,
in the same format, so a JSON stream stays JSON.
"""

from __future__ import annotations

import enum
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Annotated, Any, TextIO

import typer

from certreconcile.logcontext import LOG_FIELDS, current_log_fields

__all__ = [
    "JsonFormatter",
    "LogFormat",
    "LogFormatOption",
    "LogLevel",
    "LogLevelOption",
    "configure_logging",
]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"
TEXT_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


LogLevelOption = Annotated[
    LogLevel,
    typer.Option(
        "--log-level",
        envvar="CERTRECONCILE_LOG_LEVEL",
        case_sensitive=False,
        help="The least severe log lines written (to stderr).",
    ),
]
LogFormatOption = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        envvar="CERTRECONCILE_LOG_FORMAT",
        case_sensitive=False,
        help="text: lines for people; json: one JSON object per line (timestamp, level, logger, message, "
        "and certificate, serial, issuer, target, step where they apply).",
    ),
]


class _ContextFields(logging.Filter):
    """Copies the enclosing log context's fields onto the record (``extra=`` on the call wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current_log_fields().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, one line; only the allow-listed fields (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in LOG_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = str(value)
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = record.exc_info[0].__name__  # the type only: a traceback may hold secrets
        return json.dumps(line, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current ``sys.stderr`` (a test may swap it), marked as ours to be replaced on reconfiguration."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always the current sys.stderr


def _handler(fmt: LogFormat, level: int) -> logging.Handler:
    handler = _StderrHandler()
    handler.setLevel(level)
    if fmt is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT, TEXT_DATE_FORMAT))
    handler.addFilter(_ContextFields())
    return handler


def configure_logging(level: LogLevel | str = LogLevel.INFO, fmt: LogFormat | str = LogFormat.TEXT) -> None:
    """Send certreconcile's log lines at ``level`` and up, and other libraries' warnings, to stderr in ``fmt``.

    Idempotent: a second call replaces the handlers the first one installed.
    """
    level, fmt = LogLevel(str(level).lower()), LogFormat(str(fmt).lower())
    number = logging.getLevelNamesMapping()[level.value.upper()]
    ours = logging.getLogger("certreconcile")
    root = logging.getLogger()
    for logger in (ours, root):
        for old in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
            logger.removeHandler(old)
    ours.addHandler(_handler(fmt, number))
    ours.setLevel(number)
    ours.propagate = False  # our lines once, at our level; libraries' lines through the root's handler
    root.addHandler(_handler(fmt, logging.WARNING))
    if root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
