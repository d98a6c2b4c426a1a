"""Queue each event once per sink, then deliver the due notifications, retried with backoff, audited.

Replicas share the work through the database alone (:mod:`certreconcile.actual.outbox`): the first
replica to queue an event wins (the others insert nothing), and a due row is claimed by one replica,
whose claim moves it a lease (:data:`LEASE`) ahead: a replica that dies mid-send leaves it to be sent
again after the lease. A failed delivery is due again after :func:`retry_delay`; after
:data:`MAX_ATTEMPTS` it is abandoned. Sent and abandoned notifications are audited (``notified``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from certreconcile.actual.outbox import NotificationRow, NotificationState, QueuedNotification
from certreconcile.actual.store import StateSession, StateStore
from certreconcile.audit.events import AuditAction, AuditEvent
from certreconcile.clock import Clock
from certreconcile.desired.model import NotifySpec
from certreconcile.desired.notify_sinks import EmailSinkConfig, WebhookSinkConfig
from certreconcile.errors import CertReconcileError
from certreconcile.notify.events import NotifyEvent
from certreconcile.notify.message import message_for
from certreconcile.notify.senders import SenderFactory, sender_for

__all__ = ["BATCH", "LEASE", "MAX_ATTEMPTS", "Delivered", "deliver_due", "enqueue", "retry_delay"]

log = logging.getLogger("certreconcile.notify")

RETRY_FIRST = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=1)
MAX_ATTEMPTS = 30  # about a day of retries: 30 s doubling to 1 h
LEASE = timedelta(minutes=5)  # a claim's lease, or twice the longest sink timeout if that is longer
BATCH = 100  # sent per pass, each claimed just before it is sent; the rest waits for the next cycle


def retry_delay(attempts: int) -> timedelta:
    """How long a notification waits after its ``attempts``-th failed delivery: 30 s doubling, at most 1 h."""
    delay: timedelta = RETRY_FIRST * (2 ** max(0, min(attempts - 1, 16)))
    return min(delay, RETRY_CAP)


@dataclass(frozen=True, slots=True)
class Delivered:
    queued: int = 0  # rows this replica inserted
    sent: int = 0
    retried: int = 0
    abandoned: int = 0


def enqueue(store: StateStore, notify: NotifySpec, events: Iterable[NotifyEvent], now: datetime) -> int:
    """One row per (event, sink wanting it), unless already queued; how many this call inserted."""
    queued = 0
    with store.session() as session:
        for event in events:
            for sink in notify.sinks.values():
                if event.event not in sink.events:
                    continue
                row = NotificationRow(event.key, sink.name, event.event, event.name, now, event.data, event.cert_id)
                queued += session.enqueue_notification(row, now)
    return queued


def deliver_due(
    store: StateStore,
    notify: NotifySpec | None,
    clock: Clock,
    actor: str,
    environ: Mapping[str, str],
    *,
    senders: SenderFactory = sender_for,
) -> Delivered:
    """Send the notifications due now (one batch): sent, retried later, or abandoned; each outcome recorded."""
    sent = retried = abandoned = 0
    with store.session() as session:
        for item in _claimed(session, notify, clock):
            spec = notify.sinks.get(item.row.sink) if notify is not None else None
            if spec is None:
                _abandon(session, item, clock.now(), actor, f"the sink {item.row.sink} is no longer declared")
                abandoned += 1
                continue
            try:
                senders(spec, environ).send(message_for(item.row), clock.now())
            except CertReconcileError as exc:
                error = exc.one_line()
            except Exception as exc:  # noqa: BLE001 - a library's bug fails this delivery only (retried)
                error = f"notify sink {spec.name}: {type(exc).__name__}"
            else:
                session.finish_notification(item.id, NotificationState.SENT, clock.now())
                _audit(session, item, clock.now(), actor, "sent")
                log.info("notified %s: %s %s", item.row.sink, item.row.event, item.row.name)
                sent += 1
                continue
            if item.attempts >= MAX_ATTEMPTS:
                _abandon(session, item, clock.now(), actor, error)
                abandoned += 1
                continue
            retry_at = clock.now() + retry_delay(item.attempts)
            session.finish_notification(item.id, NotificationState.PENDING, clock.now(), error=error, retry_at=retry_at)
            log.warning("notification to %s not sent (attempt %d, next at %s): %s",
                        item.row.sink, item.attempts, retry_at.isoformat(), error)  # fmt: skip
            retried += 1
    return Delivered(sent=sent, retried=retried, abandoned=abandoned)


def _claimed(session: StateSession, notify: NotifySpec | None, clock: Clock) -> Iterator[QueuedNotification]:
    """Due rows claimed one at a time (up to BATCH), each leased for longer than its send may take."""
    timeouts = [spec.config.timeout.delta for spec in (notify.sinks.values() if notify else ())
                if isinstance(spec.config, WebhookSinkConfig | EmailSinkConfig)]  # fmt: skip
    lease = max([LEASE, *(2 * timeout for timeout in timeouts)])
    for _ in range(BATCH):
        now = clock.now()
        claimed = session.claim_notifications(now, now + lease, 1)
        if not claimed:
            return
        yield claimed[0]


def _abandon(session: StateSession, item: QueuedNotification, now: datetime, actor: str, error: str) -> None:
    session.finish_notification(item.id, NotificationState.ABANDONED, now, error=error)
    _audit(session, item, now, actor, "abandoned", error)
    log.error("notification to %s abandoned after %d attempt(s): %s", item.row.sink, item.attempts, error)


def _audit(session: StateSession, item: QueuedNotification, now: datetime, actor: str, outcome: str,
           error: str | None = None) -> None:  # fmt: skip
    detail = {"event": item.row.event, "sink": item.row.sink, "outcome": outcome, "attempts": str(item.attempts),
              "event_key": item.row.event_key}  # fmt: skip
    if error is not None:
        detail["error"] = error
    session.append_audit(AuditEvent(item.row.cert_id, item.row.name, AuditAction.NOTIFIED, actor, now, detail))
