"""A fleet over simulated time: the fakes, the schedules, the stepping and the ledger.

:func:`build_world` declares ``count`` certificates (a mix of 90-, 45- and 6-day lifetimes) on
a :class:`~certreconcile.testing.fake_ca.FakeCa` with a CA outage, DNS-01 on a provider failing
1 % of updates, and fake targets of which 1 % are down for a day. :func:`simulate` then steps
the injected clock one ``interval`` at a time and runs every replica's cycle at each step
(concurrently, as two ``run`` processes on one database would), moves 30 % of the renewal
windows to "now" at the ARI event, and checks after every step that no declared certificate
has expired. The replicas are built by the caller (:class:`certreconcile.reconciler.Reconciler`
sits above this package), so what runs is the real engine, planner, executor and store.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import yaml

from certreconcile.clock import FixedClock
from certreconcile.desired import load_desired
from certreconcile.desired.model import DesiredState
from certreconcile.domain.names import registered_domain
from certreconcile.plugins.issuers.acme_config import ACME_DIRECTORY_PRESETS
from certreconcile.testing.fake_ca import FakeCa, Interval, Order
from certreconcile.testing.fake_faults import FakeTarget, FlakyDns01Provider

__all__ = [
    "LIFETIMES",
    "Report",
    "SimulationPlan",
    "World",
    "build_world",
    "new_per_domain_in_window",
    "orders_in_window",
    "simulate",
]

#: The lifetimes of the mix, in days: 90 (today), 45 (Let's Encrypt from 2028), 6 (short-lived).
LIFETIMES = (90, 45, 6)
ISSUER = "ca"
#: The CA's directory: Let's Encrypt production, so the planner counts its rate limits (the fake CA
#: stands in for it and records every order placed, as the ACME issuer does).
DIRECTORY = ACME_DIRECTORY_PRESETS["letsencrypt"]


@dataclass(frozen=True, slots=True)
class SimulationPlan:
    count: int
    days: int
    interval: timedelta = timedelta(hours=1)
    outage_at: float = 0.4  # share of the days at which the 48-hour CA outage starts
    outage: timedelta = timedelta(hours=48)
    ari_event_at: float = 0.7  # share of the days at which 30 % of windows move to now
    ari_share: float = 0.3
    dns_failure_rate: float = 0.01
    target_failure_share: float = 0.01
    certificates_per_target: int = 10
    # False: every replica runs a cycle at every step, concurrently (they meet on the database's locks).
    # True: they take turns, each still every ``interval``, one ``interval / replicas`` after the other:
    # two `run` processes whose jittered sleeps drifted apart (the fleet is looked at twice as often).
    staggered: bool = False
    # certificates per registered domain (Let's Encrypt: 50 new certificates per registered domain per week)
    certificates_per_domain: int = 25
    # how many certificates of each lifetime, in turn: (90, 45, 6)-day weights; (1, 1, 1) is a third each
    mix: tuple[int, int, int] = (1, 1, 1)
    seed: int = 1

    def lifetime(self, number: int) -> int:
        """The lifetime, in days, of the ``number``-th certificate: the mix's weights in turn."""
        slot = number % sum(self.mix)
        for days, weight in zip(LIFETIMES, self.mix, strict=True):
            if slot < weight:
                return days
            slot -= weight
        raise AssertionError  # pragma: no cover - slot < sum(mix)


@dataclass
class World:
    plan: SimulationPlan
    start: datetime
    clock: FixedClock
    desired: DesiredState
    ca: FakeCa
    dns: FlakyDns01Provider
    targets: dict[str, FakeTarget]
    lifetimes: dict[str, int]  # certificate name -> lifetime in days

    @property
    def outage(self) -> Interval:
        return self.ca.outages[0]

    def registered_domain(self, name: str) -> str:
        """The registered domain of a certificate's names (what Let's Encrypt counts new certificates by)."""
        return registered_domain(self.desired.certificates[name].domains[0])


