"""Bounds on what one desired-state file may make the parsers build, with positions.

* **Nesting.** A desired-state file nests a few levels (``targets.web.webhook.headers``);
  ``yaml_rs`` bounds flow nesting but not block nesting, and the PyYAML composer that
  finds positions recurses once per level, so 10,000 nested ``- - -`` would end in a
  ``RecursionError``. Data nested deeper than :data:`MAX_DEPTH` is refused at the first
  collection too deep, found by libyaml's event parser (iterative).
* **Tags.** Only the YAML 1.2 core schema's tags (``!!str``, ``!!int``...) may be written:
  ``yaml_rs`` ignores any other tag and reads the plain value, so ``!!binary``, ``!!set``,
  ``!env X`` or ``!!python/object`` would mean something else than they say. Nothing is
  ever constructed from a tag; they are refused at their position.
* **Aliases.** ``yaml_rs`` stops replaying aliases after a million nodes or 64 nested
  replays, without a position. The event stream is replayed by size to name the alias
  that crosses the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["MAX_DEPTH", "LimitProblem", "alias_excess", "data_too_deep", "depth_excess", "forbidden_tag"]

MAX_DEPTH = 64  # collections inside collections; the desired-state schema needs about 8
MAX_ALIAS_NODES = 1_000_000  # yaml_rs's replay limit
MAX_ALIAS_NESTING = 64  # yaml_rs's replay stack depth
_CORE_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")
)


@dataclass(frozen=True, slots=True)
class LimitProblem:
    message: str
    line: int
    column: int


def _loader() -> type[yaml.SafeLoader]:
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _at(event: yaml.Event) -> tuple[int, int]:
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def data_too_deep(data: object) -> bool:
    """Does ``data`` (plain lists and dicts) nest deeper than :data:`MAX_DEPTH`? Iterative and bounded.

    Level by level (the root collection is level 1): one pass over each level's children, without
    a list or a tuple per node (at 100,000 certificates this walk took ~0.5 s; now ~0.1 s).
    """
    collections = (dict, list, tuple)
    level: list[Any] = [data] if isinstance(data, collections) else []
    depth = 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            return True
        below: list[Any] = []
        add = below.append
        for node in level:
            for child in node.values() if isinstance(node, dict) else node:
                if isinstance(child, collections):
                    add(child)
        level = below
    return False


def depth_excess(text: str) -> LimitProblem | None:
    """The first collection nested deeper than :data:`MAX_DEPTH`, by libyaml's events."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_loader()):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    line, column = _at(event)
                    return LimitProblem(f"collections nested more than {MAX_DEPTH} levels deep", line, column)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return None
    return None


def forbidden_tag(text: str) -> LimitProblem | None:
    """The first explicit tag outside the YAML 1.2 core schema; None when there is none (or no "!")."""
    if "!" not in text:
        return None
    try:
        for event in yaml.parse(text, Loader=_loader()):
            tag = getattr(event, "tag", None)
            if tag is not None and tag not in _CORE_TAGS and tag != "!":
                line, column = _at(event)
                return LimitProblem(f"the tag {tag!r} is not allowed: nothing is constructed from tags", line, column)
    except yaml.YAMLError:
        return None
    return None


@dataclass(slots=True)
class _Node:
    anchor: str | None
    size: int = 2  # events replayed: a collection's start and end, and what is inside
    nesting: int = 0  # nested alias replays inside


def alias_excess(text: str) -> LimitProblem | None:
    """The alias whose replay makes the document exceed ``yaml_rs``'s alias limits (else the biggest one)."""
    sizes: dict[str, tuple[int, int]] = {}
    stack: list[_Node] = [_Node(None)]
    total, biggest, worst = 0, -1, None
    try:
        for event in yaml.parse(text, Loader=_loader()):
            if isinstance(event, yaml.AliasEvent):
                size, nesting = sizes.get(event.anchor or "", (1, 0))
                stack[-1].size += size
                stack[-1].nesting = max(stack[-1].nesting, nesting + 1)
                total += size
                if total > MAX_ALIAS_NODES or nesting + 1 > MAX_ALIAS_NESTING:
                    return _alias_problem(event)
                if size > biggest:
                    biggest, worst = size, event
            elif isinstance(event, yaml.CollectionStartEvent):
                stack.append(_Node(event.anchor))
                total += 2
            elif isinstance(event, yaml.ScalarEvent):
                stack[-1].size += 1
                total += 1
                if event.anchor:
                    sizes[event.anchor] = (1, 0)
            elif isinstance(event, yaml.CollectionEndEvent) and len(stack) > 1:
                done = stack.pop()
                stack[-1].size += done.size
                stack[-1].nesting = max(stack[-1].nesting, done.nesting)
                if done.anchor:
                    sizes[done.anchor] = (done.size, done.nesting)
    except yaml.YAMLError:
        return None
    return _alias_problem(worst) if worst is not None else None


def _alias_problem(event: yaml.AliasEvent) -> LimitProblem:
    line, column = _at(event)
    return LimitProblem(
        f"the alias *{event.anchor} expands the document past {MAX_ALIAS_NODES:,} nodes "
        f"or {MAX_ALIAS_NESTING} nested aliases (an alias bomb)",
        line,
        column,
    )
