"""The notification outbox (``NotificationStore``), in memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from certreconcile.actual.outbox import NotificationRow, NotificationState, QueuedNotification
from certreconcile.testing.fake_state.base import FakeSessionBase


class FakeOutbox(FakeSessionBase):
    """The notification outbox, with the table's unique (event_key, sink) and its claim semantics."""

    def enqueue_notification(self, row: NotificationRow, due: datetime) -> bool:
        with self._store._mutex:
            outbox = self._data.outbox
            if any(item.row.event_key == row.event_key and item.row.sink == row.sink for item in outbox.values()):
                return False
            new_id = self._next_id()
            outbox[new_id] = QueuedNotification(new_id, row, NotificationState.PENDING, 0, due)
            return True

    def claim_notifications(self, now: datetime, lease_until: datetime, limit: int) -> Sequence[QueuedNotification]:
        with self._store._mutex:
            outbox = self._data.outbox
            due = sorted(
                (item for item in outbox.values() if item.state is NotificationState.PENDING
                 and item.next_attempt_at <= now),
                key=lambda item: (item.next_attempt_at, item.id),
            )[:limit]  # fmt: skip
            claimed = [replace(item, next_attempt_at=lease_until, attempts=item.attempts + 1) for item in due]
            for item in claimed:
                outbox[item.id] = item
            return sorted(claimed, key=lambda item: item.id)

    def finish_notification(
        self, notification_id: int, state: NotificationState, at: datetime, *, error: str | None = None,
        retry_at: datetime | None = None,
    ) -> None:  # fmt: skip
        with self._store._mutex:
            item = self._data.outbox.get(notification_id)
            if item is None:
                return
            self._data.outbox[notification_id] = replace(
                item,
                state=state,
                last_error=error,
                sent_at=at if state is NotificationState.SENT else item.sent_at,
                next_attempt_at=retry_at if retry_at is not None else item.next_attempt_at,
            )

    def notifications(self) -> Sequence[QueuedNotification]:
        with self._store._mutex:
            return [self._data.outbox[key] for key in sorted(self._data.outbox)]
