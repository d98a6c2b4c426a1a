"""Benchmark: a fleet over a simulated year, with the real engine, planner, executor and PostgreSQL.

    PYTHONPATH=src python bench/simulate.py [--certificates 500] [--days 365] [--interval-hours 6]
        [--mix 1,1,1] [--per-domain 25] [--url URL]

Certificates are declared with a mix of 90-, 45- and 6-day lifetimes (``--mix``: weights) on a
fake CA (``certreconcile.testing.fake_ca``) standing for Let's Encrypt production (so the planner
counts its rate limits and ``run`` paces the orders past them) that is down for 48 hours, moves 30 % of the renewal
windows (ARI) to "now" once (a mass revocation), and answers DNS-01 through a provider that
fails 1 % of its updates; 1 % of the targets are down for a day. Two ``run`` replicas
(:class:`certreconcile.reconciler.Reconciler`, each with its own connections) share one database
and run a cycle at every step of the injected clock, concurrently. Nothing sleeps.

The tables: what must hold (no declared certificate expired, no order twice for one
certificate, Let's Encrypt's 300 new orders per account per 3 hours and 50 new certificates per
registered domain per week never exceeded, ARI renewals exempt), then the renewals per day and
the wall time. The script
exits 1 when an invariant fails. Without ``--url`` a throw-away embedded PostgreSQL is started,
with ``shared_buffers`` sized for the state a large fleet accumulates (``SERVER_SETTINGS``;
``--server-defaults`` keeps PostgreSQL's own); with ``--url`` the server is the caller's, as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from certreconcile.actual.embedded import EmbeddedPostgres
from certreconcile.actual.migrate import upgrade
from certreconcile.actual.repository import PostgresStore
from certreconcile.apply.executor import ApplyEnvironment
from certreconcile.desired.model import DesiredState
from certreconcile.plan.budget import LETSENCRYPT_PRODUCTION
from certreconcile.reconciler import Reconciler
from certreconcile.testing.fake_kms import FakeKms
from certreconcile.testing.simulation import (
    LIFETIMES,
    Report,
    SimulationPlan,
    World,
    build_world,
    new_per_domain_in_window,
    orders_in_window,
)
from certreconcile.testing.simulation import simulate as run_simulation

ENV_TEST_DATABASE_URL = "CERTRECONCILE_TEST_DATABASE_URL"
BENCH_DB = "certreconcile_bench_simulate"
START = datetime(2026, 1, 1, tzinfo=UTC)
ORDERS_WINDOW = timedelta(hours=3)
COUNTED = frozenset({"new", "renewal"})  # ARI renewals are exempt from every Let's Encrypt limit
# The scratch server's settings, as an operator would size a server holding this fleet's state rather than
# keep PostgreSQL's default shared_buffers (128 MB): the year's first 40 days at 10,000 certificates took 15 %
# less time with 1 GB (the later days about as long either way); 2 GB in the two whole years measured with it,
# whose Certificate table alone reaches 183 MB by day 240. bench/README.md has the measurements.
SERVER_SETTINGS = {"shared_buffers": "2GB"}


class StaticSource:
    def __init__(self, desired: DesiredState) -> None:
        self.desired = desired

    def load(self) -> DesiredState:
        return self.desired


def replicas(world: World, url: str, count: int = 2, concurrency: int = 4) -> list[Callable[[], object]]:
    """``count`` reconcilers on one database (one store, one connection pool each), as ``run`` replicas."""
    kms = FakeKms()
    cycles: list[Callable[[], object]] = []
    for number in range(count):
        store = PostgresStore(url, keep_idle=concurrency + 2)  # as `run` keeps them
        issuers = {world.ca.name: world.ca}
        env = ApplyEnvironment(store, kms, issuers, dict(world.targets), world.clock, f"replica-{number}")
        reconciler = Reconciler(StaticSource(world.desired), store, lambda _d, env=env: env, world.clock,
                                apply_changes=True, concurrency=concurrency)  # fmt: skip
        cycles.append(reconciler.cycle)
    return cycles


def fresh_database(admin_url: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
        # A throw-away database: a commit need not wait for the disk (what is measured is the engine's
        # decisions over a year, and its wall time on one machine; a crash loses the run, not a state).
        admin.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(sql.Identifier(BENCH_DB)))
    url = psycopg.conninfo.make_conninfo(admin_url, dbname=BENCH_DB)
    with psycopg.connect(url) as conn:
        upgrade(conn)
    return url


def configure(server: EmbeddedPostgres, admin_url: str, settings: dict[str, str]) -> str:
    """Apply ``settings`` to the scratch ``server`` (ALTER SYSTEM, then a restart); its admin URL."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for name, value in settings.items():
            admin.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    server.stop()
    return server.ensure_running()


