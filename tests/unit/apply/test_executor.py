"""Apply on real adapters (local KMS, local CA, files target) over the in-memory store."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from certreconcile.apply.executor import apply_plan, certificate_context
from certreconcile.audit.events import AuditAction
from certreconcile.clock import FixedClock
from certreconcile.crypto.envelope import open_envelope
from certreconcile.domain.status import CertStatus
from certreconcile.errors import KmsError, StalePlanError
from certreconcile.plan import Action, ReasonCode
from certreconcile.testing.fake_repository import InMemoryStore
from engine import T0, cert, desired_doc, environment, load, plan_and_apply, plan_now


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def store(clock: FixedClock) -> InMemoryStore:
    return InMemoryStore(clock=clock)


def test_issue_writes_files_and_second_plan_is_empty(tmp_path: Path, store: InMemoryStore, clock: FixedClock) -> None:
    desired = load(tmp_path, desired_doc([cert("shop", "shop.example.com", "www.shop.example.com")]))
    plan, result = plan_and_apply(tmp_path, desired, store, clock)
    assert [c.action for c in plan.changes] == [Action.ISSUE]
    assert result.ok, result.results
    folder = tmp_path / "out" / "deploy" / "shop"
    assert stat.S_IMODE((folder / "privkey.pem").stat().st_mode) == 0o600
    leaf = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["shop.example.com", "www.shop.example.com"]
    assert (folder / "fullchain.pem").read_text().count("BEGIN CERTIFICATE") == 2
    with store.session() as session:
        current = session.current_certificate("shop")
        assert current is not None
        assert current.status is CertStatus.ACTIVE
        assert current.distributions["deploy"].verified_at is not None
        actions = [e.action for e in session.audit_events(name="shop")]
    assert actions == [AuditAction.ISSUED, AuditAction.DISTRIBUTED, AuditAction.VERIFIED]
    assert plan_now(desired, store, clock).is_empty


def test_rotation_in_window_supersedes_old_and_uses_new_key(
    tmp_path: Path, store: InMemoryStore, clock: FixedClock
) -> None:
    desired = load(tmp_path, desired_doc([cert("api")], lifetime="30d"))
    plan_and_apply(tmp_path, desired, store, clock)
    with store.session() as session:
        old = session.current_certificate("api")
        assert old is not None
        old_key = session.key_ref(old.id)
    clock.advance(timedelta(days=21))  # 30d lifetime → default renew_before 10d
    plan, result = plan_and_apply(tmp_path, desired, store, clock)
    assert [c.action for c in plan.changes] == [Action.ROTATE]
    assert plan.changes[0].reasons[0].code is ReasonCode.RENEWAL_WINDOW
    assert result.ok
    with store.session() as session:
        new = session.current_certificate("api")
        assert new is not None and new.id != old.id
        assert new.status is CertStatus.ACTIVE
        assert session.certificate_status(old.id) is CertStatus.SUPERSEDED
        assert session.rotation_replacing(new.id) is None  # completed
        assert session.key_ref(new.id).envelope_json != old_key.envelope_json
        assert [e.action for e in session.audit_events(name="api", action=AuditAction.RENEWED)] == ["renewed"]
    assert plan_now(desired, store, clock).is_empty


def test_failing_target_isolated_and_rotation_left_open(
    tmp_path: Path, store: InMemoryStore, clock: FixedClock
) -> None:
    targets = {"good": {"files": {"dir": "good"}}, "bad": {"files": {"dir": "bad", "reload_command": "false"}}}
    desired = load(
        tmp_path, desired_doc([cert("one", targets=["good"]), cert("two", targets=["bad"])], targets=targets)
    )
    _, result = plan_and_apply(tmp_path, desired, store, clock)
    assert not result.ok
    outcomes = {r.change.name: r.outcome for r in result.results}
    assert outcomes == {"one": "done", "two": "failed"}
    assert "reload command exited 1" in result.failures[0].message
    with store.session() as session:
        two = session.current_certificate("two")
        assert two is not None and two.status is CertStatus.ISSUED
        assert two.distributions["bad"].last_error
        assert [e.action for e in session.audit_events(name="two", action=AuditAction.FAILED)] == ["failed"]
    again = plan_now(desired, store, clock)
    assert [(c.action, c.name) for c in again.changes] == [(Action.REDISTRIBUTE, "two")]
    assert again.changes[0].reasons[0].code is ReasonCode.TARGET_FAILED


def test_saved_plan_refused_when_stale(tmp_path: Path, store: InMemoryStore, clock: FixedClock) -> None:
    desired = load(tmp_path, desired_doc([cert("a")]))
    saved = plan_now(desired, store, clock)
    plan_and_apply(tmp_path, desired, store, clock)
    with store.session() as session:
        before = (session.meta(), len(session.audit_events()))
    with pytest.raises(StalePlanError, match="stale"):
        apply_plan(saved, desired, environment(tmp_path, desired, store, clock), saved=True)
    with store.session() as session:
        assert (session.meta(), len(session.audit_events())) == before


def test_saved_plan_refused_when_desired_changed(tmp_path: Path, store: InMemoryStore, clock: FixedClock) -> None:
    desired = load(tmp_path, desired_doc([cert("a")]))
    saved = plan_now(desired, store, clock)
    changed = load(tmp_path, desired_doc([cert("a"), cert("b")]))
    with pytest.raises(StalePlanError, match="desired state changed"):
        apply_plan(saved, changed, environment(tmp_path, changed, store, clock), saved=True)


def test_swapped_key_refs_do_not_decrypt(tmp_path: Path, store: InMemoryStore, clock: FixedClock) -> None:
    desired = load(tmp_path, desired_doc([cert("a"), cert("b")]))
    plan_and_apply(tmp_path, desired, store, clock)
    env = environment(tmp_path, desired, store, clock)
    with store.session() as session:
        a, b = session.current_certificate("a"), session.current_certificate("b")
        assert a is not None and b is not None
        ref_a, ref_b = session.key_ref(a.id), session.key_ref(b.id)
    assert b"PRIVATE KEY" in open_envelope(env.kms, ref_a, certificate_context(a.id)).reveal()
    with pytest.raises(KmsError) as info:
        open_envelope(env.kms, ref_b, certificate_context(a.id))
    assert info.value.code == "kms-decrypt-failed"
    # The envelope is ciphertext only.
    assert "PRIVATE KEY" not in ref_a.envelope_json
    assert set(json.loads(ref_a.envelope_json)) >= {"wrapped_dek", "nonce", "ciphertext"}


def test_removed_names_are_retired_or_revoked(tmp_path: Path, store: InMemoryStore, clock: FixedClock) -> None:
    desired = load(tmp_path, desired_doc([cert("keep"), cert("old", on_delete="revoke"), cert("gone")]))
    plan_and_apply(tmp_path, desired, store, clock)
    smaller = load(tmp_path, desired_doc([cert("keep")]))
    plan, result = plan_and_apply(tmp_path, smaller, store, clock)
    assert [(c.action, c.name) for c in plan.changes] == [(Action.REVOKE, "old"), (Action.RETIRE, "gone")]
    assert result.ok
    with store.session() as session:
        assert set(session.load_actual().certificates) == {"keep"}
        assert [e.action for e in session.audit_events(name="old")][-2:] == ["revoked", "retired"]
    assert plan_now(smaller, store, clock).is_empty


def test_changed_domains_rotate_and_target_changes_redistribute(
    tmp_path: Path, store: InMemoryStore, clock: FixedClock
) -> None:
    targets = {"deploy": {"files": {"dir": "out"}}, "extra": {"files": {"dir": "extra"}}}
    desired = load(tmp_path, desired_doc([cert("a"), cert("b")], targets=targets))
    plan_and_apply(tmp_path, desired, store, clock)
    changed = load(
        tmp_path,
        desired_doc([cert("a", "a.example.com", "alt.example.com"), cert("b", targets=["extra"])], targets=targets),
    )
    plan, result = plan_and_apply(tmp_path, changed, store, clock)
    by_name = {c.name: c for c in plan.changes}
    assert by_name["a"].action is Action.ROTATE
    assert by_name["a"].reasons[0].code is ReasonCode.DOMAINS_CHANGED
    assert by_name["b"].action is Action.REDISTRIBUTE
    assert by_name["b"].targets == ("extra",) and by_name["b"].removed_targets == ("deploy",)
    assert result.ok
    assert (tmp_path / "extra" / "b" / "privkey.pem").exists()
    assert plan_now(changed, store, clock).is_empty


def test_stopped_rotation_resumes_with_the_journalled_key(
    tmp_path: Path, store: InMemoryStore, clock: FixedClock
) -> None:
    desired = load(tmp_path, desired_doc([cert("a")]))
    env = environment(tmp_path, desired, store, clock)
    broken_issuer = env.issuers["internal"]

    class Crashing:
        name = "internal"

        def supported_key_types(self):  # type: ignore[no-untyped-def]
            return broken_issuer.supported_key_types()

        def issue(self, request):  # type: ignore[no-untyped-def]
            raise RuntimeError("CA unreachable")

        def revoke(self, cert_pem, reason):  # type: ignore[no-untyped-def]
            raise NotImplementedError

    plan = plan_now(desired, store, clock)
    result = apply_plan(plan, desired, replace(env, issuers={"internal": Crashing()}))
    assert not result.ok and "CA unreachable" in result.failures[0].message
    with store.session() as session:
        generated = [e for e in session.journal_entries(plan.changes[0].idempotency_key) if e.step == "key-generated"]
    assert len(generated) == 1
    clock.advance(timedelta(hours=1))  # the failure backed the name off for an hour
    result = apply_plan(plan_now(desired, store, clock), desired, env)
    assert result.ok
    with store.session() as session:
        current = session.current_certificate("a")
        assert current is not None and current.id == generated[0].detail["cert_id"]
        steps = [e.step for e in session.journal_entries(plan.changes[0].idempotency_key)]
    assert steps.count("key-generated") == 1


def test_concurrent_apply_in_threads_issues_once(tmp_path: Path, store: InMemoryStore, clock: FixedClock) -> None:
    import threading

    desired = load(tmp_path, desired_doc([cert(f"c{i}") for i in range(6)]))
    plan = plan_now(desired, store, clock)
    results = []

    def run() -> None:
        results.append(apply_plan(plan, desired, environment(tmp_path, desired, store, clock), concurrency=3))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.ok for r in results)
    with store.session() as session:
        issued = session.audit_events(action=AuditAction.ISSUED)
    assert sorted(e.name for e in issued) == [f"c{i}" for i in range(6)]
    assert sum(r.count("skipped") for r in results) == 6


def test_every_decrypt_is_audited(tmp_path: Path, store: InMemoryStore, clock: FixedClock) -> None:
    desired = load(tmp_path, desired_doc([cert("a")]))
    plan_and_apply(tmp_path, desired, store, clock)
    with store.session() as session:
        assert session.audit_events(action=AuditAction.KEY_ACCESSED) == []  # issuing keeps the key in memory
    moved = load(
        tmp_path,
        desired_doc(
            [cert("a", targets=["deploy", "more"])],
            targets={"deploy": {"files": {"dir": "out"}}, "more": {"files": {"dir": "m"}}},
        ),
    )
    plan_and_apply(tmp_path, moved, store, clock)
    with store.session() as session:
        accessed = session.audit_events(action=AuditAction.KEY_ACCESSED)
        current = session.current_certificate("a")
    assert current is not None
    assert [(e.cert_id, e.actor, e.detail["purpose"]) for e in accessed] == [
        (current.id, "user:tester", "redistribute")
    ]


LONG = "a" * 58 + ".example.com"  # 70 characters: over the 64 a subject CN may hold


@pytest.mark.parametrize(
    ("domains", "common_name"),
    [
        pytest.param((LONG, "short.example.com"), "short.example.com", id="first-too-long-next-fits"),
        pytest.param((LONG, "b" + LONG[1:]), None, id="none-fits-no-cn"),
    ],
)
def test_first_domain_over_64_characters_still_issues(
    tmp_path: Path, store: InMemoryStore, clock: FixedClock, domains: tuple[str, ...], common_name: str | None
) -> None:
    desired = load(tmp_path, desired_doc([cert("long", *domains)]))
    _, result = plan_and_apply(tmp_path, desired, store, clock)
    assert result.ok, result.results
    leaf = x509.load_pem_x509_certificate((tmp_path / "out" / "deploy" / "long" / "cert.pem").read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == list(domains)
    names = [attribute.value for attribute in leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    assert names == ([common_name] if common_name else [])
