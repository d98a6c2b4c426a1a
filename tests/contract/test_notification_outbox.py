"""The notification outbox part of the state-repository contract: InMemoryStore and PostgresStore alike."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from certreconcile.actual.outbox import NotificationRow, NotificationState
from certreconcile.actual.store import StateSession, StateStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(minutes=5)


def row(key: str = "issued:1", sink: str = "hook", event: str = "issued") -> NotificationRow:
    return NotificationRow(key, sink, event, "shop", T0, {"not_after": "2026-03-01T00:00:00+00:00"})


def test_enqueue_is_once_per_event_and_sink(session: StateSession) -> None:
    assert session.enqueue_notification(row(), T0)
    assert not session.enqueue_notification(row(), T0 + timedelta(hours=1))  # the same event again: nothing
    assert session.enqueue_notification(row(sink="mail"), T0)  # another sink: its own row
    assert session.enqueue_notification(row(key="issued:2"), T0)
    stored = session.notifications()
    assert [(n.row.event_key, n.row.sink, n.state, n.attempts) for n in stored] == [
        ("issued:1", "hook", NotificationState.PENDING, 0),
        ("issued:1", "mail", NotificationState.PENDING, 0),
        ("issued:2", "hook", NotificationState.PENDING, 0),
    ]
    assert stored[0].row.payload == {"not_after": "2026-03-01T00:00:00+00:00"}
    assert stored[0].next_attempt_at == T0  # the first enqueue's due time was kept


def test_claim_takes_due_rows_once_and_leases_them(session: StateSession) -> None:
    session.enqueue_notification(row(), T0)
    session.enqueue_notification(row(key="later"), T0 + timedelta(hours=1))
    claimed = session.claim_notifications(T0, T0 + LEASE, 10)
    assert [(n.row.event_key, n.attempts, n.next_attempt_at) for n in claimed] == [("issued:1", 1, T0 + LEASE)]
    assert session.claim_notifications(T0, T0 + LEASE, 10) == []  # leased: nobody else takes it
    again = session.claim_notifications(T0 + LEASE, T0 + 2 * LEASE, 10)  # the lease ran out (a crash)
    assert [(n.row.event_key, n.attempts) for n in again] == [("issued:1", 2)]


def test_claim_respects_the_limit_oldest_first(session: StateSession) -> None:
    for index in range(3):
        session.enqueue_notification(row(key=f"k{index}"), T0 + timedelta(seconds=3 - index))
    claimed = session.claim_notifications(T0 + timedelta(minutes=1), T0 + LEASE, 2)
    assert sorted(n.row.event_key for n in claimed) == ["k1", "k2"]


def test_finish_sent_retry_and_abandon(session: StateSession) -> None:
    for key in ("a", "b", "c"):
        session.enqueue_notification(row(key=key), T0)
    a, b, c = session.claim_notifications(T0, T0 + LEASE, 10)
    session.finish_notification(a.id, NotificationState.SENT, T0 + timedelta(seconds=1))
    retry_at = T0 + timedelta(minutes=1)
    session.finish_notification(b.id, NotificationState.PENDING, T0, error="refused", retry_at=retry_at)
    session.finish_notification(c.id, NotificationState.ABANDONED, T0, error="gone")
    by_key = {n.row.event_key: n for n in session.notifications()}
    assert by_key["a"].state is NotificationState.SENT and by_key["a"].sent_at == T0 + timedelta(seconds=1)
    assert by_key["b"].state is NotificationState.PENDING and by_key["b"].last_error == "refused"
    assert by_key["b"].next_attempt_at == T0 + timedelta(minutes=1)
    assert by_key["c"].state is NotificationState.ABANDONED
    assert session.claim_notifications(T0 + timedelta(seconds=59), T0 + LEASE, 10) == []
    retried = session.claim_notifications(T0 + timedelta(minutes=1), T0 + LEASE, 10)
    assert [(n.row.event_key, n.attempts) for n in retried] == [("b", 2)]  # sent and abandoned rows stay done


def test_concurrent_claims_never_share_a_row(store: StateStore) -> None:
    with store.session() as session:
        for index in range(40):
            session.enqueue_notification(row(key=f"k{index:02}"), T0)
    claimed: list[list[str]] = [[], []]
    barrier = threading.Barrier(2)

    def claimer(index: int) -> None:
        with store.session() as session:
            barrier.wait()
            while batch := session.claim_notifications(T0, T0 + LEASE, 3):
                claimed[index] += [n.row.event_key for n in batch]

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(claimed[0] + claimed[1]) == [f"k{index:02}" for index in range(40)]
