"""The lifecycle moves written to PostgreSQL: compare-and-set, audited, in batches, by apply's hook too.

(The whole lifetime through ``run`` is ``tests/e2e/test_lifecycle.py``; the pure rules are
``tests/unit/plan/test_lifecycle.py``.)
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from certreconcile import engine
from certreconcile.actual.repository import PostgresStore
from certreconcile.actual.store import CertificateRow
from certreconcile.apply.lifecycle import advance_lifecycle
from certreconcile.audit.events import AuditAction
from certreconcile.clock import FixedClock
from certreconcile.desired.model import DesiredState
from certreconcile.domain.keys import KeyRef, KeyType
from certreconcile.domain.policy import OnDelete
from certreconcile.domain.status import CertStatus
from certreconcile.errors import StalePlanError
from engine import T0, cert, desired_doc, environment, load, plan_and_apply, plan_now

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
ENVELOPE = json.dumps({"kms": "local", "key_id": "k", "wrapped_dek": "AAAA", "nonce": "BBBB", "ct": "CC"})


@pytest.fixture
def desired(tmp_path: Path) -> DesiredState:
    return load(tmp_path, desired_doc([cert("shop", renew_before="30d"), cert("api", renew_before="30d")]))


def row(name: str, status: CertStatus, not_after_days: int) -> CertificateRow:
    ident = str(uuid.uuid4())
    return CertificateRow(
        id=ident,
        name=name,
        domains=(f"{name}.example.com",),
        issuer="internal",
        key_type=KeyType.ECDSA_P256,
        serial_number=f"serial-{ident}",
        not_before=T0 + (not_after_days - 90) * DAY,
        not_after=T0 + not_after_days * DAY,
        status=status,
        fingerprint=f"fp-{ident}",
        key_ref=KeyRef(envelope_json=ENVELOPE, kms="local", key_id="k"),
        cert_pem="pem",
        chain_pem="",
        on_delete=OnDelete.RETIRE,
        created_at=T0 + (not_after_days - 90) * DAY,
    )


def statuses(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return {str(i): s for i, s in conn.execute("SELECT id, status FROM Certificate").fetchall()}


def audits(url: str, action: str) -> list[tuple[str, str, str, dict[str, str]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT cert_id, name, actor, detail FROM CertAudit WHERE action = %s ORDER BY seq", (action,)
        ).fetchall()
    return [(str(r[0]), r[1], r[2], r[3]) for r in rows]


def test_moves_are_compare_and_set_audited_and_batched(
    desired: DesiredState, postgres_store: PostgresStore, database_url: str
) -> None:
    now = T0
    in_window = row("shop", CertStatus.ACTIVE, 20)  # 90-day lifetime, renew_before 30d: due ~10 days ago
    current_lapsed = row("api", CertStatus.EXPIRING_SOON, -1)
    retired = [row(f"old-{n}", CertStatus.ACTIVE, -n) for n in range(2, 7)]  # five rows no longer current
    history = row("hist", CertStatus.SUPERSEDED, -30)
    with postgres_store.session() as session:
        for r in (in_window, current_lapsed, *retired, history):
            session.insert_certificate(r)
        for r in retired:
            session.retire(r.id, now - 60 * DAY)
        serial = session.meta().serial

    result = advance_lifecycle(desired, postgres_store, now, "automation:renewal", batch=2)

    after = statuses(database_url)
    assert after[in_window.id] == "expiring_soon"
    assert after[current_lapsed.id] == "expired"
    assert all(after[r.id] == "expired" for r in retired)  # read and moved two at a time
    assert after[history.id] == "superseded"  # history stays history
    assert len(result.moved) == 7 and result.lost == 0
    soon = audits(database_url, AuditAction.EXPIRING_SOON)
    assert [(c, n, a) for c, n, a, _ in soon] == [(in_window.id, "shop", "automation:renewal")]
    assert soon[0][3]["from"] == "active" and soon[0][3]["reason"] == "renewal-window"
    expired = audits(database_url, AuditAction.EXPIRED)
    assert sorted(c for c, *_ in expired) == sorted([current_lapsed.id, *(r.id for r in retired)])
    assert {d["reason"] for *_, d in expired} == {"not-after"}
    with postgres_store.session() as session:
        assert session.meta().serial == serial  # not a plan change: a saved plan stays fresh
    with psycopg.connect(database_url) as conn:  # the renewal query finds what is due, by status
        due = conn.execute(
            "SELECT name FROM Certificate WHERE status IN ('active','expiring_soon') AND not_after < %s",
            (now + 30 * DAY,),
        ).fetchall()
    assert due == [("shop",)]

    again = advance_lifecycle(desired, postgres_store, now + DAY, "automation:renewal", batch=2)
    assert again.moved == () and again.lost == 0  # nothing twice
    assert len(audits(database_url, AuditAction.EXPIRED)) == 6


def test_a_row_another_writer_moved_is_left_alone(
    desired: DesiredState, postgres_store: PostgresStore, database_url: str
) -> None:
    shop = row("shop", CertStatus.ACTIVE, 20)
    with postgres_store.session() as session:
        session.insert_certificate(shop)
        snapshot = session.load_actual()  # says active
        session.set_status(shop.id, CertStatus.ROTATING)  # an apply started rotating it meanwhile
    result = advance_lifecycle(desired, postgres_store, T0, "automation:renewal", actual=snapshot)
    assert result.moved == () and result.lost == 1
    assert statuses(database_url)[shop.id] == "rotating"
    assert audits(database_url, AuditAction.EXPIRING_SOON) == []


def test_the_lapsed_query_uses_the_renewal_index(postgres_store: PostgresStore, database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT id::text, name, status, not_after FROM Certificate"
                " WHERE status IN ('active','expiring_soon') AND not_after <= now() ORDER BY not_after, id LIMIT 200"
            ).fetchall()
        )
    assert "idx_cert_not_after" in plan, plan


def test_apply_moves_as_its_actor_and_a_refused_apply_moves_nothing(
    tmp_path: Path, desired: DesiredState, postgres_store: PostgresStore, database_url: str
) -> None:
    clock = FixedClock(T0)
    plan_and_apply(tmp_path, desired, postgres_store, clock)  # shop and api issued, active
    issued = statuses(database_url)
    assert sorted(issued.values()) == ["active", "active"]
    saved = plan_now(desired, postgres_store, clock)
    clock.advance(70 * DAY)  # both in their renewal window
    env = environment(tmp_path, desired, postgres_store, clock)

    stale = replace(saved, serial=saved.serial - 1)
    with pytest.raises(StalePlanError):
        engine.apply(stale, desired, env, saved=True)
    assert statuses(database_url) == issued  # refused: nothing moved
    assert audits(database_url, AuditAction.EXPIRING_SOON) == []

    fresh = plan_now(desired, postgres_store, clock)
    only_shop = replace(fresh, changes=tuple(c for c in fresh.changes if c.name == "shop"))
    result = engine.apply(only_shop, desired, env)
    assert result.ok
    soon = audits(database_url, AuditAction.EXPIRING_SOON)
    assert sorted(n for _, n, _, _ in soon) == ["api", "shop"]  # every name due, not only the plan's
    assert {a for _, _, a, _ in soon} == {env.actor} and env.actor.startswith("user:")
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT name, status FROM Certificate ORDER BY name, created_at").fetchall()
    assert rows == [("api", "expiring_soon"), ("shop", "superseded"), ("shop", "active")]  # api waits; shop renewed
