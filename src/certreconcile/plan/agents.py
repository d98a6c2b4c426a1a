"""The planner's checks of agents: whose own certificate is due, which did not answer, which are not enrolled.

Pure, like the rest of the planner: ``now`` is an argument, nothing here reads a clock or a store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from certreconcile.actual.model import AgentRecord, ServedCertificate
from certreconcile.desired.model import AgentSpec, AgentTargetRef, DesiredState
from certreconcile.plan.fleet import AgentRenewal

__all__ = [
    "agent_of",
    "agent_renewals",
    "describe_unreachable",
    "last_seen",
    "renewal_due",
    "unenrolled_warnings",
    "unreachable_warnings",
]


def _span(delta: timedelta) -> str:
    seconds = abs(delta.total_seconds())
    if seconds >= 86400:
        count, unit = round(seconds / 86400), "day"
    elif seconds >= 3600:
        count, unit = round(seconds / 3600), "hour"
    else:
        count, unit = max(round(seconds / 60), 0), "minute"
    return f"{count} {unit}{'' if count == 1 else 's'}"


def renewal_due(record: AgentRecord, now: datetime) -> bool:
    """An agent's certificate is due in its last third of life (or once expired)."""
    return record.not_after - now <= (record.not_after - record.not_before) / 3


def agent_renewals(
    declared: Mapping[str, AgentSpec], enrolled: Mapping[str, AgentRecord], now: datetime
) -> tuple[AgentRenewal, ...]:
    """The declared, enrolled agents whose certificate is due at ``now``, by name."""
    renewals: list[AgentRenewal] = []
    for name in sorted(declared):
        record = enrolled.get(name)
        if record is None or not renewal_due(record, now):
            continue
        left = record.not_after - now
        reason = f"expires in {_span(left)}" if left > timedelta(0) else f"expired {_span(left)} ago"
        renewals.append(AgentRenewal(name, record.not_after, reason))
    return tuple(renewals)


def unenrolled_warnings(declared: Mapping[str, AgentSpec], enrolled: Mapping[str, AgentRecord]) -> list[str]:
    """One warning per declared agent that was never enrolled (it cannot be reached: it has no certificate)."""
    return [
        f"agent {name} is declared but not enrolled: nothing can be deployed to it (make a CSR on its host, "
        f"then run `certreconcile agent enroll {name} --csr FILE` where apply runs)"
        for name in sorted(declared)
        if name not in enrolled
    ]


def agent_of(desired: DesiredState, target: str) -> str | None:
    """The agent serving ``target`` (a target of kind ``agent``), else None."""
    spec = desired.targets.get(target)
    if spec is not None and isinstance(spec.config, AgentTargetRef):
        return spec.config.agent
    return None


def last_seen(record: AgentRecord | None) -> str:
    """``last seen 2026-12-06T10:00Z`` or ``never seen``."""
    if record is None or record.last_seen_at is None:
        return "never seen"
    return f"last seen {record.last_seen_at.astimezone(UTC):%Y-%m-%dT%H:%MZ}"


def describe_unreachable(agent: str | None, record: AgentRecord | None) -> str:
    """``agent web-1 is unreachable (last seen ...)``: what the plan says of a target whose host did not answer."""
    if agent is None:
        return "its host did not answer"
    return f"agent {agent} is unreachable ({last_seen(record)})"


def unreachable_warnings(
    desired: DesiredState, served: Iterable[tuple[str, ServedCertificate]], enrolled: Mapping[str, AgentRecord]
) -> list[str]:
    """One warning per agent that did not answer ``--refresh``: ``agent web-1 did not answer (...); last seen ...``.

    ``served`` holds ``(target, what it was seen serving)`` pairs; only unreachable ones count.
    """
    errors: dict[tuple[str, bool], str | None] = {}  # (agent or target name, is an agent) -> the first error
    for target, seen in served:
        if not seen.unreachable:
            continue
        agent = agent_of(desired, target)
        key = (agent, True) if agent is not None else (target, False)
        if errors.get(key) is None:
            errors[key] = seen.error
    warnings = []
    for (name, is_agent), error in sorted(errors.items()):
        if not is_agent:  # a target of another kind whose host did not answer (an ssh host...)
            warnings.append(f"target {name} did not answer ({error or 'no answer'})")
            continue
        record = enrolled.get(name)
        said = error or (record.last_error if record is not None else None) or "no answer"
        warnings.append(f"agent {name} did not answer ({said}); {last_seen(record)}")
    return warnings
