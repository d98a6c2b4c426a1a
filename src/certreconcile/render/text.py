"""The plan for a terminal, in the Terraform manner.

Presentation only: nothing here decides anything, and the output carries no secret (a plan holds none).
Every user- or network-provided string goes through ``_clean`` so a hostile value (say, what a target
serves, seen by ``--refresh``) cannot smuggle terminal escape sequences into the output.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from datetime import UTC

from certreconcile.plan.destroy import describe_names
from certreconcile.plan.fleet import AgentRenewal
from certreconcile.plan.plan import Action, Change, Plan, PlanDiagnostic, Severity

__all__ = ["EMPTY_PLAN_LINE", "HEADER_LINE", "agent_renewal_line", "render_text", "summary_line", "waiting_marker"]

HEADER_LINE = "certreconcile will perform the following actions:"
EMPTY_PLAN_LINE = "No changes. Certificates match the desired state."

#: How many characters of a fingerprint identify a certificate to a reader.
FINGERPRINT_DISPLAY_LENGTH = 16

_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"
_ACTION_COLORS = {
    Action.ISSUE: "\x1b[32m",  # green
    Action.ROTATE: "\x1b[33m",  # yellow
    Action.REVOKE: "\x1b[31m",  # red
    Action.REDISTRIBUTE: "\x1b[36m",  # cyan
    Action.RETIRE: "\x1b[35m",  # magenta
}
_WARNING_COLOR = "\x1b[1;33m"
_ERROR_COLOR = "\x1b[1;31m"

_LABEL_WIDTH = 8  # "domains:", so the values line up
_INDENT_COMMENT = "  "
_INDENT_DETAIL = "      "


def summary_line(plan: Plan) -> str:
    """``Plan: N to issue, ...`` (``, N to retire`` only when there is one), or the no-changes line."""
    if plan.is_empty:
        return EMPTY_PLAN_LINE
    counts = [
        f"{plan.count(Action.ISSUE)} to issue",
        f"{plan.count(Action.ROTATE)} to rotate",
        f"{plan.count(Action.REVOKE)} to revoke",
        f"{plan.count(Action.REDISTRIBUTE)} to redistribute",
    ]
    retire = plan.count(Action.RETIRE)
    if retire:
        counts.append(f"{retire} to retire")
    agents = len(plan.agent_renewals)
    if agents:
        counts.append(f"{agents} agent certificate{'s' if agents != 1 else ''} to renew")
    waiting = len(plan.deferred)
    if waiting:  # still changes: declared, not served yet; apply skips them until their time
        return "Plan: " + ", ".join(counts) + f" ({waiting} waiting for a retry)."
    return "Plan: " + ", ".join(counts) + "."


def agent_renewal_line(renewal: AgentRenewal) -> str:
    """``renew agent web-1's certificate: expires in 9 days``."""
    return f"renew agent {_clean(renewal.name)}'s certificate: {_clean(renewal.reason)}"


def waiting_marker(change: Change) -> str:
    """``(waiting until 2026-12-06T10:00Z)`` for a deferred change, else ``""``."""
    if change.deferred_until is None:
        return ""
    return f"(waiting until {change.deferred_until.astimezone(UTC):%Y-%m-%dT%H:%MZ})"


def render_text(plan: Plan, *, color: bool) -> str:
    """The whole plan as text ending in a newline; ``color=False`` emits no escape code at all."""
    paint = _Painter(enabled=color)
    lines: list[str] = []
    if not plan.is_empty:
        lines.append(paint.bold(HEADER_LINE))
        lines.append("")
        for change in plan.changes:
            lines.extend(_change_block(change, paint))
            lines.append("")
        for renewal in plan.agent_renewals:
            lines.append(_INDENT_COMMENT + paint.action(Action.ROTATE, "~") + " " + agent_renewal_line(renewal))
            lines.append("")
    destroy = _destroy_warning(plan)
    for warning in (*destroy, *plan.warnings):
        lines.extend(_warning_lines(warning, paint))
        lines.append("")
    # Errors first: they decide whether apply runs at all.
    for diagnostic in sorted(plan.diagnostics, key=lambda d: d.severity is not Severity.ERROR):
        lines.extend(_diagnostic_lines(diagnostic, paint))
        lines.append("")
    closing = summary_line(plan)
    if plan.is_empty:
        lines.append(paint.bold(closing))
    else:
        lines.append(paint.bold("Plan:") + closing.removeprefix("Plan:"))
    return "\n".join(lines) + "\n"


