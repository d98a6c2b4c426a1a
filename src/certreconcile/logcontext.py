"""The structured fields of a log line: which certificate, serial, issuer, target and step it is about.

A change sets them once (:func:`log_context`) and every line logged inside (the runner's steps,
the ACME client's retries, a reconnect) carries them, in whatever thread the context was copied
to. ``extra={...}`` on one call adds or overrides fields for that line. Only :data:`LOG_FIELDS`
are ever written by the formatters (``cli/logging_setup.py``): never a free-form attribute, so
never a secret by accident. Values are short identifiers (names, serial numbers, step words).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import ParamSpec, TypeVar

__all__ = ["LOG_FIELDS", "current_log_fields", "in_log_context", "log_context"]

#: The structured fields a log line may carry, in output order.
LOG_FIELDS = ("certificate", "serial", "issuer", "target", "step", "outcome", "actor", "code")

_NONE: Mapping[str, str] = MappingProxyType({})
_FIELDS: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("certreconcile_log_fields", default=_NONE)

_P = ParamSpec("_P")
_T = TypeVar("_T")


def current_log_fields() -> Mapping[str, str]:
    """The fields set by the enclosing :func:`log_context` blocks of this context."""
    return _FIELDS.get()


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add ``fields`` (a None value is left out) to every line logged inside the block."""
    unknown = set(fields) - set(LOG_FIELDS)
    if unknown:
        raise ValueError(f"not a log field: {', '.join(sorted(unknown))}")
    merged = {**_FIELDS.get(), **{key: value for key, value in fields.items() if value is not None}}
    token = _FIELDS.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _FIELDS.reset(token)


def in_log_context(function: Callable[_P, _T]) -> Callable[_P, _T]:
    """``function`` bound to the caller's log fields, for a thread pool (threads do not inherit them)."""
    context = contextvars.copy_context()

    def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        return context.copy().run(function, *args, **kwargs)

    return run
