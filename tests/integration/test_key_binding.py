"""Sealed private keys are bound to their Certificate row, in PostgreSQL too.

An envelope moved to another row (a swapped ``key_ref``, a restore gone wrong, tampering)
must not decrypt, and an apply that needs it must fail that change cleanly: one line,
``error[kms-...]``, no traceback, no key material, nothing deployed.

(``UPDATE``/``DELETE``/``TRUNCATE`` on CertAudit are covered by ``test_database.py``.)
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from certreconcile.actual.repository import PostgresStore
from certreconcile.apply.executor import certificate_context
from certreconcile.clock import FixedClock
from certreconcile.crypto.envelope import open_envelope
from certreconcile.domain.status import CertStatus
from certreconcile.errors import KmsError
from certreconcile.plan import Action
from engine import T0, cert, desired_doc, environment, load, plan_and_apply

pytestmark = pytest.mark.integration

TARGETS = {"deploy": {"files": {"dir": "out/deploy"}}, "extra": {"files": {"dir": "out/extra"}}}


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


def _ids(store: PostgresStore) -> dict[str, str]:
    with store.session() as session:
        actual = session.load_actual()
    return {name: certificate.id for name, certificate in actual.certificates.items()}


def _swap_key_refs(database_url: str, first: str, second: str) -> None:
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute(
            """
            UPDATE Certificate AS c SET key_ref = other.key_ref
            FROM Certificate AS other
            WHERE (c.id, other.id) IN ((%(a)s, %(b)s), (%(b)s, %(a)s))
            """,
            {"a": first, "b": second},
        )


@pytest.fixture
def swapped(tmp_path: Path, postgres_store: PostgresStore, database_url: str, clock: FixedClock) -> dict[str, str]:
    """Two certificates applied into PostgreSQL, then their key_ref values swapped by SQL."""
    desired = load(tmp_path, desired_doc([cert("a"), cert("b", key="rsa-2048")], targets=TARGETS))
    _, result = plan_and_apply(tmp_path, desired, postgres_store, clock)
    assert result.ok, result.results
    ids = _ids(postgres_store)
    env = environment(tmp_path, desired, postgres_store, clock)
    with postgres_store.session() as session:
        before = {name: session.key_ref(cert_id).envelope_json for name, cert_id in ids.items()}
        for cert_id in ids.values():  # each decrypts under its own row first
            key = open_envelope(env.kms, session.key_ref(cert_id), certificate_context(cert_id))
            assert b"PRIVATE KEY" in key.reveal()
    _swap_key_refs(database_url, ids["a"], ids["b"])
    with postgres_store.session() as session:
        after = {name: session.key_ref(cert_id).envelope_json for name, cert_id in ids.items()}
    assert after == {"a": before["b"], "b": before["a"]}
    return ids


def test_swapped_key_refs_do_not_decrypt(
    swapped: dict[str, str], tmp_path: Path, postgres_store: PostgresStore, clock: FixedClock
) -> None:
    desired = load(tmp_path, desired_doc([cert("a"), cert("b", key="rsa-2048")], targets=TARGETS))
    env = environment(tmp_path, desired, postgres_store, clock)
    with postgres_store.session() as session:
        for cert_id in swapped.values():
            key_ref = session.key_ref(cert_id)
            assert "PRIVATE KEY" not in key_ref.envelope_json
            assert json.loads(key_ref.envelope_json)["context"]["row_id"] != cert_id  # it names the other row
            with pytest.raises(KmsError) as caught:
                open_envelope(env.kms, key_ref, certificate_context(cert_id))
            assert caught.value.code == "kms-decrypt-failed"
            assert "PRIVATE KEY" not in caught.value.one_line()


def test_editing_the_envelope_context_does_not_help(
    swapped: dict[str, str], tmp_path: Path, postgres_store: PostgresStore, database_url: str, clock: FixedClock
) -> None:
    """Rewriting the context recorded in the envelope JSON to the new row does not make it decrypt."""
    desired = load(tmp_path, desired_doc([cert("a"), cert("b", key="rsa-2048")], targets=TARGETS))
    env = environment(tmp_path, desired, postgres_store, clock)
    with psycopg.connect(database_url) as conn:
        (text,) = conn.execute("SELECT key_ref FROM Certificate WHERE id = %s", (swapped["a"],)).fetchone() or ("",)
        envelope = json.loads(text)
        envelope["context"]["row_id"] = swapped["a"]
        conn.execute("UPDATE Certificate SET key_ref = %s WHERE id = %s", (json.dumps(envelope), swapped["a"]))
    with postgres_store.session() as session, pytest.raises(KmsError) as caught:
        open_envelope(env.kms, session.key_ref(swapped["a"]), certificate_context(swapped["a"]))
    assert caught.value.code == "kms-decrypt-failed"


def test_redistribution_after_the_swap_fails_cleanly(
    swapped: dict[str, str], tmp_path: Path, postgres_store: PostgresStore, database_url: str, clock: FixedClock
) -> None:
    deployed = {p: p.read_bytes() for p in (tmp_path / "out" / "deploy").rglob("*.pem")}
    assert len(deployed) == 8
    # Both certificates gain a target: a redistribution, which must decrypt the stored key.
    more = load(
        tmp_path,
        desired_doc(
            [cert("a", targets=["deploy", "extra"]), cert("b", key="rsa-2048", targets=["deploy", "extra"])],
            targets=TARGETS,
        ),
    )
    plan, result = plan_and_apply(tmp_path, more, postgres_store, clock)
    assert [(c.action, c.name) for c in plan.changes] == [(Action.REDISTRIBUTE, "a"), (Action.REDISTRIBUTE, "b")]
    assert not result.ok
    assert [(r.change.name, r.outcome) for r in result.results] == [("a", "failed"), ("b", "failed")]
    for failure in result.failures:
        assert failure.message.startswith("error[kms-decrypt-failed]: "), failure.message
        assert "\n" not in failure.message
        assert "Traceback" not in failure.message
        assert "PRIVATE KEY" not in failure.message
        assert "BEGIN" not in failure.message
    # Nothing was written to the new target, the old files are untouched, the rows kept their status.
    assert not list((tmp_path / "out" / "extra").rglob("*.pem"))
    assert {p: p.read_bytes() for p in (tmp_path / "out" / "deploy").rglob("*.pem")} == deployed
    with postgres_store.session() as session:
        for name, cert_id in swapped.items():
            assert session.certificate_status(cert_id) is CertStatus.ACTIVE
            failed = [e for e in session.audit_events(name=name) if e.action == "failed"]
            assert len(failed) == 1
            assert "kms-decrypt-failed" in json.dumps(dict(failed[0].detail))
    with psycopg.connect(database_url) as conn:
        audit_text = json.dumps(conn.execute("SELECT detail FROM CertAudit").fetchall())
        journal_text = json.dumps(conn.execute("SELECT detail FROM ApplyStep").fetchall())
    assert "PRIVATE KEY" not in audit_text + journal_text


def test_rotation_recovers_from_the_swap(
    swapped: dict[str, str], tmp_path: Path, postgres_store: PostgresStore, clock: FixedClock
) -> None:
    """A rotation makes a new key, so it never needs the damaged envelope (the documented way out)."""
    desired = load(tmp_path, desired_doc([cert("a"), cert("b", key="rsa-2048")], targets=TARGETS))
    clock.advance(timedelta(days=70))  # into the renewal window (90d lifetime, renew_before 30d)
    plan, result = plan_and_apply(tmp_path, desired, postgres_store, clock)
    assert [c.action for c in plan.changes] == [Action.ROTATE, Action.ROTATE]
    assert result.ok, result.results
    env = environment(tmp_path, desired, postgres_store, clock)
    new_ids = _ids(postgres_store)
    with postgres_store.session() as session:
        for name, cert_id in new_ids.items():
            assert cert_id != swapped[name]
            assert session.certificate_status(swapped[name]) is CertStatus.SUPERSEDED
            key = open_envelope(env.kms, session.key_ref(cert_id), certificate_context(cert_id)).reveal()
            assert b"PRIVATE KEY" in key
            assert (tmp_path / "out" / "deploy" / name / "privkey.pem").read_bytes() == key
