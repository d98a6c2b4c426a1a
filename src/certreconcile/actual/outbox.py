"""The notification outbox (``NotificationStore``): each event once per sink, across replicas.

A replica that sees an event enqueues one row per sink (:meth:`NotificationStore.enqueue_notification`:
insert unless ``(event_key, sink)`` is there already, so the first replica wins and the others change
nothing). Delivery claims the due rows (:meth:`~NotificationStore.claim_notifications`: their next
attempt moves to a lease's end and their attempts count up, in one statement, so two replicas never
hold the same row), sends them, then marks each sent or due again later (backoff), or abandoned.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

__all__ = ["NotificationRow", "NotificationState", "NotificationStore", "QueuedNotification"]


class NotificationState(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    ABANDONED = "abandoned"  # too many failed attempts: audited, never sent


@dataclass(frozen=True, slots=True)
class NotificationRow:
    """One event for one sink, to enqueue. ``payload`` is public data only (names, dates, codes)."""

    event_key: str  # stable across replicas: the same event seen twice has the same key
    sink: str
    event: str  # one of desired.model.NOTIFY_EVENTS
    name: str  # the certificate's or the agent's name
    created_at: datetime
    payload: Mapping[str, str] = field(default_factory=dict)
    cert_id: str | None = None


@dataclass(frozen=True, slots=True)
class QueuedNotification:
    """A stored outbox row, as claimed or listed."""

    id: int
    row: NotificationRow
    state: NotificationState
    attempts: int  # delivery attempts so far (a claim counts one)
    next_attempt_at: datetime
    last_error: str | None = None
    sent_at: datetime | None = None


class NotificationStore(Protocol):
    def enqueue_notification(self, row: NotificationRow, due: datetime) -> bool:
        """Insert the row, due at ``due``, unless ``(event_key, sink)`` is stored already; True if inserted."""
        ...

    def claim_notifications(self, now: datetime, lease_until: datetime, limit: int) -> Sequence[QueuedNotification]:
        """Up to ``limit`` pending rows due at ``now`` (oldest first), claimed: their ``next_attempt_at``
        becomes ``lease_until`` and ``attempts`` grows by one. A row is claimed by one session only."""
        ...

    def finish_notification(
        self, notification_id: int, state: NotificationState, at: datetime, *, error: str | None = None,
        retry_at: datetime | None = None,
    ) -> None:  # fmt: skip
        """Record an attempt's end: SENT (``sent_at`` = ``at``), PENDING again at ``retry_at`` with ``error``,
        or ABANDONED with ``error``."""
        ...

    def notifications(self) -> Sequence[QueuedNotification]:
        """Every outbox row, in id order (``status``, tests)."""
        ...
