"""The ``status`` Agents section: each enrolled agent's own certificate and when it last answered."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from certreconcile.actual.model import ActualState, AgentRecord
from certreconcile.plan.plan import Plan

__all__ = ["agent_state", "agents_json", "agents_table"]


def agent_state(agent: AgentRecord, now: datetime, plan: Plan | None = None) -> str:
    """expired | unreachable (its last contact failed) | renewal-due | not-seen (never answered yet) | ok."""
    if agent.not_after <= now:
        return "expired"
    if agent.last_error is not None:
        return "unreachable"
    if plan is not None and any(renewal.name == agent.name for renewal in plan.agent_renewals):
        return "renewal-due"
    if agent.last_seen_at is None:
        return "not-seen"
    return "ok"


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "never"


def agents_json(actual: ActualState, now: datetime, plan: Plan | None = None) -> list[dict[str, Any]]:
    return [
        {
            "name": agent.name,
            "serial": agent.serial,
            "fingerprint": agent.fingerprint,
            "not_after": agent.not_after.isoformat(),
            "days_left": int((agent.not_after - now).total_seconds() // 86400),
            "enrolled_at": agent.enrolled_at.isoformat(),
            "renewed_at": agent.renewed_at.isoformat() if agent.renewed_at else None,
            "last_seen_at": agent.last_seen_at.isoformat() if agent.last_seen_at else None,
            "last_error": agent.last_error,
            "state": agent_state(agent, now, plan),
        }
        for agent in _sorted(actual.agents)
    ]


def agents_table(actual: ActualState, now: datetime, plan: Plan | None = None) -> str:
    """The Agents section of the status table ("" without enrolled agents)."""
    if not actual.agents:
        return ""
    header = ("AGENT", "SERIAL", "NOT AFTER", "LAST SEEN", "STATE")
    rows = [
        (agent.name, agent.serial[:16], _time(agent.not_after), _time(agent.last_seen_at),
         agent_state(agent, now, plan) + (f" ({agent.last_error})" if agent.last_error else ""))
        for agent in _sorted(actual.agents)
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["", "Agents:"]
    lines += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [header, *rows]]
    return "\n".join(lines) + "\n"


def _sorted(agents: Mapping[str, AgentRecord]) -> list[AgentRecord]:
    return [agents[name] for name in sorted(agents)]
