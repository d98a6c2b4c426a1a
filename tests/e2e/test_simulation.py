"""A small simulated fleet (``bench/simulate.py`` at a size for every test run): the invariants, never time.

1,000 certificates (90-, 45- and 6-day lifetimes) over 90 simulated days, a cycle every 6 hours, two
``run`` replicas (real Reconciler, engine, planner, executor, PostgreSQL) running concurrently on one
database; the fake CA is down for 48 hours, moves 30 % of the renewal windows to "now" once, and
answers DNS-01 through a provider failing 1 % of its updates; 1 % of the targets are down for a day.
The CA stands for Let's Encrypt production: the planner counts its rate limits and ``run`` paces
the orders (100 certificates per registered domain: half are issued in the first week, the rest
in the second, 50 new certificates per registered domain per week). Fails when a declared
certificate expires, a certificate is replaced twice, a Let's Encrypt budget is exceeded (new
orders per 3 hours, ARI renewals exempt; new certificates per registered domain per week), or
the ARI event's certificates are not all renewed. The clock is injected: nothing waits.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from certreconcile.actual.repository import PostgresStore
from certreconcile.apply.executor import ApplyEnvironment
from certreconcile.desired.model import DesiredState
from certreconcile.plan.budget import LETSENCRYPT_PRODUCTION
from certreconcile.reconciler import CycleResult, Reconciler
from certreconcile.testing.fake_kms import FakeKms
from certreconcile.testing.simulation import (
    SimulationPlan,
    World,
    build_world,
    new_per_domain_in_window,
    orders_in_window,
    simulate,
)
from engine import T0

# The size for `make test`: 150 s of CPU (this process) on the shared 2-core machine, 9 minutes
# of wall time there under a load of 15 (about 3 minutes on a quiet one); bench/simulate.py runs the larger fleets.
PLAN = SimulationPlan(count=1000, days=90, interval=timedelta(hours=6), certificates_per_domain=100)


class StaticSource:
    def __init__(self, desired: DesiredState) -> None:
        self.desired = desired

    def load(self) -> DesiredState:
        return self.desired


def replicas(world: World, url: str, stores: list[PostgresStore]) -> list[Callable[[], CycleResult]]:
    """Two reconcilers keeping connections between sessions as ``run`` does (``stores``: the caller closes them)."""
    kms = FakeKms()
    cycles = []
    for number in range(2):
        store = PostgresStore(url, keep_idle=6)
        stores.append(store)
        env = ApplyEnvironment(store, kms, {world.ca.name: world.ca}, dict(world.targets), world.clock, f"r{number}")
        reconciler = Reconciler(StaticSource(world.desired), store, lambda _d, env=env: env, world.clock,
                                apply_changes=True, concurrency=4)  # fmt: skip
        cycles.append(reconciler.cycle)
    return cycles


def test_three_simulated_months_keep_every_declared_certificate_valid(database_url: str, tmp_path: Path) -> None:
    world = build_world(PLAN, T0, tmp_path / "desired")
    stores: list[PostgresStore] = []
    try:
        report = simulate(world, replicas(world, database_url, stores))
    finally:
        for store in stores:
            store.close()

    assert report.expired == set()
    assert report.duplicates == 0  # two replicas never renewed one certificate twice
    # Every fault happened (the schedule is seeded): the invariants held through them, not around them.
    assert world.ca.refused > 0
    assert world.dns.failures > 0
    assert sum(bool(target.outages) for target in world.targets.values()) == 1  # 1 % of 20 targets: at least one
    assert report.ari_moved == round(PLAN.count * PLAN.ari_share)
    assert report.ari_pending == 0
    assert report.ari_renewed_after <= timedelta(days=1)  # the CA's Retry-After (6 h), the window, a cycle or two
    # Every certificate whose window came within the 90 days renewed at least once, with lifetime to spare.
    renewed = {order.name for order in report.renewals()}
    assert renewed >= {name for name, days in world.lifetimes.items() if days <= 45}
    smallest = report.min_remaining()
    assert smallest is not None and smallest > timedelta(0)
    # Let's Encrypt's budgets held, the onboarding included: new orders per account per 3 hours (ARI
    # renewals exempt), new certificates per registered domain per week; two replicas took turns.
    limits = LETSENCRYPT_PRODUCTION
    assert orders_in_window(report.orders, timedelta(hours=3), frozenset({"new", "renewal"})) <= (
        limits.orders_per_account
    )
    week = timedelta(days=7)
    assert new_per_domain_in_window(report.orders, world.registered_domain, week) == limits.per_registered_domain
    first = [order.at for order in report.orders if order.kind == "new"]
    assert len(first) == PLAN.count  # every certificate was issued: the paced ones a week later
    assert max(first) >= T0 + week > min(first) + timedelta(days=6)
    assert sum(order.kind == "ari" for order in report.orders) > 0
    # At the end every target serves what the state says (the target down for a day caught up).
    with PostgresStore(database_url).session() as session:
        actual = session.load_actual()
    assert set(actual.certificates) == set(world.lifetimes)
    for name, current in actual.certificates.items():
        assert current.not_after > world.clock.now()
        target = world.targets[world.desired.certificates[name].targets[0]]
        assert target.served[name] == current.fingerprint
