"""`run` paces the orders that count against Let's Encrypt's rate limits instead of refusing every cycle.

`apply` refuses a plan past a budget (a person splits it); `run` has nobody to ask: it takes the
changes that fit, most urgent first, and leaves the rest to later cycles. Replicas take turns on
those changes (one lock); the changes drawing on no budget (ARI renewals, other CAs) always go ahead.
In memory (the store's fake, the fake CA on an injected clock): nothing waits.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from certreconcile.apply.executor import ApplyEnvironment
from certreconcile.apply.pacing import BUDGET_LOCK
from certreconcile.clock import FixedClock
from certreconcile.desired.model import DesiredState
from certreconcile.plan.budget import LETSENCRYPT_PRODUCTION
from certreconcile.reconciler import Reconciler
from certreconcile.testing.fake_ca import FakeCa
from certreconcile.testing.fake_kms import FakeKms
from certreconcile.testing.fake_repository import InMemoryStore
from certreconcile.testing.simulation import FakeTarget
from engine import T0, load

LE = "https://acme-v02.api.letsencrypt.org/directory"


class StaticSource:
    def __init__(self, desired: DesiredState) -> None:
        self.desired = desired

    def load(self) -> DesiredState:
        return self.desired


def desired(tmp_path: Path, count: int, issuer: dict[str, Any]) -> DesiredState:
    return load(tmp_path, {
        "kms": {"local": {}},
        "issuers": {"ca": issuer},
        "targets": {"t": {"files": {"dir": "out"}}},
        "certificates": [{"name": f"c{i:03d}", "domains": [f"c{i:03d}.example.com"], "issuer": "ca",
                          "targets": ["t"]} for i in range(count)],
    })  # fmt: skip


def world(tmp_path: Path, count: int, directory_url: str | None = LE) -> tuple[Reconciler, InMemoryStore, FakeCa]:
    clock = FixedClock(T0)
    store = InMemoryStore(clock=clock)
    ca = FakeCa("ca", clock, directory_url=directory_url)
    issuer = {"acme": {"directory": "letsencrypt", "email": "ops@example.com"}} if directory_url else {
        "local_ca": {"common_name": "CA"}}  # fmt: skip
    env = ApplyEnvironment(store, FakeKms(), {"ca": ca}, {"t": FakeTarget("t", clock)}, clock, "test")
    reconciler = Reconciler(StaticSource(desired(tmp_path, count, issuer)), store, lambda _d: env, clock,
                            apply_changes=True, concurrency=2)  # fmt: skip
    return reconciler, store, ca


def test_new_certificates_past_the_weekly_budget_wait_for_later_cycles(tmp_path: Path) -> None:
    reconciler, store, ca = world(tmp_path, 60)  # one registered domain: 50 new certificates per 7 days
    first = reconciler.cycle()
    assert len(ca.orders) == LETSENCRYPT_PRODUCTION.per_registered_domain
    assert first.errors == ()  # paced, not refused: the 50 that fit were issued
    assert any("10 changes" in line and "held back for a later cycle" in line for line in first.warnings)
    again = reconciler.cycle()  # the orders just placed are in the history: nothing more this week
    assert len(ca.orders) == 50 and again.errors == ()
    reconciler.clock.advance(timedelta(days=7, minutes=1))  # type: ignore[attr-defined]
    reconciler.cycle()
    assert len(ca.orders) == 60
    with store.session() as session:
        assert len(session.load_actual().certificates) == 60


def test_a_replica_holding_the_budget_lock_leaves_the_budgeted_changes_to_the_others_next_cycle(
    tmp_path: Path,
) -> None:
    reconciler, store, ca = world(tmp_path, 3)
    with store.session() as other, other.try_lock_name(BUDGET_LOCK) as taken:
        assert taken
        result = reconciler.cycle()
        assert ca.orders == []
        assert any("another replica" in line for line in result.warnings)
    reconciler.cycle()
    assert len(ca.orders) == 3


def test_other_cas_are_never_paced(tmp_path: Path) -> None:
    reconciler, _store, ca = world(tmp_path, 60, directory_url=None)
    result = reconciler.cycle()
    assert len(ca.orders) == 60
    assert not any("held back" in line for line in result.warnings)

