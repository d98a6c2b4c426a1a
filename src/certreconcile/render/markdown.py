"""The plan as a pull-request comment (GitHub-flavoured Markdown).

The summary (counts, warnings) always comes first and is always complete; only the per-change details are
cut when the comment would exceed the host's size limit (GitHub refuses bodies over 65,536 characters), and
the cut is said out loud. Every value that comes from the desired state, the inventory or the network is
escaped, so a domain or a message cannot break the tables, inject HTML or ping people with backticks/links.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from certreconcile.plan.plan import Action, Change, Plan, Severity

from .text import FINGERPRINT_DISPLAY_LENGTH, agent_renewal_line, summary_line, waiting_marker

__all__ = ["DEFAULT_LIMIT", "escape_markdown", "render_markdown"]

#: A little under GitHub's 65,536-character comment limit, leaving room for a bot's own footer.
DEFAULT_LIMIT = 65000

HEADING = "### certreconcile plan"

#: Display order of the counts: the order of the ``Plan:`` line.
_SUMMARY_ORDER = (Action.ISSUE, Action.ROTATE, Action.REVOKE, Action.REDISTRIBUTE, Action.RETIRE)

_TRUNCATION_NOTE = (
    "_… {count} more {noun} not shown (the full plan is in the job log / `certreconcile plan --format json`)._"
)
_HARD_CUT_MARKER = "\n\n_… comment truncated._\n"

# Characters with a meaning in Markdown or HTML, and their inert forms. HTML entities where a backslash
# is not enough: ``|`` splits table cells before inline parsing, ``<``/``>``/``&`` start HTML.
_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    "|": "&#124;",
    "`": "&#96;",
    "\\": "\\\\",
    "*": "\\*",
    "_": "\\_",
    "[": "\\[",
    "]": "\\]",
    "~": "\\~",
    "#": "\\#",
    "!": "\\!",
    "@": "&#64;",
}


def escape_markdown(text: str) -> str:
    """``text`` as inert Markdown on one line: no formatting, no HTML, no table breaks, no mentions."""
    out: list[str] = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            # Newlines would end a table row; bidi overrides would disguise text.
            out.append(" " if char in "\t\n\r" else char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)


def render_markdown(plan: Plan, *, limit: int = DEFAULT_LIMIT) -> str:
    """The plan as one comment of at most ``limit`` characters, summary first, details folded."""
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    summary = _summary(plan, warnings_budget=limit // 4)
    if not plan.changes:  # nothing, or agents' certificates only (listed in the summary)
        return _hard_cut(summary.rstrip("\n") + "\n", limit)

    rows = [_change_row(change) for change in plan.changes]
    total = len(plan.changes)
    complete = summary + _details_open(total, total, truncated=False) + "".join(rows) + _DETAILS_CLOSE
    if len(complete) <= limit:
        return complete

    # Reserve room for the note at its longest (every change left out), then fill with whole rows.
    budget = limit - len(summary) - len(_details_open(total, total, truncated=True)) - len(_DETAILS_CLOSE)
    budget -= len(_note(total, "changes")) + 2
    shown = 0
    used = 0
    for row in rows:
        if used + len(row) > budget:
            break
        used += len(row)
        shown += 1
    if shown == 0:
        return _hard_cut(summary + _note(total, "changes") + "\n", limit)
    text = (
        summary
        + _details_open(total, shown, truncated=True)
        + "".join(rows[:shown])
        + "\n"
        + _note(total - shown, "changes" if total - shown != 1 else "change")
        + "\n"
        + _DETAILS_CLOSE
    )
    return _hard_cut(text, limit)


def _summary(plan: Plan, *, warnings_budget: int) -> str:
    lines = [HEADING, "", f"**{summary_line(plan)}**", ""]
    lines += _destroy_block(plan)  # first: what cannot be undone
    if not plan.is_empty:
        lines += ["| action | count |", "|:--|--:|"]
        lines += [f"| `{action.symbol}` {action.value} | {plan.count(action)} |" for action in _SUMMARY_ORDER]
        if plan.agent_renewals:
            lines.append(f"| `~` renew agent certificate | {len(plan.agent_renewals)} |")
        lines.append("")
    if plan.agent_renewals:  # one line each: few agents, and each is a pending change
        lines += [f"- `~` {escape_markdown(agent_renewal_line(renewal))}" for renewal in plan.agent_renewals]
        lines.append("")
    errors = [d.one_line() for d in plan.diagnostics if d.severity is Severity.ERROR]
    if errors:  # never cut: each one is a reason apply refuses the plan
        lines += ["> [!CAUTION]", "> **apply refuses this plan; nothing will change:**"]
        lines += [f"> - {escape_markdown(error)}" for error in errors]
        lines.append("")
    warnings = [*plan.warnings, *(d.one_line() for d in plan.diagnostics if d.severity is Severity.WARNING)]
    if warnings:
        lines += ["> [!WARNING]"]
        used = 0
        for index, warning in enumerate(warnings):
            line = f"> - {escape_markdown(warning)}"
            if used + len(line) > warnings_budget and index > 0:
                left = len(warnings) - index
                lines.append(f"> - {_note(left, 'warnings' if left != 1 else 'warning')}")
                break
            used += len(line) + 1
            lines.append(line)
        lines.append("")
    lines += [_provenance(plan), ""]
    return "\n".join(lines) + "\n"


def _destroy_block(plan: Plan) -> list[str]:
    """The revocations and retirements, in a warning, with the ``--allow-destroy N`` apply needs for them."""
    destructive = plan.destructive
    if not destructive:
        return []
    count = len(destructive)
    what = f"**This plan revokes or retires {count} certificate{'s' if count != 1 else ''}**"
    check = plan.destroy
    if check is None:
        verdict = f"if that is over the destroy threshold, `certreconcile apply` needs `--allow-destroy {count}`"
    elif check.required(count):
        verdict = (
            f"that is over the destroy threshold ({check.threshold.describe(check.managed)}): "
            f"`certreconcile apply` refuses it without `--allow-destroy {count}`"
        )
    else:
        them = "it" if count == 1 else "them"
        verdict = f"within the destroy threshold ({check.threshold.describe(check.managed)}); review {them}"
    lines = ["> [!WARNING]", f"> {what}; {verdict}."]
    for change in destructive[:_DESTROY_SHOWN]:
        domains = _join(change.domains[:_DESTROY_DOMAINS])
        if len(change.domains) > _DESTROY_DOMAINS:
            domains += f" +{len(change.domains) - _DESTROY_DOMAINS} more"
        action = f"`{change.action.symbol} {change.action.value}`"
        lines.append(f"> - {action} **{escape_markdown(change.name)}** ({domains})")
    if count > _DESTROY_SHOWN:
        lines.append(f"> - _… {count - _DESTROY_SHOWN} more, in the list of changes._")
    return [*lines, ""]


_DESTROY_SHOWN = 20  # names spelled out in the warning (the summary must stay short; the table has them all)
_DESTROY_DOMAINS = 3


def _provenance(plan: Plan) -> str:
    commit = f"commit {escape_markdown(plan.git_commit[:12])}" if plan.git_commit else "no commit"
    return f"<sub>{commit} · state serial {plan.serial} · change digest `{plan.change_digest[:12]}`</sub>"


_TABLE_HEADER = "| action | name | domains | targets | why |\n|:--|:--|:--|:--|:--|\n"
_DETAILS_CLOSE = "\n</details>\n"


def _details_open(total: int, shown: int, *, truncated: bool) -> str:
    noun = "change" if total == 1 else "changes"
    summary = f"{total} {noun} (first {shown} shown)" if truncated else f"{total} {noun}"
    return f"<details><summary>{summary}</summary>\n\n{_TABLE_HEADER}"


def _change_row(change: Change) -> str:
    action = f"`{change.action.symbol} {change.action.value}`"
    if change.deferred_until is not None:  # pending, not attempted before its time
        action += f"<br>{escape_markdown(waiting_marker(change))}"
    targets = _join(change.targets)
    if change.removed_targets:
        removed = "removed: " + _join(change.removed_targets)
        targets = f"{targets}<br>{removed}" if targets else removed
    why = [escape_markdown(reason.message) for reason in change.reasons]
    if change.deferred_until is not None:
        why.append("pending: " + escape_markdown(change.deferred_reason or "backing off"))
    replaces = _replaces(change)
    if replaces:
        why.append(f"replaces {replaces}")
    why += [f"{escape_markdown(target)} serves {escape_markdown(serves)}" for target, serves in change.served]
    cells = [action, f"**{escape_markdown(change.name)}**", _join(change.domains), targets, "<br>".join(why)]
    return "| " + " | ".join(cells) + " |\n"


def _replaces(change: Change) -> str:
    if change.action not in (Action.ROTATE, Action.REVOKE, Action.RETIRE):
        return ""
    if change.replaces_fingerprint:
        return escape_markdown(change.replaces_fingerprint[:FINGERPRINT_DISPLAY_LENGTH])
    if change.replaces:
        return escape_markdown(change.replaces)
    return ""


def _join(values: Iterable[str]) -> str:
    return ", ".join(escape_markdown(value) for value in values)


def _note(count: int, noun: str) -> str:
    return _TRUNCATION_NOTE.format(count=count, noun=noun)


def _hard_cut(text: str, limit: int) -> str:
    """Last resort when even the summary does not fit (absurd limits, thousands of warnings)."""
    if len(text) <= limit:
        return text
    if limit <= len(_HARD_CUT_MARKER):
        return text[:limit]
    return text[: limit - len(_HARD_CUT_MARKER)] + _HARD_CUT_MARKER
