"""The metric names a PromQL expression reads (for the alert rules' and the dashboard's tests).

Not a PromQL parser: it removes what is not a metric name (strings, label matchers, ranges,
grouping clauses, numbers, Grafana variables), then every identifier left that is not a function
(followed by ``(``) or a keyword is a metric name. ``promtool`` checks the syntax itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["HISTOGRAM_SUFFIXES", "exported", "metric_names"]

HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
_BINARY = frozenset({"and", "or", "unless", "bool", "offset", "atan2"})
_GROUPING_WORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = _BINARY | _GROUPING_WORDS | {"inf", "nan", "start", "end"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables ($__rate_interval, ${instance})
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name in _KEYWORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def exported(name: str, families: Iterable[str]) -> bool:
    """Whether ``name`` is a series of one of ``families`` (a histogram's ``_bucket``, ``_count``, ``_sum`` too)."""
    known = set(families)
    return name in known or any(name.endswith(s) and name.removesuffix(s) in known for s in HISTOGRAM_SUFFIXES)
