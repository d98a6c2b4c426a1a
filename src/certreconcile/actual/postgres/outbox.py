"""The notification outbox (``NotificationStore``), in PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from certreconcile.actual.outbox import NotificationRow, NotificationState, QueuedNotification
from certreconcile.actual.postgres.connection import PostgresConnection

__all__ = ["PostgresOutbox"]

_SQL_ENQUEUE = (
    "INSERT INTO NotificationOutbox (event_key, sink, event, name, cert_id, payload, created_at, next_attempt_at)"
    " VALUES (%(event_key)s, %(sink)s, %(event)s, %(name)s, %(cert_id)s, %(payload)s, %(created_at)s, %(due)s)"
    " ON CONFLICT ON CONSTRAINT uq_notification_event_sink DO NOTHING"
)
# One statement: the due rows are locked (rows another session is claiming are skipped, never waited
# for), moved to the lease's end and counted, so no two sessions claim the same row.
_SQL_CLAIM = (
    "UPDATE NotificationOutbox SET next_attempt_at = %(lease_until)s, attempts = attempts + 1"
    " WHERE id IN (SELECT id FROM NotificationOutbox WHERE state = 'pending' AND next_attempt_at <= %(now)s"
    " ORDER BY next_attempt_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
    " RETURNING id, event_key, sink, event, name, created_at, payload, cert_id::text, state, attempts,"
    " next_attempt_at, last_error, sent_at"
)
_SQL_ALL = (
    "SELECT id, event_key, sink, event, name, created_at, payload, cert_id::text, state, attempts, next_attempt_at,"
    " last_error, sent_at FROM NotificationOutbox ORDER BY id"
)
_SQL_FINISH = (
    "UPDATE NotificationOutbox SET state = %(state)s, last_error = %(error)s,"
    " sent_at = CASE WHEN %(state)s = 'sent' THEN %(at)s ELSE sent_at END,"
    " next_attempt_at = COALESCE(%(retry_at)s, next_attempt_at) WHERE id = %(id)s"
)


def _queued(row: Sequence[Any]) -> QueuedNotification:
    payload = {str(key): str(value) for key, value in (row[6] or {}).items()}
    notification = NotificationRow(
        event_key=row[1], sink=row[2], event=row[3], name=row[4], created_at=row[5], payload=payload, cert_id=row[7]
    )
    return QueuedNotification(
        id=row[0], row=notification, state=NotificationState(row[8]), attempts=row[9], next_attempt_at=row[10],
        last_error=row[11], sent_at=row[12],
    )  # fmt: skip


class PostgresOutbox(PostgresConnection):
    """The notification outbox (``NotificationStore``)."""

    def enqueue_notification(self, row: NotificationRow, due: datetime) -> bool:
        params = {
            "event_key": row.event_key, "sink": row.sink, "event": row.event, "name": row.name,
            "cert_id": row.cert_id, "payload": Jsonb(dict(row.payload)), "created_at": row.created_at, "due": due,
        }  # fmt: skip

        def work(conn: psycopg.Connection[Any]) -> bool:
            return conn.execute(_SQL_ENQUEUE, params).rowcount == 1

        return self._run(f"queueing the {row.event} notification of {row.name} for {row.sink}", work)

    def claim_notifications(self, now: datetime, lease_until: datetime, limit: int) -> Sequence[QueuedNotification]:
        params = {"now": now, "lease_until": lease_until, "limit": limit}

        def work(conn: psycopg.Connection[Any]) -> list[QueuedNotification]:
            rows = conn.execute(_SQL_CLAIM, params).fetchall()
            return sorted((_queued(row) for row in rows), key=lambda item: item.id)

        return self._run("claiming the due notifications", work)

    def finish_notification(
        self, notification_id: int, state: NotificationState, at: datetime, *, error: str | None = None,
        retry_at: datetime | None = None,
    ) -> None:  # fmt: skip
        params = {"id": notification_id, "state": state.value, "at": at, "error": error, "retry_at": retry_at}
        self._run("recording a notification's delivery", lambda conn: conn.execute(_SQL_FINISH, params))

    def notifications(self) -> Sequence[QueuedNotification]:
        def work(conn: psycopg.Connection[Any]) -> list[QueuedNotification]:
            return [_queued(row) for row in conn.execute(_SQL_ALL)]

        return self._run("reading the notification outbox", work)
