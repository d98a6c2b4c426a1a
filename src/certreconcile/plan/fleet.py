"""The fleet's part of a plan: an agent whose own certificate is due. Plain data, standard library only
(``plan.plan`` imports it); the planner's checks of agents are in :mod:`certreconcile.plan.agents`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["AgentRenewal"]


@dataclass(frozen=True, slots=True)
class AgentRenewal:
    """Renew agent ``name``'s own certificate through the channel (its key stays on its host)."""

    name: str
    not_after: datetime | None  # of its current certificate
    reason: str  # for people, one line

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "reason": self.reason,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> AgentRenewal:
        not_after = data.get("not_after")
        return AgentRenewal(data["name"], datetime.fromisoformat(not_after) if not_after else None, data["reason"])