def build_world(plan: SimulationPlan, start: datetime, directory: Path) -> World:
    """The declarations (written to ``directory``), the CA, DNS and targets with their fault schedules."""
    rng = random.Random(plan.seed)  # noqa: S311  a fault schedule, not a secret
    clock = FixedClock(start)
    target_count = max(1, plan.count // plan.certificates_per_target)
    target_names = [f"t{number:04d}" for number in range(target_count)]
    end = start + timedelta(days=plan.days)
    failing = rng.sample(target_names, max(1, round(target_count * plan.target_failure_share)))
    targets = {}
    for name in target_names:
        outages: tuple[Interval, ...] = ()
        if name in failing:
            down = start + timedelta(seconds=rng.uniform(0, (end - start).total_seconds() - 86400))
            outages = (Interval(down, down + timedelta(days=1)),)
        targets[name] = FakeTarget(name, clock, outages=outages)
    lifetimes = {f"c{number:05d}-{plan.lifetime(number)}d": plan.lifetime(number) for number in range(plan.count)}
    outage_start = start + timedelta(days=plan.days * plan.outage_at)
    dns = FlakyDns01Provider(failure_rate=plan.dns_failure_rate, seed=plan.seed)
    ca = FakeCa(
        ISSUER,
        clock,
        lifetimes={name: timedelta(days=days) for name, days in lifetimes.items()},
        outages=(Interval(outage_start, outage_start + plan.outage),),
        dns=dns,
        directory_url=DIRECTORY,
    )
    doc = {
        "kms": {"local": {}},
        "issuers": {ISSUER: {"acme": {"directory": "letsencrypt", "email": "ops@example.com"}}},
        "targets": {name: {"files": {"dir": f"out/{name}"}} for name in target_names},
        "certificates": [
            {"name": name, "domains": [f"{name}.example{number // plan.certificates_per_domain}.com"], "issuer": ISSUER,
             "targets": [target_names[number % target_count]]}
            for number, name in enumerate(lifetimes)
        ],
    }  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "certificates.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return World(plan, start, clock, load_desired(directory), ca, dns, targets, lifetimes)


@dataclass
class Report:
    steps: int = 0
    cycles: int = 0
    cycle_errors: int = 0
    expired: set[str] = field(default_factory=set)  # declared names whose current certificate expired
    ari_moved: int = 0
    ari_renewed_after: timedelta = timedelta(0)  # the longest wait from the ARI event to a moved name's renewal
    ari_pending: int = 0  # moved names not renewed by the end
    wall_seconds: float = 0.0
    orders: list[Order] = field(default_factory=list)

    def renewals(self) -> list[Order]:
        return [order for order in self.orders if order.kind != "new"]

    def min_remaining(self, names: Callable[[str], bool] = lambda _name: True) -> timedelta | None:
        left = [o.remaining for o in self.orders if o.remaining is not None and names(o.name)]
        return min(left) if left else None

    def per_day(self, start: datetime, days: int) -> list[int]:
        counts = [0] * days
        for order in self.renewals():
            day = int((order.at - start).total_seconds() // 86400)
            if 0 <= day < days:
                counts[day] += 1
        return counts

    def median_per_day(self, start: datetime, days: int) -> float:
        return statistics.median(self.per_day(start, days)) if days else 0.0

    @property
    def duplicates(self) -> int:
        return sum(order.duplicate for order in self.orders)


def orders_in_window(orders: Sequence[Order], window: timedelta, kinds: frozenset[str]) -> int:
    """The most orders of these kinds inside any sliding ``window``."""
    times = sorted(order.at for order in orders if order.kind in kinds)
    best, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


def new_per_domain_in_window(orders: Sequence[Order], domain_of: Callable[[str], str], window: timedelta) -> int:
    """The most new certificates (first issuances) of one registered domain inside any sliding ``window``."""
    by_domain: dict[str, list[Order]] = {}
    for order in orders:
        if order.kind == "new":
            by_domain.setdefault(domain_of(order.name), []).append(order)
    return max((orders_in_window(found, window, frozenset({"new"})) for found in by_domain.values()), default=0)


class _Expiry:
    """The earliest ``not_after`` among the names' current certificates, kept in a heap."""

    def __init__(self, ca: FakeCa) -> None:
        self.ca = ca
        self.heap: list[tuple[datetime, str]] = []
        self.seen = 0

    def expired(self, now: datetime) -> set[str]:
        for order in self.ca.orders[self.seen :]:
            not_after = self.ca.not_after(order.name)
            if not_after is not None:
                heapq.heappush(self.heap, (not_after, order.name))
        self.seen = len(self.ca.orders)
        lapsed: set[str] = set()
        while self.heap and self.heap[0][0] <= now:
            not_after, name = heapq.heappop(self.heap)
            if self.ca.not_after(name) == not_after:  # still its current certificate: it expired
                lapsed.add(name)
        return lapsed


def simulate(
    world: World,
    replicas: Sequence[Callable[[], object]],
    *,
    on_day: Callable[[int, Report], None] | None = None,
    parallel: bool = True,
) -> Report:
    """Step the clock through the plan's days, running every replica's cycle at each step
    (concurrently, or in turn without ``parallel``), or one replica per step (``plan.staggered``)."""
    plan, clock, report = world.plan, world.clock, Report()
    end = world.start + timedelta(days=plan.days)
    ari_at = world.start + timedelta(days=plan.days * plan.ari_event_at)
    moved_names: dict[str, datetime] = {}  # the ARI event's names not renewed yet
    ari_done = False
    expiry = _Expiry(world.ca)
    step = plan.interval / len(replicas) if plan.staggered else plan.interval
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(replicas)) as pool, _long_lived_frozen():
        while clock.now() < end:
            now = clock.now()
            if not ari_done and now >= ari_at:
                moved_names, ari_done = _ari_event(world, now), True
                report.ari_moved = len(moved_names)
            if plan.staggered:  # one replica per step, in turn
                outcomes = [replicas[report.steps % len(replicas)]()]
            elif parallel:  # as replicas on two hosts would, meeting on the database's locks
                outcomes = list(pool.map(lambda cycle: cycle(), replicas))
            else:
                outcomes = [cycle() for cycle in replicas]
            report.cycles += len(outcomes)
            report.cycle_errors += sum(bool(getattr(outcome, "errors", ())) for outcome in outcomes)
            report.steps += 1
            report.expired |= expiry.expired(clock.now())
            _note_ari_renewals(world, moved_names, report)
            clock.advance(step)
            day = int((clock.now() - world.start).total_seconds() // 86400)
            if clock.now() - step < world.start + timedelta(days=day) <= clock.now():
                gc.freeze()  # a new day: what is alive now lives on (see _long_lived_frozen)
                if on_day is not None:
                    on_day(day, report)
    report.wall_seconds = time.perf_counter() - began
    report.orders = list(world.ca.orders)
    report.ari_pending = len(moved_names)
    return report


@contextlib.contextmanager
def _long_lived_frozen() -> Iterator[None]:
    """Keep what lives between cycles (the world, the CA's ledger of every order, the declarations) out
    of the cyclic garbage collector's full passes while the simulation runs; give it back at the end.

    The ledger grows all year (120,000 orders at 10,000 certificates) and a real ``run`` process carries
    none of it, but every full pass over the cycles' own objects would walk it. At 10,000 certificates a
    month in, full passes took 2 to 3 s of every 10 simulated days (about a tenth of the wall time of a
    quiet stretch), growing with the ledger; 0.6 s with this.
    ``gc.freeze()`` at each new simulated day moves what is alive then out of their way; objects that die
    later are still freed by their reference counts (only a reference cycle alive at that moment waits
    for ``gc.unfreeze()`` at the end).
    """
    try:
        yield
    finally:
        gc.unfreeze()


def _ari_event(world: World, now: datetime) -> dict[str, datetime]:
    rng = random.Random(world.plan.seed + 1)  # noqa: S311  a fault schedule, not a secret
    names = sorted(world.ca.current)
    chosen = rng.sample(names, round(len(names) * world.plan.ari_share))
    world.ca.move_windows(chosen, now, timedelta(hours=2))
    return dict.fromkeys(chosen, now)


def _note_ari_renewals(world: World, moved: dict[str, datetime], report: Report) -> None:
    if not moved:
        return
    now = world.clock.now()
    for name, at in list(moved.items()):
        current = world.ca.current[name]
        if current.not_before >= at:
            report.ari_renewed_after = max(report.ari_renewed_after, current.not_before - at)
            del moved[name]
        else:
            report.ari_renewed_after = max(report.ari_renewed_after, now - at)