def server_description(admin_url: str, scratch: bool) -> str:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        row = admin.execute("SELECT current_setting('server_version'), current_setting('shared_buffers')").fetchone()
    assert row is not None
    where = "a scratch embedded server" if scratch else f"the caller's server (--url or ${ENV_TEST_DATABASE_URL})"
    return f"PostgreSQL {row[0]}, {where}, shared_buffers {row[1]}, synchronous_commit off (its database)"


def hours(delta: timedelta | None) -> str:
    return "-" if delta is None else f"{delta.total_seconds() / 3600:.1f} h"


def print_report(world: World, report: Report, setup_seconds: float, server: str) -> bool:
    plan = world.plan
    start = world.start
    limits = LETSENCRYPT_PRODUCTION
    counted = orders_in_window(report.orders, ORDERS_WINDOW, COUNTED)
    per_domain = new_per_domain_in_window(report.orders, world.registered_domain, timedelta(days=7))
    firsts = [order.at for order in report.orders if order.kind == "new"]
    onboarded = (max(firsts) - start).total_seconds() / 86400 if len(firsts) == plan.count else None
    per_day = report.per_day(start, plan.days)
    outage_day = int((world.outage.start - start).total_seconds() // 86400)
    mix = "/".join(f"{weight}" for weight in plan.mix)
    turns = ", taking turns" if plan.staggered else ", together"
    print(f"\n## Simulation: {plan.count:,} certificates (90/45/6-day weights {mix}), {plan.days} days, a cycle every "
          f"{plan.interval.total_seconds() / 3600:g} h, 2 replicas{turns}\n")  # fmt: skip
    print("| invariant | value | holds |\n|---|---|---|")
    checks = [
        ("declared certificates expired", str(len(report.expired)), not report.expired),
        ("orders for a certificate already replaced", str(report.duplicates), report.duplicates == 0),
        (f"counted orders per 3 h, max (limit {limits.orders_per_account}; ARI renewals exempt)", str(counted),
         counted <= limits.orders_per_account),
        (f"new certificates per registered domain per 7 days, max (limit {limits.per_registered_domain})",
         str(per_domain), per_domain <= limits.per_registered_domain),
        ("ARI event names not renewed at the end", str(report.ari_pending), report.ari_pending == 0),
    ]  # fmt: skip
    for label, value, holds in checks:
        print(f"| {label} | {value} | {'yes' if holds else 'NO'} |")
    print("\n| measure | value |\n|---|---|")
    rows = [
        ("orders in all", f"{len(report.orders):,}"),
        ("every certificate first issued by (paced by the budgets)",
         "-" if onboarded is None else f"day {onboarded:.1f}"),
        ("ARI renewals (exempt) per 3 h, max", str(orders_in_window(report.orders, ORDERS_WINDOW, frozenset({"ari"})))),
        ("renewals: ARI / without ARI", f"{sum(o.kind == 'ari' for o in report.orders):,} / "
                                        f"{sum(o.kind == 'renewal' for o in report.orders):,}"),
        *[(f"smallest lifetime left at renewal, {days}-day certificates",
           hours(report.min_remaining(lambda name, days=days: world.lifetimes[name] == days))) for days in LIFETIMES],
        ("renewals per day: median / max", f"{report.median_per_day(start, plan.days):g} / {max(per_day, default=0)}"),
        ("renewals per day from the outage's first day (4 days)",
         " ".join(str(n) for n in per_day[outage_day:outage_day + 4])),
        (f"ARI event: windows moved ({plan.ari_share:.0%})", f"{report.ari_moved:,}"),
        ("ARI event: longest wait until renewed", hours(report.ari_renewed_after)),
        ("requests refused during the CA outage (orders, ARI)", f"{world.ca.refused:,}"),
        ("DNS updates failed", f"{world.dns.failures:,}"),
        ("deploys refused by targets down", f"{sum(t.refused for t in world.targets.values()):,}"),
        ("cycles (both replicas) / with an error", f"{report.cycles:,} / {report.cycle_errors:,}"),
        ("state store", server),
        ("interpreter", f"Python {platform.python_version()} from {sys.base_prefix}"),
        ("set-up (declarations, database)", f"{setup_seconds:.1f} s"),
        ("wall time of the simulation", f"{report.wall_seconds:.1f} s"),
        ("wall time per simulated day", f"{report.wall_seconds / max(plan.days, 1):.2f} s"),
    ]  # fmt: skip
    for label, value in rows:
        print(f"| {label} | {value} |")
    return all(holds for _label, _value, holds in checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The defaults fit `make bench` (30 minutes for every script) on a 2-core machine: 10,000 certificates
    # over 365 days with a cycle every hour would take hours (about 3 s of wall time per simulated day at
    # 1,000 certificates with a cycle every 6 h); larger runs take these options.
    parser.add_argument("--certificates", type=int, default=500)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--interval-hours", type=float, default=6.0, help="simulated time between cycles")
    parser.add_argument("--mix", default="1,1,1", help="weights of the 90-, 45- and 6-day lifetimes")
    parser.add_argument("--per-domain", type=int, default=25, help="certificates per registered domain")
    parser.add_argument(
        "--staggered",
        action="store_true",
        help="the replicas take turns (each every --interval-hours, half an interval apart, as two `run`"
        " processes drift apart) instead of running their cycles together at every step",
    )
    parser.add_argument(
        "--url", help=f"admin URL (may CREATE DATABASE); default: ${ENV_TEST_DATABASE_URL} or a scratch server"
    )
    parser.add_argument(
        "--server-defaults",
        action="store_true",
        help=f"leave the scratch server at PostgreSQL's defaults instead of {SERVER_SETTINGS}",
    )
    args = parser.parse_args()
    logging.getLogger("certreconcile").setLevel(logging.CRITICAL)  # the failures are the faults scheduled
    weights = tuple(int(weight) for weight in args.mix.split(","))
    if len(weights) != len(LIFETIMES) or min(weights) < 0 or sum(weights) == 0:
        parser.error("--mix takes three weights (90-, 45- and 6-day), e.g. 1,1,1")
    plan = SimulationPlan(
        args.certificates,
        args.days,
        interval=timedelta(hours=args.interval_hours),
        certificates_per_domain=args.per_domain,
        mix=(weights[0], weights[1], weights[2]),
        staggered=args.staggered,
    )
    with tempfile.TemporaryDirectory(prefix="crsim") as temp, contextlib.ExitStack() as stack:
        began = time.perf_counter()
        admin_url = args.url or os.environ.get(ENV_TEST_DATABASE_URL)
        scratch = not admin_url
        if not admin_url:
            server = EmbeddedPostgres(Path(temp) / "pg")
            admin_url = server.ensure_running()
            stack.callback(server.stop)
            if not args.server_defaults:
                admin_url = configure(server, admin_url, SERVER_SETTINGS)
        described = server_description(admin_url, scratch)
        url = fresh_database(admin_url)
        world = build_world(plan, START, Path(temp) / "desired")
        setup = time.perf_counter() - began

        def progress(day: int, report: Report) -> None:
            if day % 30 == 0:
                line = (f"day {day}: {len(world.ca.orders):,} orders, {len(report.expired)} expired,"
                        f" {time.perf_counter() - began:.0f} s")  # fmt: skip
                print(line, file=sys.stderr, flush=True)

        report = run_simulation(world, replicas(world, url), on_day=progress)
        ok = print_report(world, report, setup, described)
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
