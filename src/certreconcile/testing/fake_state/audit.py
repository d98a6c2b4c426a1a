"""The audit recorder (``AuditRecorder``), in memory and append-only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from certreconcile.actual.repository import (
    CODE_INVALID,
)
from certreconcile.audit.events import AuditAction, AuditEvent
from certreconcile.errors import StateError
from certreconcile.testing.fake_state.base import (
    FakeSessionBase,
)


class FakeAudit(FakeSessionBase):
    """The audit recorder (``AuditRecorder``), in memory and append-only."""

    def audit_events(
        self,
        name: str | None = None,
        action: str | None = None,
        limit: int | None = None,
        *,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[AuditEvent]:
        """Oldest first; with ``limit``, the newest ``limit`` events (still oldest first)."""
        with self._store._mutex:
            events = [
                event
                for event in self._data.audit
                if (name is None or event.name == name)
                and (action is None or event.action == action)
                and (actor is None or event.actor.startswith(actor))
                and (since is None or event.at >= since)
                and (until is None or event.at < until)
            ]
        if limit is not None:
            events = events[-limit:] if limit > 0 else []
        return events

    def append_audit(self, event: AuditEvent) -> None:
        if event.action not in AuditAction.ALL:
            raise StateError(
                f"unknown audit action {event.action!r}",
                code=CODE_INVALID,
                hint=f"use one of {', '.join(AuditAction.ALL)}",
            )
        with self._store._mutex:
            if event.cert_id is not None:
                self._cert(event.cert_id)
            stored = replace(event, id=self._next_id(), detail=dict(event.detail))
            self._data.audit.append(stored)

    def append_audit_many(self, events: Sequence[AuditEvent]) -> None:
        with self._store._mutex:
            for event in events:  # every event valid, or nothing is written
                if event.action not in AuditAction.ALL:
                    self.append_audit(event)  # raises
                if event.cert_id is not None:
                    self._cert(event.cert_id)
            for event in events:
                self.append_audit(event)
