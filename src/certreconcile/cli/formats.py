"""The one ``--format`` vocabulary of every command: ``text`` or ``json`` (``plan`` and ``show`` add ``markdown``).

An enum, so that click checks the value: ``--format yaml`` is a usage error that lists the choices.
"""

from __future__ import annotations

import enum
from typing import Annotated

import typer

__all__ = ["FormatOption", "OutputFormat", "PlanFormat", "PlanFormatOption"]


class OutputFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


class PlanFormat(enum.StrEnum):
    TEXT = "text"
    MARKDOWN = "markdown"
    JSON = "json"


FormatOption = Annotated[
    OutputFormat, typer.Option("--format", case_sensitive=False, help="Output: text, or json (one JSON document).")
]
PlanFormatOption = Annotated[
    PlanFormat, typer.Option("--format", case_sensitive=False, help="Output: text, markdown (a PR comment) or json.")
]
