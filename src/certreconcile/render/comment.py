"""The plan as sticky pull-request comments, and the reviewed change set read back from them.

GitHub refuses comment bodies over 65,536 characters, so a large plan becomes parts ``1/N .. N/N``, each at
most ``limit`` characters, each starting with :data:`COMMENT_MARKER` (a workflow finds its own comments by
it and updates them in place) and its part line. Parts split only between changes, never inside a change's
row; a single row longer than a whole part is cut, with a note.

The first part carries the change-set digest twice: hidden (``<!-- certreconcile-change-digest: HEX -->``,
for the apply workflow) and visible (for the reviewer). The parts also carry, hidden, the reviewed change
set itself (:data:`REVIEW_DATA_PREFIX` chunks: the canonical JSON the digest is computed over,
zlib-compressed, base64), so ``certreconcile apply --expect-changes DIGEST --reviewed-plan COMMENTS`` can say
what differs after a merge and let renewals that fell due in between through. The data is checked against
the digest when read back: a truncated, reordered or edited comment is refused, never half-trusted.

Pure: no I/O; the CLI writes the files and the workflow posts them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from certreconcile.plan.plan import Change, Plan

from .markdown import _TABLE_HEADER, DEFAULT_LIMIT, _change_row, _summary, escape_markdown

__all__ = [
    "COMMENT_MARKER",
    "DIGEST_PREFIX",
    "REVIEW_DATA_PREFIX",
    "ReviewDataError",
    "ReviewedChanges",
    "render_error_comment",
    "render_pr_comments",
    "reviewed_changes_from_comments",
]

#: The first line of every comment this renders: how a workflow finds the sticky comments.
COMMENT_MARKER = "<!-- certreconcile-plan -->"
DIGEST_PREFIX = "<!-- certreconcile-change-digest: "
REVIEW_DATA_PREFIX = "<!-- certreconcile-review-data "

# Room kept in every part for its header, whose numbers are only known once all parts are cut.
_HEADER_RESERVE = 400
# Room for one review-data line's framing: prefix, index/count, suffix.
_DATA_LINE_RESERVE = 80
_MIN_DATA_CHUNK = 512
_CUT_NOTE = " _… row truncated (the full plan is in the job log)_ |\n"
_MAX_REVIEW_DATA = 64 * 1024 * 1024  # decompressed bytes: a guard against a zip bomb in a comment


class ReviewDataError(ValueError):
    """The comments do not hold a complete, intact reviewed change set."""


@dataclass(frozen=True, slots=True)
class ReviewedChanges:
    digest: str
    changes: tuple[Change, ...]


def _canonical_changes(plan: Plan) -> bytes:
    """Exactly the bytes :attr:`Plan.change_digest` hashes."""
    return plan.canonical_change_set()


def _review_data(plan: Plan) -> str:
    return base64.b64encode(zlib.compress(_canonical_changes(plan), 9)).decode("ascii")


def _header(index: int, total: int, plan: Plan | None) -> str:
    lines = [COMMENT_MARKER, f"<!-- certreconcile-part: {index}/{total} -->"]
    if plan is not None and index == 1:
        lines.append(f"{DIGEST_PREFIX}{plan.change_digest} -->")
    if total > 1:
        lines.append(f"<sub>part {index}/{total}</sub>")
    return "\n".join(lines) + "\n\n"


def _fit_row(row: str, room: int) -> str:
    """``row`` cut to ``room`` characters with a note; never ends inside an escape (``&amp;``, ``\\*``)."""
    if len(row) <= room:
        return row
    cut = row[: max(0, room - len(_CUT_NOTE))]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    while cut.endswith("\\") and (len(cut) - len(cut.rstrip("\\"))) % 2:
        cut = cut[:-1]
    return cut + _CUT_NOTE


def _details(first: int, last: int, total: int, rows: Sequence[str]) -> str:
    label = f"changes {first}–{last} of {total}" if (first, last) != (1, total) else f"{total} changes"
    return f"<details><summary>{label}</summary>\n\n{_TABLE_HEADER}{''.join(rows)}\n</details>\n"


_DETAILS_OVERHEAD = len(_details(99999, 99999, 99999, ()))


def render_pr_comments(plan: Plan, *, limit: int = DEFAULT_LIMIT) -> list[str]:
    """The plan as comment bodies, each at most ``limit`` characters, in posting order."""
    if limit < 4 * (_HEADER_RESERVE + _DETAILS_OVERHEAD + _MIN_DATA_CHUNK):
        raise ValueError(f"limit {limit} is too small for a plan comment")
    budget = limit - _HEADER_RESERVE
    summary = _summary(plan, warnings_budget=limit // 4)
    summary += f"Change set digest: `{plan.change_digest}`\n\n"
    if len(summary) > budget // 2:  # thousands of errors or warnings: keep room for the changes
        summary = summary[: budget // 2 - 40] + "\n\n_… summary truncated._\n\n"

    # Bodies (without headers): rows packed greedily, split only between rows.
    bodies: list[str] = []
    prefix = summary
    rows: list[str] = []
    first = 1
    used = len(prefix) + _DETAILS_OVERHEAD
    total = len(plan.changes)
    for number, change in enumerate(plan.changes, start=1):
        row = _fit_row(_change_row(change), budget - _DETAILS_OVERHEAD - 1)
        if (rows or prefix) and used + len(row) > budget:
            bodies.append(prefix + (_details(first, number - 1, total, rows) if rows else ""))
            prefix, rows, first = "", [], number
            used = _DETAILS_OVERHEAD
        rows.append(row)
        used += len(row)
    bodies.append(prefix + (_details(first, total, total, rows) if rows else ""))

    # The reviewed change set, hidden, in whatever room is left; new parts when it does not fit.
    data = _review_data(plan)
    chunks: list[list[str]] = [[] for _ in bodies]
    position = 0
    part = 0
    while position < len(data):
        if part == len(bodies):
            bodies.append("<sub>(review data for `certreconcile apply --expect-changes`)</sub>\n")
            chunks.append([])
        room = budget - len(bodies[part]) - sum(len(c) + _DATA_LINE_RESERVE for c in chunks[part])
        room -= _DATA_LINE_RESERVE
        if room < _MIN_DATA_CHUNK:
            part += 1
            continue
        chunks[part].append(data[position : position + room])
        position += room
    count = sum(len(c) for c in chunks)

    comments: list[str] = []
    index = 0
    for number, (body, part_chunks) in enumerate(zip(bodies, chunks, strict=True), start=1):
        lines = []
        for chunk in part_chunks:
            lines.append(f"{REVIEW_DATA_PREFIX}{index}/{count} {chunk} -->\n")
            index += 1
        text = _header(number, len(bodies), plan) + body + "".join(lines)
        assert len(text) <= limit, (len(text), limit)  # an invariant of the reserves above
        comments.append(text)
    return comments


def render_error_comment(problems: Sequence[str], *, limit: int = DEFAULT_LIMIT) -> str:
    """One comment saying the plan could not be made (invalid declarations, no database ...)."""
    head = (
        _header(1, 1, None)
        + "### certreconcile plan\n\n> [!CAUTION]\n> **No plan: the declarations are invalid or planning failed.**\n"
    )
    lines = [f"> - {escape_markdown(problem)}\n" for problem in problems]
    tail = "\n_Fix these and push again; apply refuses to run until a plan succeeds._\n"
    text = head
    for number, line in enumerate(lines):
        if len(text) + len(line) + len(tail) + 80 > limit:
            text += f"> - _… {len(lines) - number} more not shown (see the job log)._\n"
            break
        text += line
    return text + tail


_DIGEST_RE = re.compile(re.escape(DIGEST_PREFIX) + r"([0-9a-f]{64}) -->")
_DATA_RE = re.compile(re.escape(REVIEW_DATA_PREFIX) + r"(\d+)/(\d+) ([A-Za-z0-9+/=]+) -->")


def reviewed_changes_from_comments(text: str) -> ReviewedChanges:
    """The reviewed change set from the sticky comments' bodies (concatenated, any order).

    Raises :class:`ReviewDataError` unless the digest is present once and the data is complete and hashes
    to it.
    """
    digests = set(_DIGEST_RE.findall(text))
    if len(digests) != 1:
        found = "no" if not digests else f"{len(digests)} different"
        raise ReviewDataError(f"{found} change-set digests in the plan comments (expected exactly one)")
    digest = digests.pop()
    pieces: dict[int, str] = {}
    counts: set[int] = set()
    for index, count, chunk in _DATA_RE.findall(text):
        counts.add(int(count))
        if pieces.setdefault(int(index), chunk) != chunk:
            raise ReviewDataError(f"review data part {index} appears twice with different contents")
    if len(counts) != 1 or set(pieces) != set(range(next(iter(counts)))):
        raise ReviewDataError("the review data in the plan comments is incomplete (a comment is missing or edited)")
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(base64.b64decode("".join(pieces[i] for i in sorted(pieces))), _MAX_REVIEW_DATA)
        if inflater.unconsumed_tail:
            raise ReviewDataError("the review data is larger than allowed")
    except (binascii.Error, zlib.error) as exc:
        raise ReviewDataError(f"the review data in the plan comments is corrupt: {exc}") from exc
    if hashlib.sha256(raw).hexdigest() != digest:
        raise ReviewDataError("the review data in the plan comments does not match their change-set digest")
    try:
        data = json.loads(raw)
        if isinstance(data, dict):  # agents' renewals too (Plan.canonical_change_set)
            data = data["changes"]
        changes = tuple(Change.from_json(item) for item in data)
    except (ValueError, KeyError, TypeError) as exc:
        raise ReviewDataError(f"the review data in the plan comments is not a change list: {exc}") from exc
    return ReviewedChanges(digest=digest, changes=changes)
