"""The state-repository contract: InMemoryStore and PostgresStore behave alike.

Every protocol method of ``StateSession``/``StateStore`` is exercised against both
implementations, so the fake cannot drift from the real thing.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from certreconcile.actual.model import DistributionState, IssuanceBackoff
from certreconcile.actual.store import (
    AcmeOrderRecord,
    CertificateRow,
    FollowedCommit,
    JournalEntry,
    KeyRefTable,
    LocalCaRecord,
    RenewalInfoRecord,
    StateSession,
    StateStore,
    StoredKeyRef,
)
from certreconcile.audit.events import AuditAction, AuditEvent
from certreconcile.desired.model import OnDelete
from certreconcile.domain.keys import KeyRef, KeyType
from certreconcile.domain.status import CertStatus, IllegalTransitionError
from certreconcile.errors import StateError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def key_ref(key_id: str = "master-1") -> KeyRef:
    envelope = json.dumps({"kms": "local", "key_id": key_id, "wrapped_dek": "AAAA", "nonce": "BBBB", "ct": "CC"})
    return KeyRef(envelope_json=envelope, kms="local", key_id=key_id)


def cert_row(
    name: str = "shop",
    *,
    status: CertStatus = CertStatus.ACTIVE,
    created_at: datetime = T0,
    not_before: datetime = T0,
    domains: tuple[str, ...] = ("shop.example.com", "www.shop.example.com"),
    cert_id: str | None = None,
) -> CertificateRow:
    ident = cert_id or str(uuid.uuid4())
    return CertificateRow(
        id=ident,
        name=name,
        domains=domains,
        issuer="letsencrypt",
        key_type=KeyType.ECDSA_P256,
        serial_number=f"serial-{ident}",
        not_before=not_before,
        not_after=not_before + timedelta(days=90),
        status=status,
        fingerprint=f"fp-{ident}",
        key_ref=key_ref(),
        cert_pem=f"-----BEGIN CERTIFICATE-----\n{ident}\n-----END CERTIFICATE-----\n",
        chain_pem="chain\n",
        on_delete=OnDelete.RETIRE,
        issuer_fingerprint="issuer-fp",
        created_at=created_at,
    )


# --- reading ---------------------------------------------------------------------------


def test_insert_then_load_actual_round_trips(session: StateSession) -> None:
    row = cert_row("shop")
    other = cert_row("api", domains=("api.example.com",))
    session.insert_certificate(row)
    session.insert_certificate(other)

    state = session.load_actual()

    assert list(state.certificates) == ["api", "shop"]  # name order
    shop = state.certificates["shop"]
    assert shop.id == row.id
    assert shop.domains == ("shop.example.com", "www.shop.example.com")
    assert state.certificates["api"].domains == ("api.example.com",)
    assert (shop.issuer, shop.key_type, shop.serial_number) == (
        "letsencrypt",
        KeyType.ECDSA_P256,
        row.serial_number,
    )
    assert (shop.not_before, shop.not_after) == (row.not_before, row.not_after)
    assert (shop.status, shop.fingerprint, shop.on_delete) == (
        CertStatus.ACTIVE,
        row.fingerprint,
        OnDelete.RETIRE,
    )
    assert shop.has_key
    assert shop.issuer_fingerprint == "issuer-fp"
    assert shop.distributions == {}
    assert shop.open_rotation is None
    assert state.meta.serial == 0
    assert state.meta == session.meta()
    assert state.backoff_until == {}


def test_empty_store_loads_empty_state(session: StateSession) -> None:
    state = session.load_actual()
    assert state.certificates == {}
    assert session.current_certificate("shop") is None


def test_single_reads(session: StateSession) -> None:
    row = cert_row()
    session.insert_certificate(row)
    assert session.certificate_pems(row.id) == (row.cert_pem, row.chain_pem)
    assert session.key_ref(row.id) == row.key_ref
    assert session.certificate_status(row.id) is CertStatus.ACTIVE
    current = session.current_certificate("shop")
    assert current is not None
    assert current == session.load_actual().certificates["shop"]


def test_reads_of_unknown_certificate_raise(session: StateSession) -> None:
    missing = str(uuid.uuid4())
    for read in (session.certificate_pems, session.key_ref, session.certificate_status):
        with pytest.raises(StateError) as caught:
            read(missing)
        assert caught.value.code == "state-not-found"


def test_key_ref_must_match_its_envelope(session: StateSession) -> None:
    bad = KeyRef(envelope_json=json.dumps({"kms": "aws", "key_id": "zz-9"}), kms="local", key_id="x")
    with pytest.raises(StateError) as caught:
        session.insert_certificate(replace(cert_row(), key_ref=bad))
    assert "envelope" in caught.value.message
    assert "zz-9" not in caught.value.message


def test_duplicate_serial_number_is_a_conflict(session: StateSession) -> None:
    row = cert_row()
    session.insert_certificate(row)
    twin = replace(cert_row("api"), serial_number=row.serial_number)
    with pytest.raises(StateError) as caught:
        session.insert_certificate(twin)
    assert caught.value.code == "state-conflict"
    assert "BEGIN" not in caught.value.message  # never quotes the row


def test_two_live_certificates_for_one_name_conflict(session: StateSession) -> None:
    session.insert_certificate(cert_row("shop", status=CertStatus.ISSUED))
    with pytest.raises(StateError) as caught:
        session.insert_certificate(cert_row("shop", status=CertStatus.ISSUED, created_at=T0 + timedelta(hours=1)))
    assert caught.value.code == "state-conflict"


# --- rotation and current-row selection ----------------------------------------------


def test_rotation_current_row_and_completion(session: StateSession) -> None:
    old = cert_row("shop", status=CertStatus.ACTIVE)
    session.insert_certificate(old)
    assert session.set_status(old.id, CertStatus.ROTATING) is CertStatus.ACTIVE
    rotation_id = session.open_rotation(old.id, T0 + timedelta(days=60))
    assert session.open_rotation(old.id, T0 + timedelta(days=61)) == rotation_id  # resumable

    state = session.load_actual()
    assert state.certificates["shop"].id == old.id
    assert state.certificates["shop"].open_rotation is not None
    assert state.certificates["shop"].open_rotation.new_cert_id is None

    new = cert_row(
        "shop",
        status=CertStatus.ISSUED,
        created_at=T0 + timedelta(days=60),
        not_before=T0 + timedelta(days=60),
    )
    session.insert_certificate(new)  # 'rotating' + 'issued' coexist
    session.attach_rotation(rotation_id, new.id)

    current = session.load_actual().certificates["shop"]
    assert current.id == new.id  # the newest non-superseded row
    assert current.open_rotation is not None
    assert current.open_rotation.rotation_id == rotation_id
    assert current.open_rotation.old_cert_id == old.id
    assert current.open_rotation.new_cert_id == new.id
    assert current.open_rotation.triggered_at == T0 + timedelta(days=60)
    replacing = session.rotation_replacing(new.id)
    assert replacing is not None
    assert replacing.rotation_id == rotation_id

    session.set_status(new.id, CertStatus.ACTIVE)
    session.complete_rotation(rotation_id, T0 + timedelta(days=60, hours=1))
    session.complete_rotation(rotation_id, T0 + timedelta(days=60, hours=2))  # idempotent
    session.set_status(old.id, CertStatus.SUPERSEDED)

    current = session.load_actual().certificates["shop"]
    assert current.id == new.id
    assert current.status is CertStatus.ACTIVE
    assert current.open_rotation is None
    assert session.rotation_replacing(new.id) is None


def test_superseded_newest_row_is_skipped(session: StateSession) -> None:
    old = cert_row("shop", status=CertStatus.ROTATING)
    newer = cert_row("shop", status=CertStatus.SUPERSEDED, created_at=T0 + timedelta(days=1))
    session.insert_certificate(old)
    session.insert_certificate(newer)
    current = session.current_certificate("shop")
    assert current is not None
    assert current.id == old.id


def test_ties_on_created_at_are_broken_by_not_before(session: StateSession) -> None:
    early = cert_row("shop", status=CertStatus.ROTATING, not_before=T0)
    late = cert_row("shop", status=CertStatus.ISSUED, not_before=T0 + timedelta(days=1))
    session.insert_certificate(late)
    session.insert_certificate(early)
    current = session.current_certificate("shop")
    assert current is not None
    assert current.id == late.id


def test_complete_rotation_needs_a_replacement(session: StateSession) -> None:
    old = cert_row()
    session.insert_certificate(old)
    rotation_id = session.open_rotation(old.id, T0)
    with pytest.raises(StateError):
        session.complete_rotation(rotation_id, T0)
    with pytest.raises(StateError):
        session.attach_rotation(rotation_id + 1000, old.id)
    with pytest.raises(StateError):
        session.complete_rotation(rotation_id + 1000, T0)


# --- status ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (CertStatus.ISSUED, CertStatus.ACTIVE),
        (CertStatus.ACTIVE, CertStatus.EXPIRING_SOON),
        (CertStatus.EXPIRING_SOON, CertStatus.ROTATING),
        (CertStatus.ROTATING, CertStatus.SUPERSEDED),
        (CertStatus.EXPIRING_SOON, CertStatus.EXPIRED),
        (CertStatus.ROTATING, CertStatus.EXPIRED),
        (CertStatus.SUPERSEDED, CertStatus.REVOKED),
        (CertStatus.EXPIRED, CertStatus.REVOKED),
        (CertStatus.ACTIVE, CertStatus.ACTIVE),
    ],
)
def test_legal_transitions(session: StateSession, old: CertStatus, new: CertStatus) -> None:
    row = cert_row(status=old)
    session.insert_certificate(row)
    assert session.set_status(row.id, new) is old
    assert session.certificate_status(row.id) is new


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (CertStatus.REVOKED, CertStatus.ACTIVE),
        (CertStatus.EXPIRED, CertStatus.ACTIVE),
        (CertStatus.ISSUED, CertStatus.ROTATING),
        (CertStatus.SUPERSEDED, CertStatus.ACTIVE),
        (CertStatus.SUPERSEDED, CertStatus.EXPIRED),  # history stays history (domain/status.py)
        (CertStatus.EXPIRING_SOON, CertStatus.ACTIVE),  # never undone
    ],
)
def test_illegal_transitions_raise_and_change_nothing(session: StateSession, old: CertStatus, new: CertStatus) -> None:
    row = cert_row(status=old)
    session.insert_certificate(row)
    with pytest.raises(IllegalTransitionError):
        session.set_status(row.id, new)
    assert session.certificate_status(row.id) is old


def test_abandoned_rotation_cannot_reactivate_while_replacement_is_live(session: StateSession) -> None:
    old = cert_row("shop", status=CertStatus.ROTATING)
    new = cert_row("shop", status=CertStatus.ISSUED, created_at=T0 + timedelta(days=1))
    session.insert_certificate(old)
    session.insert_certificate(new)
    with pytest.raises(StateError) as caught:
        session.set_status(old.id, CertStatus.ACTIVE)
    assert caught.value.code == "state-conflict"
    session.set_status(new.id, CertStatus.REVOKED)
    assert session.set_status(old.id, CertStatus.ACTIVE) is CertStatus.ROTATING


def test_set_status_of_unknown_certificate(session: StateSession) -> None:
    with pytest.raises(StateError) as caught:
        session.set_status(str(uuid.uuid4()), CertStatus.ACTIVE)
    assert caught.value.code == "state-not-found"


def test_set_status_if_allowed_moves_only_where_the_lifecycle_allows(session: StateSession) -> None:
    row = cert_row(status=CertStatus.ACTIVE)
    session.insert_certificate(row)
    # active -> superseded is not a transition: the row stays as it is, no error.
    assert session.set_status_if_allowed(row.id, CertStatus.SUPERSEDED) is CertStatus.ACTIVE
    assert session.certificate_status(row.id) is CertStatus.ACTIVE
    assert session.set_status_if_allowed(row.id, CertStatus.ROTATING) is CertStatus.ACTIVE
    assert session.certificate_status(row.id) is CertStatus.ROTATING
    with session.batch():  # as apply closes a rotation
        assert session.set_status_if_allowed(row.id, CertStatus.SUPERSEDED) is CertStatus.ROTATING
    assert session.certificate_status(row.id) is CertStatus.SUPERSEDED
    assert session.set_status_if_allowed(row.id, CertStatus.SUPERSEDED) is CertStatus.SUPERSEDED  # already there
    assert session.certificate_status(row.id) is CertStatus.SUPERSEDED
    with pytest.raises(StateError) as caught:
        session.set_status_if_allowed(str(uuid.uuid4()), CertStatus.SUPERSEDED)
    assert caught.value.code == "state-not-found"


def test_compare_and_set_status_moves_only_from_the_expected_status(session: StateSession) -> None:
    row = cert_row(status=CertStatus.ACTIVE)
    session.insert_certificate(row)
    assert session.compare_and_set_status(row.id, CertStatus.ACTIVE, CertStatus.EXPIRING_SOON) is True
    assert session.certificate_status(row.id) is CertStatus.EXPIRING_SOON
    # Another writer was first: the expected status is gone, nothing changes.
    assert session.compare_and_set_status(row.id, CertStatus.ACTIVE, CertStatus.EXPIRED) is False
    assert session.certificate_status(row.id) is CertStatus.EXPIRING_SOON
    assert session.compare_and_set_status(str(uuid.uuid4()), CertStatus.ACTIVE, CertStatus.EXPIRED) is False
    with pytest.raises(IllegalTransitionError):
        session.compare_and_set_status(row.id, CertStatus.EXPIRING_SOON, CertStatus.ACTIVE)
    assert session.certificate_status(row.id) is CertStatus.EXPIRING_SOON
    with session.transaction():  # inside a transaction too
        assert session.compare_and_set_status(row.id, CertStatus.EXPIRING_SOON, CertStatus.EXPIRED) is True
    assert session.certificate_status(row.id) is CertStatus.EXPIRED


def test_lapsed_certificates_lists_rows_in_service_past_not_after(session: StateSession) -> None:
    day = timedelta(days=1)
    # cert_row: not_after = not_before + 90 days
    first = cert_row("shop", status=CertStatus.ACTIVE, not_before=T0 - 92 * day)  # lapsed 2 days ago
    second = cert_row("api", status=CertStatus.EXPIRING_SOON, not_before=T0 - 91 * day, domains=("a.example",))
    retired = cert_row("gone", status=CertStatus.ACTIVE, not_before=T0 - 90 * day, domains=("g.example",))
    for row in (first, second, retired):
        session.insert_certificate(row)
    session.retire(retired.id, T0 - 10 * day)
    for status in (CertStatus.SUPERSEDED, CertStatus.ROTATING, CertStatus.EXPIRED, CertStatus.REVOKED):
        session.insert_certificate(cert_row("hist", status=status, not_before=T0 - 95 * day, domains=("h.example",)))
    session.insert_certificate(cert_row("live", not_before=T0 - 89 * day, domains=("l.example",)))  # valid a day more
    lapsed = session.lapsed_certificates(T0, 10)
    assert [(r.cert_id, r.name, r.status, r.not_after) for r in lapsed] == [
        (first.id, "shop", CertStatus.ACTIVE, first.not_after),
        (second.id, "api", CertStatus.EXPIRING_SOON, second.not_after),
        (retired.id, "gone", CertStatus.ACTIVE, retired.not_after),  # at not_after exactly: lapsed
    ]
    assert [r.cert_id for r in session.lapsed_certificates(T0, 2)] == [first.id, second.id]
    assert session.lapsed_certificates(T0 - 3 * day, 10) == []


def test_retire_hides_every_row_of_the_name(session: StateSession) -> None:
    expired = cert_row("shop", status=CertStatus.EXPIRED)
    current = cert_row("shop", status=CertStatus.ACTIVE, created_at=T0 + timedelta(days=1))
    session.insert_certificate(expired)
    session.insert_certificate(current)
    session.insert_certificate(cert_row("api"))
    session.retire(current.id, T0 + timedelta(days=2))
    assert "shop" not in session.load_actual().certificates
    assert session.current_certificate("shop") is None
    assert "api" in session.load_actual().certificates
    # The name can be declared again and issued anew.
    session.insert_certificate(cert_row("shop", status=CertStatus.ISSUED, created_at=T0 + timedelta(days=3)))
    assert "shop" in session.load_actual().certificates


# --- distributions ----------------------------------------------------------------------


def test_distribution_upsert_and_remove(session: StateSession) -> None:
    row = cert_row()
    session.insert_certificate(row)
    session.record_distribution(
        row.id,
        "edge",
        row.fingerprint,
        pushed_at=T0,
        verified_at=None,
        last_error="timeout",
        target_fingerprint="t1",
    )
    session.record_distribution(
        row.id,
        "edge",
        row.fingerprint,
        pushed_at=T0,
        verified_at=T0 + timedelta(minutes=1),
        last_error=None,
        target_fingerprint="t1",
    )
    session.record_distribution(
        row.id,
        "deploy",
        row.fingerprint,
        pushed_at=None,
        verified_at=None,
        last_error=None,
        target_fingerprint=None,
    )
    distributions = session.load_actual().certificates["shop"].distributions
    assert distributions == {
        "deploy": DistributionState("deploy", row.fingerprint, None, None, None, None),
        "edge": DistributionState("edge", row.fingerprint, T0, T0 + timedelta(minutes=1), None, "t1", row.fingerprint),
    }
    current = session.current_certificate("shop")
    assert current is not None
    assert current.distributions == distributions

    session.remove_distribution("shop", "edge")
    session.remove_distribution("shop", "never-there")
    assert set(session.load_actual().certificates["shop"].distributions) == {"deploy"}


def test_distribution_follows_the_name_across_rotation(session: StateSession) -> None:
    old = cert_row("shop", status=CertStatus.ROTATING)
    new = cert_row("shop", status=CertStatus.ISSUED, created_at=T0 + timedelta(days=1))
    session.insert_certificate(old)
    session.insert_certificate(new)
    session.record_distribution(
        old.id,
        "edge",
        old.fingerprint,
        pushed_at=T0,
        verified_at=T0,
        last_error=None,
        target_fingerprint=None,
    )
    assert session.load_actual().certificates["shop"].distributions["edge"].fingerprint == old.fingerprint
    session.record_distribution(
        new.id,
        "edge",
        new.fingerprint,
        pushed_at=T0,
        verified_at=None,
        last_error=None,
        target_fingerprint=None,
    )
    edge = session.load_actual().certificates["shop"].distributions["edge"]
    assert edge.fingerprint == new.fingerprint
    # The new certificate was pushed but not proven: the target last proved it served the old one.
    assert edge.verified_fingerprint == old.fingerprint
    session.record_distribution(
        new.id, "edge", new.fingerprint, pushed_at=T0, verified_at=T0, last_error=None, target_fingerprint=None
    )
    assert session.load_actual().certificates["shop"].distributions["edge"].verified_fingerprint == new.fingerprint


def test_distribution_of_unknown_certificate_raises(session: StateSession) -> None:
    with pytest.raises(StateError):
        session.record_distribution(
            str(uuid.uuid4()),
            "edge",
            "fp",
            pushed_at=None,
            verified_at=None,
            last_error=None,
            target_fingerprint=None,
        )


# --- audit ------------------------------------------------------------------------------


def test_audit_append_and_filter(session: StateSession) -> None:
    row = cert_row()
    session.insert_certificate(row)
    events = [
        AuditEvent(None, "shop", AuditAction.FAILED, "automation:renewal", T0, {"error": "rate limited"}),
        AuditEvent(row.id, "shop", AuditAction.ISSUED, "git:abc ops@example.com", T0 + timedelta(seconds=1)),
        AuditEvent(
            row.id,
            "shop",
            AuditAction.DISTRIBUTED,
            "git:abc ops@example.com",
            T0 + timedelta(seconds=2),
            {"target": "edge"},
        ),
        AuditEvent(None, "api", AuditAction.FAILED, "user:alice", T0 + timedelta(seconds=3)),
    ]
    for event in events:
        session.append_audit(event)

    stored = session.audit_events()
    assert [(e.name, e.action, e.actor, e.at, dict(e.detail), e.cert_id) for e in stored] == [
        (e.name, e.action, e.actor, e.at, dict(e.detail), e.cert_id) for e in events
    ]
    ids = [e.id for e in stored]
    assert all(i is not None for i in ids)
    assert ids == sorted(ids)
    assert [e.action for e in session.audit_events(name="shop")] == ["failed", "issued", "distributed"]
    assert [e.name for e in session.audit_events(action="failed")] == ["shop", "api"]
    assert [e.action for e in session.audit_events(name="shop", action="issued")] == ["issued"]
    assert [e.action for e in session.audit_events(limit=2)] == ["distributed", "failed"]  # the newest two


def test_audit_filters_by_actor_prefix_and_time(session: StateSession) -> None:
    row = cert_row()
    session.insert_certificate(row)
    actors = ["git:abc ops@example.com", "git:def dev@example.com", "user:alice", "user:al_ce", "automation:renewal"]
    for offset, actor in enumerate(actors):
        session.append_audit(AuditEvent(row.id, "shop", AuditAction.VERIFIED, actor, T0 + timedelta(minutes=offset)))

    def actors_of(**filters: object) -> list[str]:
        return [event.actor for event in session.audit_events(**filters)]  # type: ignore[arg-type]

    assert actors_of(actor="git:") == actors[:2]
    assert actors_of(actor="git:def") == ["git:def dev@example.com"]
    assert actors_of(actor="user:al_") == ["user:al_ce"]  # `_` is literal, not a wildcard
    assert actors_of(actor="%") == []
    assert actors_of(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == actors[1:3]
    assert actors_of(actor="user:", since=T0 + timedelta(minutes=3)) == ["user:al_ce"]
    assert actors_of(actor="git:", limit=1) == ["git:def dev@example.com"]


def test_audit_rejects_unknown_action_and_certificate(session: StateSession) -> None:
    with pytest.raises(StateError):
        session.append_audit(AuditEvent(None, "shop", "deleted", "user:alice", T0))
    with pytest.raises(StateError):
        session.append_audit(AuditEvent(str(uuid.uuid4()), "shop", AuditAction.ISSUED, "user:alice", T0))
    assert session.audit_events() == []


# --- runs and journal -------------------------------------------------------------------


def test_runs_and_journal(session: StateSession) -> None:
    run_id = session.start_run("abc123", "sha256:digest", T0)
    other_run = session.start_run(None, "sha256:other", T0)
    assert other_run != run_id
    session.journal(JournalEntry(run_id, "key-1", "shop", "key-generated", "started", at=T0))
    session.journal(JournalEntry(run_id, "key-1", "shop", "key-generated", "done", {"key": "ref"}, at=T0))
    session.journal(JournalEntry(run_id, "key-2", "api", "order-created", "started"))
    session.journal(JournalEntry(other_run, "key-1", "shop", "certificate-stored", "done"))
    entries = session.journal_entries("key-1")
    assert [(e.run_id, e.step, e.state) for e in entries] == [
        (run_id, "key-generated", "started"),
        (run_id, "key-generated", "done"),
        (other_run, "certificate-stored", "done"),
    ]
    assert dict(entries[1].detail) == {"key": "ref"}
    assert entries[0].at == T0
    assert entries[2].at is not None  # stamped by the store
    assert session.journal_entries("nothing") == []
    session.finish_run(run_id, "succeeded", T0 + timedelta(minutes=1))
    with pytest.raises(StateError):
        session.finish_run(run_id + 1000, "succeeded", T0)
    with pytest.raises(StateError):
        session.journal(JournalEntry(run_id + 1000, "key-3", "shop", "x", "started"))


# --- meta, local CA, backoff ------------------------------------------------------------


def test_bump_serial(session: StateSession) -> None:
    lineage = session.meta().lineage
    uuid.UUID(lineage)
    assert session.meta().serial == 0
    assert session.bump_serial() == 1
    assert session.bump_serial() == 2
    assert session.meta().serial == 2
    assert session.meta().lineage == lineage
    assert session.load_actual().meta.serial == 2


def test_followed_commit_is_a_compare_and_set(session: StateSession) -> None:
    first = FollowedCommit("file:///srv/certs.git#main:.", "a" * 40)
    second = FollowedCommit("file:///srv/certs.git#main:.", "b" * 40)
    assert session.followed_commit() is None
    assert session.follow_commit(first, second) is False  # nothing followed yet: not `first`
    assert session.follow_commit(None, first) is True
    assert session.follow_commit(None, second) is False  # another replica moved it first
    assert session.followed_commit() == first
    assert session.follow_commit(first, second) is True
    assert session.followed_commit() == second
    assert session.meta().serial == 0  # following a commit changes no certificate


def test_local_ca_first_writer_wins(session: StateSession) -> None:
    assert session.get_local_ca("internal") is None
    first = LocalCaRecord("internal", "CA-1", key_ref("k1"))
    second = LocalCaRecord("internal", "CA-2", key_ref("k2"))
    assert session.put_local_ca(first) == first
    assert session.put_local_ca(second) == first
    assert session.get_local_ca("internal") == first


def test_backoff(session: StateSession) -> None:
    assert session.record_failure("shop", T0, "d1") == T0 + timedelta(hours=1)
    assert session.record_failure("shop", T0 + timedelta(hours=1), "d1") == T0 + timedelta(hours=3)
    assert session.record_failure("api", T0, None) == T0 + timedelta(hours=1)
    assert session.load_actual().backoff_until == {
        "api": T0 + timedelta(hours=1),
        "shop": T0 + timedelta(hours=3),
    }
    assert session.load_actual().backoffs["shop"] == IssuanceBackoff(
        failures=2, last_failure_at=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3), declaration_digest="d1"
    )
    assert session.failure_count("shop") == 2  # type: ignore[attr-defined]
    session.clear_failures("shop")
    session.clear_failures("never-failed")
    assert session.load_actual().backoff_until == {"api": T0 + timedelta(hours=1)}


def test_backoff_doubles_to_a_cap_and_resets_with_the_declaration(session: StateSession) -> None:
    waits = []
    for failure in range(8):
        at = T0 + timedelta(days=failure)
        waits.append(session.record_failure("shop", at, "d1") - at)
    assert [wait / timedelta(hours=1) for wait in waits] == [1, 2, 4, 8, 16, 32, 32, 32]
    assert session.load_actual().backoffs["shop"].failures == 8
    at = T0 + timedelta(days=30)
    assert session.record_failure("shop", at, "d2") == at + timedelta(hours=1)  # another declaration: reset
    assert session.load_actual().backoffs["shop"] == IssuanceBackoff(1, at, at + timedelta(hours=1), "d2")


# --- issuance history (Let's Encrypt budgets) ---------------------------------------------

LE = "https://acme-v02.api.letsencrypt.org/directory"


def _acme_certificate(
    session: StateSession,
    name: str,
    created_at: datetime,
    *,
    domains: tuple[str, ...],
    directory: str | None = LE,
    ari_replaces: str | None = None,
    order_at: datetime | None = None,
) -> CertificateRow:
    row = replace(
        cert_row(name, created_at=created_at, not_before=created_at, domains=domains, status=CertStatus.SUPERSEDED),
        ari_replaces=ari_replaces,
    )
    session.insert_certificate(row)
    if directory is not None:
        session.save_acme_order(
            AcmeOrderRecord(f"key-{row.id}", name, f"https://ca/order/{row.id}", "valid", directory, cert_id=row.id),
            order_at or created_at,
        )
    return row


def test_issuance_history_reads_recent_acme_certificates_and_orders(session: StateSession) -> None:
    now = datetime.now(UTC)
    hour, day = timedelta(hours=1), timedelta(days=1)
    _acme_certificate(session, "old", now - 8 * day, domains=("old.example.com",))  # outside the 7 days
    _acme_certificate(session, "shop", now - 5 * day, domains=("shop.example.com", "www.shop.example.com"))
    _acme_certificate(session, "shop", now - 2 * day, domains=("shop.example.com", "www.shop.example.com"))
    _acme_certificate(session, "api", now - hour, domains=("api.example.com",), ari_replaces="aki.serial")
    _acme_certificate(session, "local", now - hour, domains=("local.example.com",), directory=None)  # no order
    _acme_certificate(session, "stg", now - 4 * hour, domains=("stg.example.com",), directory=LE + "x")

    history = session.load_actual().issuance_history

    shop = frozenset({"shop.example.com", "www.shop.example.com"})
    assert [(p.directory_url, p.domains, p.ari_renewal, p.renewal) for p in history.issuances] == [
        (LE, shop, False, False),
        (LE, shop, False, True),  # same names, same issuer, earlier: a renewal
        (LE + "x", frozenset({"stg.example.com"}), False, False),
        (LE, frozenset({"api.example.com"}), True, False),
    ]
    assert all(now - 7 * day <= p.created_at <= now for p in history.issuances)
    # Orders: only the last 3 hours (the 4-hour-old one is out), with their ARI flag.
    assert [(o.directory_url, o.ari_renewal) for o in history.orders] == [(LE, True)]


def test_issuance_history_counts_back_from_the_callers_clock(session: StateSession) -> None:
    """A caller running on an injected clock (a simulation, ahead of the database's) reads its own window."""
    later = datetime.now(UTC) + timedelta(days=100)
    hour, day = timedelta(hours=1), timedelta(days=1)
    _acme_certificate(session, "shop", later - 2 * day, domains=("shop.example.com",))
    _acme_certificate(session, "api", later - hour, domains=("api.example.com",))
    _acme_certificate(session, "old", later - 9 * day, domains=("old.example.com",))

    at_later = session.load_actual(later).issuance_history
    assert sorted(next(iter(p.domains)) for p in at_later.issuances) == ["api.example.com", "shop.example.com"]
    assert len(at_later.orders) == 1  # the last 3 hours before `later`
    assert session.issuance_history(later) == at_later
    # Without a clock, the store's own: the same rows counted from today (they are in its future).
    assert len(session.load_actual().issuance_history.issuances) == 3


def test_issuance_history_is_empty_without_acme(session: StateSession) -> None:
    session.insert_certificate(cert_row("shop", created_at=datetime.now(UTC)))
    history = session.load_actual().issuance_history
    assert history.issuances == ()
    assert history.orders == ()


# --- transactions and locks -------------------------------------------------------------


def test_transaction_rolls_back_on_error(session: StateSession) -> None:
    row = cert_row()

    def write_then_fail() -> None:
        with session.transaction():
            session.insert_certificate(row)
            session.bump_serial()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert session.load_actual().certificates == {}
    assert session.meta().serial == 0
    with session.transaction():
        session.insert_certificate(row)
        session.bump_serial()
    assert session.meta().serial == 1
    assert "shop" in session.load_actual().certificates


def test_batch_commits_its_writes_together_and_none_when_it_fails(session: StateSession) -> None:
    row = cert_row()

    def write_then_fail() -> None:
        with session.batch():
            session.insert_certificate(row)
            session.bump_serial()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert session.load_actual().certificates == {}

    def write_twice() -> None:
        with session.batch():  # a write the database refuses
            session.insert_certificate(row)
            session.insert_certificate(row)  # the same id again

    with pytest.raises(StateError) as conflict:
        write_twice()
    assert conflict.value.code == "state-conflict"
    assert session.load_actual().certificates == {}  # the first insert went with it
    other = cert_row("api")
    with session.batch():
        session.insert_certificate(row)
        session.compare_and_set_status(row.id, CertStatus.ACTIVE, CertStatus.EXPIRING_SOON)
        assert session.set_status(row.id, CertStatus.ROTATING) is CertStatus.EXPIRING_SOON  # a read inside
        session.insert_certificate(other)
    assert session.meta().serial == 0
    current = session.current_certificate("shop")
    assert current is not None and current.status is CertStatus.ROTATING
    assert session.current_certificate("api") is not None


def test_saving_an_order_returns_the_one_it_replaced(session: StateSession) -> None:
    first = AcmeOrderRecord("key-1", "shop", "https://ca/order/1", "pending", LE, cert_id=str(uuid.uuid4()))
    assert session.save_acme_order(first, T0) is None
    valid = replace(first, state="valid")
    assert session.save_acme_order(valid, T0) == first
    assert session.acme_order("key-1") == valid


def test_leaf_pems_and_renewal_infos_of_several_certificates(session: StateSession) -> None:
    rows = [cert_row(name) for name in ("a", "b", "c")]
    for row in rows:
        session.insert_certificate(row)
    missing = str(uuid.uuid4())
    assert session.leaf_pems([rows[0].id, rows[2].id, missing]) == {rows[0].id: rows[0].cert_pem,
                                                                      rows[2].id: rows[2].cert_pem}  # fmt: skip
    record = RenewalInfoRecord(rows[1].id, T0, T0 + timedelta(days=1), T0 + timedelta(hours=6), T0, None)
    session.save_renewal_infos([record])
    assert session.renewal_infos([rows[0].id, rows[1].id, missing]) == {rows[1].id: record}
    assert session.renewal_infos([]) == {} and session.leaf_pems([]) == {}


def test_renewal_infos_are_saved_in_one_call_skipping_certificates_gone(session: StateSession) -> None:
    rows = [cert_row(name) for name in ("a", "b")]
    for row in rows:
        session.insert_certificate(row)
    old = RenewalInfoRecord(rows[0].id, T0, T0 + timedelta(days=1), T0 + timedelta(hours=6), T0, None)
    session.save_renewal_infos([old])
    later = T0 + timedelta(hours=7)
    fresh = [
        RenewalInfoRecord(
            rows[0].id, later, later + timedelta(days=2), later + timedelta(hours=6), later, "https://x/1"
        ),
        RenewalInfoRecord(rows[1].id, later, later + timedelta(days=3), later + timedelta(hours=6), later, None),
        RenewalInfoRecord(str(uuid.uuid4()), later, later, later, later, None),  # its certificate is gone
    ]
    session.save_renewal_infos(fresh)
    session.save_renewal_infos([])
    assert session.renewal_infos([rows[0].id, rows[1].id, fresh[2].cert_id]) == {
        rows[0].id: fresh[0], rows[1].id: fresh[1]}  # fmt: skip


def test_a_superseded_certificate_loses_its_renewal_info_and_gets_none_again(session: StateSession) -> None:
    """Nobody asks the CA about a superseded certificate: its stored answer goes (migration 0020), whichever
    call superseded it, and an answer saved later (a refresh that read it live) is not stored."""
    rows = [cert_row("a", status=CertStatus.ROTATING), cert_row("b", status=CertStatus.ISSUED), cert_row("c")]
    for row in rows:
        session.insert_certificate(row)
    records = [RenewalInfoRecord(row.id, T0, T0 + timedelta(days=1), T0 + timedelta(hours=6), T0, None) for row in rows]
    session.save_renewal_infos(records)
    with session.batch():  # as apply closes a rotation
        session.set_status_if_allowed(rows[0].id, CertStatus.SUPERSEDED)
    assert session.compare_and_set_status(rows[1].id, CertStatus.ISSUED, CertStatus.SUPERSEDED)
    session.set_status(rows[2].id, CertStatus.EXPIRING_SOON)  # any other move keeps it
    assert session.renewal_infos([row.id for row in rows]) == {rows[2].id: records[2]}
    session.save_renewal_infos(records)
    assert session.renewal_infos([row.id for row in rows]) == {rows[2].id: records[2]}
    assert session.load_actual().certificates["c"].renewal_window is not None


def test_a_window_answered_again_moves_only_its_retry_after(session: StateSession) -> None:
    rows = [cert_row(name) for name in ("a", "b", "c")]
    for row in rows:
        session.insert_certificate(row)
    stored = [
        RenewalInfoRecord(rows[0].id, T0, T0 + timedelta(days=1), T0 + timedelta(hours=6), T0, "https://x/1"),
        RenewalInfoRecord(rows[1].id, T0, T0 + timedelta(days=2), T0 + timedelta(hours=6), T0, None),
    ]
    session.save_renewal_infos(stored)
    later = T0 + timedelta(hours=7)
    # c has no stored answer, and the last id has no certificate: both skipped, nothing else touched
    session.save_unchanged_renewal_infos([rows[0].id, rows[2].id, str(uuid.uuid4())], later + timedelta(hours=6), later)
    session.save_unchanged_renewal_infos([], later, later)
    assert session.renewal_infos([row.id for row in rows]) == {
        rows[0].id: RenewalInfoRecord(rows[0].id, T0, T0 + timedelta(days=1), later + timedelta(hours=6), later, None),
        rows[1].id: stored[1],
    }


def test_lock_name_excludes_a_second_session(store: StateStore) -> None:
    acquired = threading.Event()
    released_at: list[float] = []
    second_got_it_at: list[float] = []

    def second() -> None:
        with store.session() as other:
            acquired.wait(5)
            with other.lock_name("shop"):
                second_got_it_at.append(time.monotonic())
            with other.lock_name("api"):  # other names are independent
                pass

    thread = threading.Thread(target=second)
    thread.start()
    with store.session() as first, first.lock_name("shop"):
        with first.lock_name("shop"):  # re-entrant in one session
            pass
        acquired.set()
        time.sleep(0.3)
        assert second_got_it_at == []
        released_at.append(time.monotonic())
    thread.join(10)
    assert not thread.is_alive()
    assert second_got_it_at
    assert second_got_it_at[0] >= released_at[0]


def test_closing_a_session_releases_its_locks(store: StateStore) -> None:
    with store.session() as first:
        first.lock_name("shop").__enter__()  # never exited: closing the session must release it
    done = threading.Event()

    def take() -> None:
        with store.session() as other, other.lock_name("shop"):
            done.set()

    thread = threading.Thread(target=take)
    thread.start()
    thread.join(5)
    assert done.is_set()


def test_try_lock_name_never_waits_and_is_reentrant_within_a_session(store: StateStore) -> None:
    with store.session() as first, store.session() as second:
        with first.try_lock_name("rate limits") as taken, first.try_lock_name("rate limits") as again:
            assert taken and again
            with second.try_lock_name("rate limits") as refused:
                assert not refused
            with second.try_lock_name("shop") as other_name:
                assert other_name
        with second.try_lock_name("rate limits") as free:  # released when the first let go
            assert free
        with second.try_lock_name("rate limits") as free_again:  # a refused try held nothing
            assert free_again


def test_upgrade_is_a_no_op_when_current(store: StateStore) -> None:
    assert store.upgrade() == []


# --- stored key references (kms rewrap) --------------------------------------------------


def _all_key_refs(session: StateSession, table: KeyRefTable, page: int) -> list[StoredKeyRef]:
    found: list[StoredKeyRef] = []
    after: str | None = None
    while batch := session.list_key_refs(table, after, page):
        assert len(batch) <= page
        found.extend(batch)
        after = batch[-1].row_id
    return found


def test_list_key_refs_pages_every_row(session: StateSession) -> None:
    ids = sorted(str(uuid.uuid4()) for _ in range(7))
    for number, cert_id in enumerate(ids):
        status = CertStatus.SUPERSEDED if number % 2 else CertStatus.ACTIVE
        session.insert_certificate(cert_row(f"name-{number}", cert_id=cert_id, status=status))
    session.retire(ids[0], T0)
    session.put_local_ca(LocalCaRecord(name="internal", cert_pem="ca", key_ref=key_ref("ca-master")))
    session.put_local_ca(LocalCaRecord(name="another", cert_pem="ca2", key_ref=key_ref("ca-master")))
    run_id = session.start_run(None, "sha256:digest", T0)
    journalled = key_ref("journal-master")
    for step in ("key-generated", "certificate-stored"):
        detail = {"cert_id": ids[1], "key_ref": journalled.envelope_json}
        session.journal(JournalEntry(run_id, "key-1", "name-1", step, "done", detail, at=T0))
    session.journal(JournalEntry(run_id, "key-2", "name-2", "key-generated", "started", at=T0))
    for number in range(12):  # ids past 9: pages must follow numeric, not text, order
        detail = {"cert_id": ids[2], "key_ref": key_ref("journal-many").envelope_json}
        session.journal(JournalEntry(run_id, f"many-{number}", "name-2", "key-generated", "done", detail, at=T0))

    many = _all_key_refs(session, KeyRefTable.APPLY_STEP, 5)
    assert [int(stored.row_id) for stored in many] == sorted(int(stored.row_id) for stored in many)
    assert len(many) == 13
    certificates = _all_key_refs(session, KeyRefTable.CERTIFICATE, 3)
    assert [stored.row_id for stored in certificates] == ids  # retired and superseded rows too
    assert all(stored.table is KeyRefTable.CERTIFICATE for stored in certificates)
    assert certificates[2] == StoredKeyRef(KeyRefTable.CERTIFICATE, ids[2], key_ref(), "name-2", ids[2])
    local_cas = _all_key_refs(session, KeyRefTable.LOCAL_CA, 1)
    assert [(stored.row_id, stored.name, stored.cert_id) for stored in local_cas] == [
        ("another", "another", None),
        ("internal", "internal", None),
    ]
    step = many[0]  # only key-generated entries with a key
    assert (step.name, step.cert_id, step.key_ref) == ("name-1", ids[1], journalled)
    assert _all_key_refs(session, KeyRefTable.ACME_ACCOUNT, 10) == []

    usage = session.key_ref_usage()
    assert [(u.kms, u.key_id, u.count) for u in usage] == [
        ("local", "ca-master", 2),
        ("local", "journal-many", 12),
        ("local", "journal-master", 1),
        ("local", "master-1", 7),
    ]


def test_replace_key_ref_is_a_compare_and_set(session: StateSession) -> None:
    row = cert_row("shop")
    session.insert_certificate(row)
    session.put_local_ca(LocalCaRecord(name="internal", cert_pem="ca", key_ref=key_ref("old")))
    run_id = session.start_run(None, "sha256:digest", T0)
    detail = {"cert_id": row.id, "key_ref": key_ref("old").envelope_json, "other": "kept"}
    session.journal(JournalEntry(run_id, "key-1", "shop", "key-generated", "done", detail, at=T0))
    (step,) = session.list_key_refs(KeyRefTable.APPLY_STEP, None, 10)

    new = key_ref("new")
    assert session.replace_key_ref(KeyRefTable.CERTIFICATE, row.id, row.key_ref, new)
    assert session.key_ref(row.id) == new
    assert not session.replace_key_ref(KeyRefTable.CERTIFICATE, row.id, row.key_ref, key_ref("lost"))
    assert session.key_ref(row.id) == new  # the stale writer changed nothing
    assert not session.replace_key_ref(KeyRefTable.CERTIFICATE, str(uuid.uuid4()), row.key_ref, new)

    assert session.replace_key_ref(KeyRefTable.LOCAL_CA, "internal", key_ref("old"), new)
    local_ca = session.get_local_ca("internal")
    assert local_ca is not None
    assert (local_ca.key_ref, local_ca.cert_pem) == (new, "ca")
    assert not session.replace_key_ref(KeyRefTable.LOCAL_CA, "internal", key_ref("old"), key_ref("lost"))

    assert session.replace_key_ref(KeyRefTable.APPLY_STEP, step.row_id, key_ref("old"), new)
    assert not session.replace_key_ref(KeyRefTable.APPLY_STEP, step.row_id, key_ref("old"), key_ref("lost"))
    (entry,) = session.journal_entries("key-1")
    assert entry.detail == {"cert_id": row.id, "key_ref": new.envelope_json, "other": "kept"}

    mismatched = KeyRef(envelope_json=key_ref("a").envelope_json, kms="local", key_id="b")
    with pytest.raises(StateError):
        session.replace_key_ref(KeyRefTable.CERTIFICATE, row.id, new, mismatched)
    with session.transaction():
        assert session.replace_key_ref(KeyRefTable.CERTIFICATE, row.id, new, key_ref("in-transaction"))
    assert session.key_ref(row.id) == key_ref("in-transaction")
