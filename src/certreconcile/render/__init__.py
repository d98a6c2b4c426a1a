"""Presentation of plans: text for terminals, Markdown for pull requests, JSON for machines.

Render only formats; it imports nothing but ``certreconcile.plan`` and the standard library.
"""

from __future__ import annotations

from .comment import render_pr_comments
from .json import render_json
from .markdown import DEFAULT_LIMIT, escape_markdown, render_markdown
from .text import EMPTY_PLAN_LINE, HEADER_LINE, render_text, summary_line

__all__ = [
    "DEFAULT_LIMIT",
    "EMPTY_PLAN_LINE",
    "HEADER_LINE",
    "escape_markdown",
    "render_json",
    "render_markdown",
    "render_pr_comments",
    "render_text",
    "summary_line",
]
