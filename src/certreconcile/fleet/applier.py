"""The applier's fleet: one identity, one contact log and the agents' clients and targets of a process."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta

from certreconcile.actual.store import StateStore
from certreconcile.clock import Clock
from certreconcile.desired.model import AgentSpec, AgentTargetRef, TargetSpec
from certreconcile.errors import ConfigError
from certreconcile.fleet.ca import FleetCa
from certreconcile.fleet.client import AgentClient, ContactLog
from certreconcile.fleet.identity import IdentitySource
from certreconcile.fleet.target import AgentTarget

__all__ = ["Fleet", "fleet_of"]


class Fleet:
    """What the agent targets of one environment share: the lazily minted applier identity and the contacts."""

    def __init__(self, open_ca: Callable[[], FleetCa], clock: Clock) -> None:
        self.identity = IdentitySource(open_ca, clock)
        self.contacts = ContactLog()
        self._clock = clock

    def __repr__(self) -> str:
        return "Fleet()"

    def client(self, agent: str, url: str, timeout: timedelta) -> AgentClient:
        return AgentClient(agent, url, timeout, self.identity.context, self._clock, self.contacts)

    def client_for(self, spec: AgentSpec) -> AgentClient:
        return self.client(spec.name, spec.url, spec.timeout)

    def targets(self, specs: Mapping[str, TargetSpec]) -> dict[str, AgentTarget]:
        """An :class:`AgentTarget` per spec of kind ``agent`` (its ``config`` an :class:`AgentTargetRef`)."""
        built: dict[str, AgentTarget] = {}
        for name, spec in specs.items():
            ref = spec.config
            if not isinstance(ref, AgentTargetRef):
                raise ConfigError(f"target {name} is not an agent/target reference", code="config-invalid")
            client = self.client(ref.agent, ref.url, timedelta(seconds=ref.timeout_seconds))
            built[name] = AgentTarget(ref, client, self)
        return built

    def record_contacts(self, store: StateStore) -> None:
        """Write each agent's last answer and last error (``FleetAgent.last_seen_at``/``last_error``)."""
        contacts = self.contacts.snapshot()
        if not contacts:
            return
        with store.session() as session:
            for agent, contact in sorted(contacts.items()):
                if contact.last_seen_at is not None:
                    session.record_agent_contact(agent, contact.last_seen_at, None)
                if contact.last_error is not None and contact.error_at is not None:
                    session.record_agent_contact(agent, contact.error_at, contact.last_error[:500])


def fleet_of(targets: Iterable[object]) -> Fleet | None:
    """The fleet the agent targets among ``targets`` share (None when there is none)."""
    for target in targets:
        if isinstance(target, AgentTarget) and target.fleet is not None:
            return target.fleet
    return None
