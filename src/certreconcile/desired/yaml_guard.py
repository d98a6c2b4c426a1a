"""Guards between a desired-state file's text and the two YAML parsers that read it.

``yaml_rs`` (YAML 1.2, fast) gives the data; PyYAML (YAML 1.1) gives positions for
messages. A declaration must never vanish because a parser reads the text otherwise:
an earlier version lost everything after a NUL byte (``yaml_rs`` stopped there,
validation passed, and ``apply`` retired the certificates declared after it). So:

1. **Characters.** Only YAML 1.2's printable characters, less those the two YAML
   versions read differently: NEL (U+0085) and the Unicode line and paragraph separators
   (U+2028, U+2029) are line breaks in YAML 1.1 only, and a byte-order mark (U+FEFF)
   counts only at the very start (the reader drops it there). Nor the bidirectional
   embedding, override and isolate controls (U+202A-U+202E, U+2066-U+2069): they make a
   reviewer see text in another order than the parser reads it ("Trojan Source"). Any
   other character is an error at its ``line:column``.
2. **Structure.** The top level ``yaml_rs`` returned (each key, and the number of
   entries of each collection under it) must equal what an independent reader sees.
   That reader is a line scan of plain block style (the usual style, a few ms for
   10,000 certificates); when the scan cannot tell (flow style, anchors, tags, document
   markers, quoted keys) or disagrees, libyaml's event parser (PyYAML's C parser, no
   code shared with ``yaml_rs``) decides. A disagreement is an error, never a guess.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import yaml

__all__ = ["CharacterProblem", "Outline", "OutlineMismatch", "check_outline", "forbidden_characters"]

# YAML 1.2 c-printable, less NEL, U+2028/U+2029, the bidirectional controls and U+FEFF (see above).
_FORBIDDEN = re.compile(
    "[^\t\n\r\x20-\x7e\xa0-\u2027\u202f-\u2065\u206a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
# The ASCII characters _FORBIDDEN allows (a text of these only holds no forbidden character).
_ASCII_ALLOWED = bytes([0x09, 0x0A, 0x0D, *range(0x20, 0x7F)])
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMES = {"\x00": "NUL", "\ufeff": "byte-order mark (U+FEFF)", "\x85": "NEL (U+0085)", "\x7f": "DEL"}
_MAX_REPORTED = 5


@dataclass(frozen=True, slots=True)
class CharacterProblem:
    character: str
    line: int  # 1-based
    column: int  # 1-based, in characters

    @property
    def description(self) -> str:
        known = _NAMES.get(self.character)
        if known is not None:
            return known
        return f"U+{ord(self.character):04X} {unicodedata.name(self.character, 'control character')}"


def forbidden_characters(text: str) -> list[CharacterProblem]:
    """The first few characters YAML (or one of our two parsers) would not read as written."""
    if text.isascii() and not text.encode("ascii").translate(None, _ASCII_ALLOWED):
        return []  # every character allowed: the same answer as the search below, in a fifth of the time
    problems: list[CharacterProblem] = []
    for match in _FORBIDDEN.finditer(text):
        offset = match.start()
        line_start = text.rfind("\n", 0, offset) + 1
        problems.append(CharacterProblem(match.group(), text.count("\n", 0, offset) + 1, offset - line_start + 1))
        if len(problems) == _MAX_REPORTED:
            break
    return problems


# ---------------------------------------------------------------- structure

# key -> number of entries of the collection under it; None for a scalar or null.
Outline = dict[str, int | None]


@dataclass(frozen=True, slots=True)
class OutlineMismatch:
    message: str
    line: int
    column: int


def data_outline(data: object) -> Outline | None:
    """The outline of ``yaml_rs``'s result; None when the top level is not a mapping."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        return None
    return {str(key): len(value) if isinstance(value, dict | list) else None for key, value in data.items()}


# Every pattern starts with a newline, which ``re`` finds at C speed; a body (the text
# under a top-level key) starts with the newline that ends the key's line.
_TOP_LINE = re.compile(r"\n(?![ \t\r\n#]|-(?:[ \t\r\n]|$))[^\n]+")  # at column 0 and not "- "
_TOP_KEY = re.compile(r"([A-Za-z_][\w-]*)[ \t]*:(?:[ \t]+(.*))?")
_FIRST_CONTENT = re.compile(r"\n( *)([^ \r\n#])")
_TAB_INDENT = re.compile(r"\n *\t")
_UNSCANNED_VALUE = frozenset("[{&*!'\"?@`%")


def _count_entries(body: str) -> int | None:
    """Entries of the block collection in ``body``; None unless every line at its indent is one."""
    first = _FIRST_CONTENT.search(body)
    if first is None:
        return 0
    indent, sequence = first.group(1), first.group(2) == "-"
    if indent and re.search(rf"\n {{0,{len(indent) - 1}}}[^ \r\n#]", body):
        return None  # a line less indented than the first entry
    lines = len(re.findall(rf"\n{indent}[^ \r\n#]", body))
    entry = rf"\n{indent}-(?=[ \t\r\n]|$)" if sequence else rf"\n{indent}[A-Za-z0-9_][\w.-]*[ \t]*:(?=[ \t\r\n]|$)"
    entries = len(re.findall(entry, body))
    return entries if entries == lines else None


