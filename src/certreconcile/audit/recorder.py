"""The audit recorder: where apply appends audit events and where ``audit`` reads them back.

The state store implements it (PostgreSQL: :mod:`certreconcile.actual.postgres.audit`, the fake:
:mod:`certreconcile.testing.fake_repository`); the hash chain over the rows is written by the
database's trigger and checked by :mod:`certreconcile.audit.verify`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from certreconcile.audit.events import AuditEvent

__all__ = ["AuditRecorder"]


class AuditRecorder(Protocol):
    """Append-only: events are added, never changed or removed."""

    def append_audit(self, event: AuditEvent) -> None: ...

    def append_audit_many(self, events: Sequence[AuditEvent]) -> None:
        """``append_audit`` of each event, in this order (the chain's), in one statement: all or none."""
        ...

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
        """Oldest first. ``actor`` matches the actor or its prefix (``git:``, ``user:alice``);
        ``since`` is inclusive, ``until`` exclusive; with ``limit``, the newest ``limit`` events."""
        ...
