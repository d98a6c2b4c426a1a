"""The field types every wire model shares: the desired-state documents and each plugin's ``Config``.

A plugin's configuration model (in its own module, found through an entry point) builds on
:class:`Wire` and these annotated types, so its values get the same patterns, the same JSON
Schema and the same value checks (:class:`Checked`) as the built-in sections. Importing this
module is cheap: pydantic and the standard library only.
"""

from __future__ import annotations

import enum
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

from certreconcile.domain.durations import parse_duration
from certreconcile.domain.names import CERT_NAME_PATTERN

__all__ = [
    "DURATION_PATTERN",
    "ENV_NAME_PATTERN",
    "HOST_PORT_PATTERN",
    "RENEW_BEFORE_PATTERN",
    "Checked",
    "Command",
    "Duration",
    "FsPath",
    "HostPort",
    "Lifetime",
    "Name",
    "ParsedDuration",
    "TargetDir",
    "Wire",
]

# Patterns are part of the JSON Schema too; semantic limits (a zero duration, a port
# above 65535, a blank command...) are checked in checks.py, found by the Checked marker
# of each field's type, where the message can say more.
DURATION_PATTERN = r"^[0-9]+[smhdw]$"
RENEW_BEFORE_PATTERN = r"^(?:[0-9]+[smhdw]|[0-9]+(?:\.[0-9]+)?%)$"
HOST_PORT_PATTERN = r"^(?:\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):[0-9]{1,5}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


class Checked(enum.Enum):
    """Marks a field (in its ``Annotated`` type) for the value checks of :mod:`certreconcile.desired.checks`."""

    DURATION = "duration"  # above zero, at most 100 years
    LIFETIME = "lifetime"  # a certificate lifetime: a duration of at least an hour
    PATH = "path"  # a file path: no NUL
    TARGET_DIR = "target-dir"  # a directory a target writes into: a path, not shared, outside the repository
    COMMAND = "command"  # split like a shell would (no shell runs it): not blank, quotes balanced
    HOST_PORT = "host-port"  # HOST:PORT with a port from 1 to 65535 (``unix:/path`` is left alone)


class ParsedDuration(str):
    """A duration as written (``90d``), parsed once, when the model is validated.

    It stays the string it was written as (so a configuration's JSON, its fingerprint and the
    JSON Schema are unchanged); :attr:`delta` is its value. A duration the pattern accepts
    but the value checks refuse (``0s``, more than 100 years) keeps its error in :attr:`error`,
    for :mod:`certreconcile.desired.checks` to report: a model holding one never passes validation.
    """

    _delta: timedelta | None
    error: ValueError | None

    def __new__(cls, text: str) -> ParsedDuration:
        self = super().__new__(cls, text)
        try:
            self._delta, self.error = parse_duration(text), None
        except ValueError as exc:
            self._delta, self.error = None, exc
        return self

    @property
    def delta(self) -> timedelta:
        if self._delta is None:
            raise ValueError(str(self.error))
        return self._delta

    @property
    def delta_or_none(self) -> timedelta | None:
        return self._delta

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(cls, core_schema.str_schema(pattern=DURATION_PATTERN))


Name = Annotated[
    str,
    Field(pattern=CERT_NAME_PATTERN, description="1-63 lower-case letters, digits and inner hyphens"),
]
Duration = Annotated[
    ParsedDuration,
    Field(description="a whole number and a unit (s, m, h, d, w), e.g. 90d"),
    Checked.DURATION,
]
Lifetime = Annotated[
    ParsedDuration,
    Field(description="a whole number and a unit (s, m, h, d, w), e.g. 90d"),
    Checked.LIFETIME,
]
HostPort = Annotated[
    str, Field(pattern=HOST_PORT_PATTERN, description="HOST:PORT, e.g. 127.0.0.1:443"), Checked.HOST_PORT
]
FsPath = Annotated[str, Checked.PATH]
TargetDir = Annotated[str, Checked.TARGET_DIR]
Command = Annotated[str, Checked.COMMAND]


class Wire(BaseModel):
    """Base of every wire model: unknown keys are refused, values are frozen, attribute docstrings
    become the JSON Schema's descriptions."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