def _line_outline(text: str) -> Outline | None:
    """The outline of plain block-style YAML, read by line patterns; None when it cannot tell."""
    text = "\n" + text
    if "\t" in text and _TAB_INDENT.search(text):
        return None
    outline: Outline = {}
    tops = list(_TOP_LINE.finditer(text))
    for index, top in enumerate(tops):
        match = _TOP_KEY.fullmatch(top.group()[1:].rstrip("\r"))
        if match is None or match.group(1) in outline:
            return None
        value = (match.group(2) or "").strip()
        body = text[top.end() : tops[index + 1].start() if index + 1 < len(tops) else len(text)]
        if value and not value.startswith("#"):
            if value[0] in _UNSCANNED_VALUE or (value[0] not in "|>" and _FIRST_CONTENT.search(body)):
                return None  # flow style, anchors, tags, quotes, or a scalar over several lines
            outline[match.group(1)] = None
            continue
        count = _count_entries(body)
        if count is None:
            return None
        outline[match.group(1)] = count
    if len(tops) != len(re.findall(r"\n[^ \t\r\n#-]", text)) + len(re.findall(r"\n-[^ \t\r\n]", text)):
        return None  # a line at column 0 that is neither a key nor an entry ("-x", "---"...)
    return outline


@dataclass(slots=True)
class _Open:
    """A collection the event stream is inside of."""

    mapping: bool
    anchor: str | None
    nodes: int = 0

    @property
    def entries(self) -> int:
        return self.nodes // 2 if self.mapping else self.nodes


def _event_outline(text: str) -> tuple[Outline | None, dict[str, tuple[int, int]], int]:
    """libyaml's outline (None when the top level is not a mapping), each key's position, the documents."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    outline: Outline = {}
    positions: dict[str, tuple[int, int]] = {}
    anchors: dict[str, int | None] = {}  # entries of each anchored node, for aliases at the top level
    stack: list[_Open] = []
    documents, key, top_is_mapping = 0, "", False
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
        if isinstance(event, yaml.CollectionEndEvent):
            done = stack.pop()
            if done.anchor is not None:
                anchors[done.anchor] = done.entries
            if len(stack) == 1 and top_is_mapping:
                outline[key] = done.entries
            continue
        if not isinstance(event, yaml.CollectionStartEvent | yaml.ScalarEvent | yaml.AliasEvent):
            continue
        if not stack:
            top_is_mapping = isinstance(event, yaml.MappingStartEvent)
        else:
            parent = stack[-1]
            if len(stack) == 1 and top_is_mapping and parent.nodes % 2 == 0:  # a top-level key
                key = str(getattr(event, "value", ""))
                mark = event.start_mark
                positions[key] = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
            elif len(stack) == 1 and top_is_mapping:  # its value
                anchor = getattr(event, "anchor", None)
                outline[key] = anchors.get(anchor) if isinstance(event, yaml.AliasEvent) and anchor else None
            parent.nodes += 1
        if isinstance(event, yaml.CollectionStartEvent):
            stack.append(_Open(isinstance(event, yaml.MappingStartEvent), event.anchor))
        elif isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
            anchors[event.anchor] = None
    return (outline if top_is_mapping or documents == 0 else None), positions, documents


def check_outline(text: str, data: object) -> OutlineMismatch | None:
    """None when an independent reader sees the same top level as ``yaml_rs`` (``data``)."""
    expected = data_outline(data)
    if expected is None:  # not a mapping: validation rejects the document anyway
        return None
    if _line_outline(text) == expected:
        return None
    read = _read_events(text)
    if isinstance(read, OutlineMismatch):
        return read
    seen, positions, documents = read
    if documents > 1:
        return OutlineMismatch(f"one parser reads {documents} documents here, the other one", 1, 1)
    if seen == expected:
        return None
    return _first_disagreement(seen or {}, expected, positions)


def _read_events(text: str) -> tuple[Outline | None, dict[str, tuple[int, int]], int] | OutlineMismatch:
    """The second parser's outline of ``text``; a mismatch when it cannot read the file at all."""
    try:
        return _event_outline(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        return OutlineMismatch(f"the second YAML parser cannot read this file: {exc.problem}", line, column)
    except yaml.YAMLError as exc:
        return OutlineMismatch(f"the second YAML parser cannot read this file: {exc}", 1, 1)


def _first_disagreement(seen: Outline, expected: Outline, positions: dict[str, tuple[int, int]]) -> OutlineMismatch:
    """The first top-level key the parsers disagree about, in the order the event parser placed them."""
    # Keys the event parser placed first: a key only yaml_rs has (a null or complex key as text) has no position.
    for key in sorted(set(seen) | set(expected), key=lambda name: (name not in positions, positions.get(name, (1, 1)))):
        if seen.get(key, "absent") != expected.get(key, "absent"):
            line, column = positions.get(key, (1, 1))
            return OutlineMismatch(
                f"the YAML parsers disagree about {key!r}: {_entries(expected.get(key, 'absent'))} for one,"
                f" {_entries(seen.get(key, 'absent'))} for the other",
                line,
                column,
            )
    return OutlineMismatch("the YAML parsers disagree about this file's top level", 1, 1)


def _entries(count: int | str | None) -> str:
    if isinstance(count, str):
        return count
    return "a single value" if count is None else f"{count} entries"
