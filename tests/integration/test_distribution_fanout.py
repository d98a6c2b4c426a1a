"""One certificate deployed to 50 targets at once, some failing, on PostgreSQL: the rows written.

The fan-out writes its journal steps, audit events and distribution rows in batches (one
statement for every ``started`` step before the pushes, one transaction after them). These
tests pin the rows down exactly, as the one-row-at-a-time code wrote them: same rows, same
content, same order in each table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from certreconcile.actual.repository import PostgresStore
from certreconcile.apply.executor import ApplyResult
from certreconcile.audit.verify import verify_chain
from certreconcile.clock import FixedClock
from certreconcile.desired.model import DesiredState
from certreconcile.domain.status import CertStatus
from certreconcile.plan import Action
from engine import T0, cert, desired_doc, load, plan_and_apply, plan_now

pytestmark = pytest.mark.integration

TARGETS = [f"t-{index:02d}" for index in range(50)]
BROKEN = {"t-03", "t-17", "t-29", "t-48"}  # their reload command fails: the push fails, the others go on


def _targets() -> dict[str, dict[str, Any]]:
    return {
        name: {"files": {"dir": f"out/{name}", **({"reload_command": "false"} if name in BROKEN else {})}}
        for name in TARGETS
    }


@pytest.fixture
def applied(tmp_path: Path, postgres_store: PostgresStore) -> tuple[DesiredState, ApplyResult, FixedClock]:
    clock = FixedClock(T0)
    desired = load(tmp_path, desired_doc([cert("shop", targets=TARGETS)], targets=_targets()))
    _plan, result = plan_and_apply(tmp_path, desired, postgres_store, clock, concurrency=8)
    return desired, result, clock


def _error(target: str) -> str:
    return (
        f"error[target-reload-failed]: target {target}: reload command exited 1"
        " (run the reload command by hand to see its full output)"
    )


def test_failed_targets_are_recorded_failed_and_the_others_verified(
    applied: tuple[DesiredState, ApplyResult, FixedClock], postgres_store: PostgresStore, tmp_path: Path
) -> None:
    desired, result, clock = applied
    (change,) = result.results
    assert change.outcome == "failed"
    assert set(change.failed_targets) == BROKEN
    with postgres_store.session() as session:
        current = session.current_certificate("shop")
        assert current is not None
        assert current.status is CertStatus.ISSUED  # not activated: not every target serves it
        assert sorted(current.distributions) == TARGETS
        for name, state in current.distributions.items():
            assert state.fingerprint == current.fingerprint
            if name in BROKEN:
                assert (state.pushed_at, state.verified_at, state.last_error) == (None, None, _error(name))
            else:
                assert (state.pushed_at, state.verified_at, state.last_error) == (T0, T0, None)
            assert state.target_fingerprint == desired.targets[name].fingerprint
        report = verify_chain(session)
        assert report.intact, report.problem
        assert report.rows == len(session.audit_events())  # every row chained, the batched ones too
    for name in set(TARGETS) - BROKEN:
        assert (tmp_path / "out" / name / "shop" / "cert.pem").exists()
    again = plan_now(desired, postgres_store, clock)
    assert [(c.action, c.name, set(c.targets)) for c in again.changes] == [(Action.REDISTRIBUTE, "shop", BROKEN)]


def test_the_rows_are_those_written_one_target_at_a_time(
    applied: tuple[DesiredState, ApplyResult, FixedClock], database_url: str
) -> None:
    _desired, result, _clock = applied
    cert_id = result.results[0].cert_id
    with psycopg.connect(database_url) as conn:
        journal = conn.execute(
            "SELECT step, state, detail, at FROM ApplyStep WHERE run_id = %s"
            " AND (step LIKE 'deploy:%%' OR step LIKE 'verify:%%' OR step = 'distribution') ORDER BY id",
            (result.run_id,),
        ).fetchall()
        audit = conn.execute(
            "SELECT cert_id::text, action, actor, timestamp, detail FROM CertAudit"
            " WHERE detail ? 'target' ORDER BY seq"
        ).fetchall()
        ids = [row[0] for row in conn.execute("SELECT id FROM CertAudit ORDER BY seq")]
        distributions = conn.execute(
            "SELECT target, cert_id::text, pushed_at, verified_at, last_error,"
            " verified_fingerprint IS NOT NULL"
            " FROM Distribution WHERE cert_name = 'shop' ORDER BY target"
        ).fetchall()
    expected_journal: list[tuple[str, str, dict[str, str], object]] = [
        (f"deploy:{name}", "started", {"cert_id": cert_id}, T0) for name in TARGETS
    ]
    expected_audit: list[tuple[str | None, str, str, object, dict[str, str]]] = []
    actor = audit[0][2]
    for name in TARGETS:
        if name in BROKEN:
            expected_journal.append((f"deploy:{name}", "failed", {"error": _error(name)}, T0))
            expected_audit.append((cert_id, "failed", actor, T0, {"target": name, "error": _error(name),
                                                                  "reasons": "new-certificate"}))  # fmt: skip
            continue
        expected_journal += [
            (f"deploy:{name}", "done", {"cert_id": cert_id}, T0),
            (f"verify:{name}", "done", {"attempts": "1"}, T0),
        ]
        expected_audit += [
            (cert_id, "distributed", actor, T0, {"target": name, "reasons": "new-certificate"}),
            (cert_id, "verified", actor, T0, {"target": name, "fingerprint": result_fingerprint(database_url),
                                              "reasons": "new-certificate"}),
        ]  # fmt: skip
    expected_journal.append(("distribution", "failed", {"targets": ",".join(sorted(BROKEN))}, T0))
    assert journal == expected_journal
    assert audit == expected_audit
    assert ids == sorted(ids)  # the chain's order is the insertion order
    assert distributions == [
        (name, cert_id, None, None, _error(name), False) if name in BROKEN else (name, cert_id, T0, T0, None, True)
        for name in TARGETS
    ]


def result_fingerprint(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT fingerprint FROM Certificate WHERE name = 'shop'").fetchone()
    assert row is not None
    return str(row[0])


def test_one_target_without_a_pool_writes_the_same_rows(tmp_path: Path, postgres_store: PostgresStore) -> None:
    """``--concurrency 1`` (no pool) and a single target: the batches of one."""
    clock = FixedClock(T0)
    desired = load(tmp_path, desired_doc([cert("shop", targets=["t-03"])], targets=_targets()))
    _plan, result = plan_and_apply(tmp_path, desired, postgres_store, clock, concurrency=1)
    assert result.results[0].failed_targets == ("t-03",)
    with postgres_store.session() as session:
        steps = [(e.step, e.state) for e in session.journal_entries(result.results[0].change.idempotency_key)]
        actions = [e.action for e in session.audit_events(name="shop")]
    assert steps[-3:] == [("deploy:t-03", "started"), ("deploy:t-03", "failed"), ("distribution", "failed")]
    assert actions[-1] == "failed"