class _Painter:
    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled

    def _wrap(self, code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if self.enabled else text

    def bold(self, text: str) -> str:
        return self._wrap(_BOLD, text)

    def action(self, action: Action, text: str) -> str:
        return self._wrap(_ACTION_COLORS[action], text)

    def warning(self, text: str) -> str:
        return self._wrap(_WARNING_COLOR, text)

    def error(self, text: str) -> str:
        return self._wrap(_ERROR_COLOR, text)


def _change_block(change: Change, paint: _Painter) -> list[str]:
    name = _clean(change.name)
    comment = f"# {name} will be {change.action.verb}"
    if change.reasons:
        comment += " because " + "; ".join(_clean(reason.message) for reason in change.reasons)
    headline = paint.action(change.action, f"{change.action.symbol} {change.action.value}") + f" {name}"
    lines = [_INDENT_COMMENT + paint.bold(comment)]
    if change.deferred_until is not None:  # pending: declared and not served, but not attempted before its time
        lines.append(_INDENT_COMMENT + paint.bold(f"# pending: {_clean(change.deferred_reason or 'backing off')}"))
        headline += " " + paint.warning(waiting_marker(change))
    lines.append(_INDENT_COMMENT + headline)
    details: list[tuple[str, str]] = []
    if change.domains:
        details.append(("domains:", _join(change.domains)))
    issuer_and_key = _issuer_and_key(change)
    if issuer_and_key:
        details.append(("issuer:" if change.issuer is not None else "key:", issuer_and_key))
    if change.targets:
        details.append(("targets:", _join(change.targets)))
    if change.removed_targets:
        details.append(("removed:", _join(change.removed_targets)))
    replaces = _replaces(change)
    if replaces:
        details.append(("replaces", replaces))
    for index, (target, serves) in enumerate(change.served):
        details.append(("served:" if index == 0 else "", f"{_clean(target)} serves {_clean(serves)}"))
    lines.extend(f"{_INDENT_DETAIL}{label.ljust(_LABEL_WIDTH)} {value}" for label, value in details)
    return lines


def _issuer_and_key(change: Change) -> str:
    """``internal   key: ecdsa-p256`` (the value after ``issuer:``), or whichever of the two is known."""
    if change.issuer is not None and change.key_type is not None:
        return f"{_clean(change.issuer)}   key: {_clean(change.key_type)}"
    if change.issuer is not None:
        return _clean(change.issuer)
    if change.key_type is not None:
        return _clean(change.key_type)
    return ""


def _replaces(change: Change) -> str:
    """The superseded certificate, shown only where it matters (rotate, revoke, retire)."""
    if change.action not in (Action.ROTATE, Action.REVOKE, Action.RETIRE):
        return ""
    if change.replaces_fingerprint:
        return _clean(change.replaces_fingerprint[:FINGERPRINT_DISPLAY_LENGTH])
    if change.replaces:
        return _clean(change.replaces)
    return ""


def _destroy_warning(plan: Plan) -> tuple[str, ...]:
    """The warning that apply will need ``--allow-destroy N`` (none when within the destroy threshold)."""
    destructive = plan.destructive
    count = len(destructive)
    if not count or (plan.destroy is not None and not plan.destroy.required(count)):
        return ()
    names = describe_names([change.name for change in destructive])
    what = f"this plan revokes or retires {count} certificate{'s' if count != 1 else ''} ({names})"
    if plan.destroy is None:
        return (f"{what}; if that is over the destroy threshold, apply needs --allow-destroy {count}",)
    limit = plan.destroy.threshold.describe(plan.destroy.managed)
    return (f"{what}, over the destroy threshold ({limit}): apply refuses it without --allow-destroy {count}",)


def _warning_lines(warning: str, paint: _Painter) -> list[str]:
    first, *rest = _clean(warning, keep_newlines=True).split("\n")
    return [paint.warning("Warning:") + f" {first}", *(f"  {line}" for line in rest)]


def _diagnostic_lines(diagnostic: PlanDiagnostic, paint: _Painter) -> list[str]:
    if diagnostic.severity is Severity.ERROR:
        lines = [
            paint.error("Error:") + f" {_clean(diagnostic.summary)}",
            "  apply refuses this plan; nothing will change.",
        ]
    else:
        lines = [paint.warning("Warning:") + f" {_clean(diagnostic.summary)}"]
    if diagnostic.hint:
        lines.append(f"  Hint: {_clean(diagnostic.hint)}")
    return lines


def _join(values: Iterable[str]) -> str:
    return ", ".join(_clean(value) for value in values)


def _clean(text: str, *, keep_newlines: bool = False) -> str:
    """Replace control characters (ESC, CR, ...) with a visible escape so they cannot drive the terminal."""
    out: list[str] = []
    for char in text:
        if char == "\n" and keep_newlines:
            out.append(char)
        elif _is_control(char):
            out.append(char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)


def _is_control(char: str) -> bool:
    """C0/C1 controls, line separators and invisible format characters such as bidi overrides."""
    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")
