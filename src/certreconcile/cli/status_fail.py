"""``status --fail-on STATE``: exit 1 when a certificate is in one of the named states (for CI and cron)."""

from __future__ import annotations

import enum
from collections.abc import Sequence

import typer

from certreconcile.cli.status import StatusFlags

__all__ = ["FailOn", "failures", "parse_fail_on"]


class FailOn(enum.StrEnum):
    EXPIRING = "expiring"  # its renewal is due (the flag expiring-soon), or it expired
    EXPIRED = "expired"
    UNVERIFIED = "unverified"  # a target is not proven to serve it
    PENDING = "pending"  # the plan holds a change for it (a declared name not issued yet too)


def parse_fail_on(values: Sequence[str] | None) -> list[FailOn]:
    """``--fail-on`` values, repeated or comma-separated; an unknown one is a usage error listing the choices."""
    states: list[FailOn] = []
    for value in values or ():
        for part in value.split(","):
            word = part.strip().lower()
            if not word:
                continue
            try:
                state = FailOn(word)
            except ValueError:
                choices = ", ".join(s.value for s in FailOn)
                message = f"{part.strip()!r} is not one of {choices}."
                raise typer.BadParameter(message, param_hint="'--fail-on'") from None
            if state not in states:
                states.append(state)
    return states


def _in_state(flags: StatusFlags, state: FailOn) -> bool:
    match state:
        case FailOn.EXPIRING:
            return flags.expiring_soon
        case FailOn.EXPIRED:
            return flags.expired
        case FailOn.UNVERIFIED:
            return bool(flags.unverified_targets)
        case FailOn.PENDING:
            return bool(flags.pending)


def failures(rows: Sequence[tuple[str, StatusFlags]], states: Sequence[FailOn]) -> list[str]:
    """One line per state that any certificate is in: 'expired: a, b'."""
    lines = []
    for state in states:
        names = sorted(name for name, flags in rows if _in_state(flags, state))
        if names:
            lines.append(f"{state.value}: {', '.join(names)}")
    return lines
