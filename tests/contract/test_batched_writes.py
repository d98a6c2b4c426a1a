"""The batched writes of a fan-out (``journal_many``, ``append_audit_many``, ``record_distributions``) and
of the status moves (``compare_and_set_statuses``): in both stores, exactly the rows the one-at-a-time
methods write, in the same order; all or nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from test_state_repository import T0, cert_row

from certreconcile.actual.model import DistributionState
from certreconcile.actual.postgres.batches import VALUES_UP_TO
from certreconcile.actual.store import DistributionRecord, JournalEntry, StateSession
from certreconcile.audit.events import AuditAction, AuditEvent
from certreconcile.domain.status import CertStatus, IllegalTransitionError
from certreconcile.errors import StateError


def _entries(run_id: int, key: str) -> list[JournalEntry]:
    return [
        JournalEntry(run_id, key, "shop", "deploy:t0", "done", {"cert_id": "c"}, at=T0),
        JournalEntry(run_id, key, "shop", "verify:t0", "done", {"attempts": "1"}, at=T0 + timedelta(seconds=1)),
        JournalEntry(run_id, key, "shop", "deploy:t1", "failed", {"error": "target t1: no é"}, at=T0),
        JournalEntry(run_id, key, "shop", "deploy:t2", "started", {}, at=None),  # the database's clock
    ]


def test_journal_many_writes_what_journal_writes_in_order(session: StateSession) -> None:
    run_id = session.start_run(None, "digest", T0)
    for entry in _entries(run_id, "one"):
        session.journal(entry)
    session.journal_many(_entries(run_id, "many"))
    session.journal_many([])
    one, many = session.journal_entries("one"), session.journal_entries("many")
    assert [replace(entry, idempotency_key="", at=None) for entry in many] == [
        replace(entry, idempotency_key="", at=None) for entry in one
    ]
    assert [entry.at for entry in many[:3]] == [T0, T0 + timedelta(seconds=1), T0]
    assert many[3].at is not None  # filled in, as journal() does


def test_journal_many_writes_nothing_when_one_entry_is_refused(session: StateSession) -> None:
    run_id = session.start_run(None, "digest", T0)
    entries = _entries(run_id, "bad")
    with pytest.raises(StateError):
        session.journal_many([*entries[:2], replace(entries[2], state="half-done")])
    with pytest.raises(StateError):
        session.journal_many([*entries[:2], replace(entries[2], run_id=run_id + 1000)])
    assert session.journal_entries("bad") == []


def _events(cert_id: str) -> list[AuditEvent]:
    return [
        AuditEvent(cert_id, "shop", AuditAction.DISTRIBUTED, "git:abc dev@example.com", T0, {"target": "t0"}),
        AuditEvent(cert_id, "shop", AuditAction.VERIFIED, "git:abc dev@example.com", T0, {"target": "t0", "x": "1"}),
        AuditEvent(cert_id, "shop", AuditAction.FAILED, "git:abc dev@example.com", T0 + timedelta(seconds=2),
                   {"target": "t1", "error": "target t1: refused ünicode"}),
        AuditEvent(None, "shop", AuditAction.FAILED, "user:alice", T0, {}),
    ]  # fmt: skip


def test_append_audit_many_writes_what_append_audit_writes_in_order(session: StateSession) -> None:
    row = cert_row()
    session.insert_certificate(row)
    for event in _events(row.id):
        session.append_audit(event)
    session.append_audit_many(_events(row.id))
    session.append_audit_many([])
    stored = [replace(event, id=None) for event in session.audit_events(name="shop")]
    assert stored == _events(row.id) * 2
    ids = [event.id for event in session.audit_events(name="shop")]
    assert ids == sorted(ids)


def test_append_audit_many_writes_nothing_when_one_event_is_refused(session: StateSession) -> None:
    row = cert_row()
    session.insert_certificate(row)
    events = _events(row.id)
    with pytest.raises(StateError, match="unknown audit action"):
        session.append_audit_many([*events[:2], replace(events[2], action="exploded")])
    with pytest.raises(StateError):
        session.append_audit_many([*events[:2], replace(events[2], cert_id=cert_row().id)])  # no such certificate
    assert session.audit_events(name="shop") == []


def test_record_distributions_upserts_like_record_distribution(session: StateSession) -> None:
    row = cert_row()
    session.insert_certificate(row)
    session.record_distribution(row.id, "edge", row.fingerprint, pushed_at=T0, verified_at=T0, last_error=None,
                                target_fingerprint="t-edge")  # fmt: skip
    later = T0 + timedelta(minutes=1)
    session.record_distributions(
        [
            DistributionRecord(row.id, "edge", "fp-new", later, None, "target edge: timeout", "t-edge-2"),
            DistributionRecord(row.id, "web", row.fingerprint, later, later, None, "t-web"),
            DistributionRecord(row.id, "down", row.fingerprint, None, None, "target down: refused", None),
        ]
    )
    session.record_distributions([])
    assert session.load_actual().certificates["shop"].distributions == {
        # a failed push keeps the fingerprint last verified there (record_distribution's rule)
        "edge": DistributionState("edge", "fp-new", later, None, "target edge: timeout", "t-edge-2", row.fingerprint),
        "web": DistributionState("web", row.fingerprint, later, later, None, "t-web", row.fingerprint),
        "down": DistributionState("down", row.fingerprint, None, None, "target down: refused", None, None),
    }


def test_record_distributions_writes_nothing_when_a_certificate_is_missing(session: StateSession) -> None:
    row = cert_row()
    session.insert_certificate(row)
    with pytest.raises(StateError) as raised:
        session.record_distributions(
            [
                DistributionRecord(row.id, "web", row.fingerprint, T0, T0, None, None),
                DistributionRecord(cert_row().id, "edge", "fp", T0, T0, None, None),
            ]
        )
    assert raised.value.code == "state-not-found"
    assert session.load_actual().certificates["shop"].distributions == {}


def test_record_distributions_in_a_transaction_rolls_it_back_when_a_certificate_is_missing(
    session: StateSession,
) -> None:
    row = cert_row()
    session.insert_certificate(row)
    run_id = session.start_run(None, "digest", T0)

    def fan_out() -> None:
        with session.transaction():
            session.journal_many(_entries(run_id, "rolled-back"))
            session.record_distributions([DistributionRecord(cert_row().id, "edge", "fp", T0, T0, None, None)])

    with pytest.raises(StateError):
        fan_out()
    assert session.journal_entries("rolled-back") == []
    assert session.load_actual().certificates["shop"].distributions == {}


def test_compare_and_set_statuses_moves_what_compare_and_set_status_would(session: StateSession) -> None:
    rows = [cert_row(name) for name in ("a", "b", "c")]
    for row in rows:
        session.insert_certificate(row)
    session.compare_and_set_status(rows[1].id, CertStatus.ACTIVE, CertStatus.EXPIRING_SOON)  # another writer was first
    gone = cert_row("d").id  # never stored
    active, soon, expired = CertStatus.ACTIVE, CertStatus.EXPIRING_SOON, CertStatus.EXPIRED
    moves = [(rows[0].id, active, soon), (rows[1].id, active, expired), (rows[2].id, active, expired)]
    moves.append((gone, active, expired))
    with session.transaction():
        assert session.compare_and_set_statuses(moves) == {rows[0].id, rows[2].id}
    # b: as the other writer left it
    assert [session.certificate_status(row.id) for row in rows] == [soon, soon, expired]
    assert session.compare_and_set_statuses(moves) == set()  # nothing is where it was expected any more
    assert session.compare_and_set_statuses([]) == set()


def test_compare_and_set_statuses_moves_nothing_when_one_move_is_refused(session: StateSession) -> None:
    rows = [cert_row(name) for name in ("a", "b")]
    for row in rows:
        session.insert_certificate(row)
    first = (rows[0].id, CertStatus.ACTIVE, CertStatus.EXPIRING_SOON)
    with pytest.raises(IllegalTransitionError):  # expiring_soon -> active is no transition
        session.compare_and_set_statuses([first, (rows[1].id, CertStatus.EXPIRING_SOON, CertStatus.ACTIVE)])
    with pytest.raises(ValueError, match="twice"):
        session.compare_and_set_statuses([first, (rows[0].id, CertStatus.ACTIVE, CertStatus.EXPIRED)])
    assert [session.certificate_status(row.id) for row in rows] == [CertStatus.ACTIVE, CertStatus.ACTIVE]


@pytest.mark.parametrize("size", [1, VALUES_UP_TO, VALUES_UP_TO + 1, 3 * VALUES_UP_TO])
def test_batches_on_either_side_of_the_values_limit_write_every_row_in_order(session: StateSession, size: int) -> None:
    """PostgreSQL sends up to VALUES_UP_TO rows as VALUES, more as arrays: the same rows either way."""
    row = cert_row()
    session.insert_certificate(row)
    run_id = session.start_run(None, "digest", T0)
    entries = [JournalEntry(run_id, "key", "shop", f"deploy:t{n}", "done", {"n": str(n), "q": 'a"\\b'},
                            at=T0 + timedelta(seconds=n)) for n in range(size)]  # fmt: skip
    session.journal_many(entries)
    assert session.journal_entries("key") == entries
    events = [AuditEvent(row.id, "shop", AuditAction.VERIFIED, "user:alice", T0 + timedelta(seconds=n), {"n": str(n)})
              for n in range(size)]  # fmt: skip
    session.append_audit_many(events)
    assert [replace(event, id=None) for event in session.audit_events(name="shop")] == events
    records = [DistributionRecord(row.id, f"t{n:03d}", row.fingerprint, T0, None, f"error {n}", None)
               for n in range(size)]  # fmt: skip
    session.record_distributions(records)
    distributions = session.load_actual().certificates["shop"].distributions
    assert sorted(distributions) == [record.target for record in records]
    assert {state.last_error for state in distributions.values()} == {record.last_error for record in records}
