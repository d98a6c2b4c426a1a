"""`run` observes a target only when it is due, when its files changed, or after a deploy (issue 16, point 3).

Real PostgreSQL, local KMS, local CA and a files target; the reconciler runs in-process on a FixedClock.
Every read-back goes through a counting wrapper around the real files target: a cycle with nothing due
must not call ``observe`` at all (so reads and parses no file), whatever it takes in time.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from certreconcile import engine
from certreconcile.actual.repository import PostgresStore
from certreconcile.actual.schedule import VerificationSchedule
from certreconcile.cli.commands.run import GitDesiredSource
from certreconcile.clock import FixedClock
from certreconcile.desired.model import DesiredState
from certreconcile.plan.plan import Action
from certreconcile.plugins.ports import TargetObservation
from certreconcile.reconciler import Reconciler
from certreconcile.wiring import build_environment
from e2e.test_run import settings_for

CERTIFICATES = """\
certificates:
  - name: shop
    domains: [shop.example.test]
    issuer: ca
    targets: [web]
  - name: api
    domains: [api.example.test]
    issuer: ca
    targets: [web]
"""


def write_desired(root: Path) -> Path:
    desired = root / "desired"
    desired.mkdir()
    (desired / "base.yaml").write_text(
        "kms: {local: {}}\n"
        "issuers:\n"
        "  ca:\n"
        "    local_ca: {common_name: schedule test CA, lifetime: 90d}\n"
        "targets:\n"
        "  web:\n"
        "    files: {dir: deploy/web}\n"
        "policy:\n"
        "  allowed_domains: ['*.example.test']\n"
    )
    (desired / "certificates.yaml").write_text(CERTIFICATES)
    return desired


class CountingTarget:
    """The real target, with every ``observe`` (one read and parse of ``fullchain.pem``) counted."""

    def __init__(self, inner: Any, counts: list[str]) -> None:
        self._inner = inner
        self._counts = counts

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._inner, attribute)

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        self._counts.append(name)
        observed: TargetObservation = self._inner.observe(name, domains)
        return observed


class Harness:
    def __init__(self, root: Path, database_url: str) -> None:
        self.desired = write_desired(root)
        self.settings = settings_for(self.desired, database_url, root)
        self.store = PostgresStore(database_url)
        self.clock = FixedClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
        self.reads: list[str] = []
        self.path = root / "data" / "verification-schedule.json"

    def environment(self, state: DesiredState) -> Any:
        env = build_environment(state, self.settings, self.store, self.clock)
        return replace(env, targets={name: CountingTarget(t, self.reads) for name, t in env.targets.items()})

    def reconciler(self, schedule: VerificationSchedule | None = None, *, apply_changes: bool = False) -> Reconciler:
        schedule = schedule or VerificationSchedule(path=self.path)
        return Reconciler(GitDesiredSource(self.desired), self.store, self.environment, self.clock,
                          apply_changes=apply_changes, schedule=schedule)  # fmt: skip

    def cycle(self, reconciler: Reconciler) -> tuple[list[str], Any]:
        self.reads.clear()
        result = reconciler.cycle()
        assert not result.errors, result.errors
        return sorted(self.reads), result

    def fullchain(self, name: str) -> Path:
        return self.desired / "deploy" / "web" / name / "fullchain.pem"


def test_a_cycle_with_nothing_due_reads_no_file(database_url: str, tmp_path: Path) -> None:
    h = Harness(tmp_path, database_url)
    reads, first = h.cycle(h.reconciler(apply_changes=True))
    assert sorted((r.change.action, r.outcome) for r in first.results) == [(Action.ISSUE, "done")] * 2
    reconciler = h.reconciler()

    reads, after_deploy = h.cycle(reconciler)
    assert reads == ["api", "shop"]  # deployed last cycle: probed now
    assert after_deploy.outcome == "noop"

    reads, quiet = h.cycle(reconciler)
    assert reads == []  # nothing due, no file changed: not one observe, so not one read or parse
    assert quiet.outcome == "noop"
    assert quiet.plan is not None
    assert not quiet.plan.changes
    assert reconciler.schedule is not None
    assert (reconciler.schedule.probed, reconciler.schedule.reused) == (0, 2)

    # `run --once` from cron: a new process, the same schedule file.
    reads, _ = h.cycle(h.reconciler())
    assert reads == []

    # `plan --refresh` keeps probing everything.
    desired = GitDesiredSource(h.desired).load()
    h.reads.clear()
    engine.gather(desired, h.store, h.clock.now(), targets=h.environment(desired).targets)
    assert sorted(h.reads) == ["api", "shop"]


def test_a_due_target_is_probed_again(database_url: str, tmp_path: Path) -> None:
    h = Harness(tmp_path, database_url)
    h.cycle(h.reconciler(apply_changes=True))
    reconciler = h.reconciler()
    h.cycle(reconciler)  # after the deploy: verified, next due within 1 h (+ up to 10%)
    h.clock.advance(timedelta(minutes=50))
    assert h.cycle(reconciler)[0] == []
    h.clock.advance(timedelta(minutes=17))  # 67 minutes: past 1 h + 10%
    assert h.cycle(reconciler)[0] == ["api", "shop"]
    assert h.cycle(reconciler)[0] == []


def test_a_changed_file_is_read_again_and_its_drift_fixed(database_url: str, tmp_path: Path) -> None:
    h = Harness(tmp_path, database_url)
    h.cycle(h.reconciler(apply_changes=True))
    reconciler = h.reconciler()
    h.cycle(reconciler)
    assert h.cycle(reconciler)[0] == []

    shop = h.fullchain("shop")
    shop.write_text(h.fullchain("api").read_text())  # someone copied the wrong certificate in place
    os.utime(shop, ns=(shop.stat().st_atime_ns, shop.stat().st_mtime_ns + 1_000_000))
    reads, fixed = h.cycle(reconciler)
    assert reads[0] == "shop"  # re-read (then verified again after its redeploy)
    assert "api" not in reads
    assert [(r.change.name, r.change.action, r.outcome) for r in fixed.results] == [
        ("shop", Action.REDISTRIBUTE, "done")
    ]
    assert h.cycle(reconciler)[0] == ["shop"]  # deployed: probed the cycle after
    assert h.cycle(reconciler)[0] == []


def test_a_renewal_by_anyone_makes_its_targets_due(database_url: str, tmp_path: Path) -> None:
    h = Harness(tmp_path, database_url)
    h.cycle(h.reconciler(apply_changes=True))
    reconciler = h.reconciler()
    h.cycle(reconciler)
    assert h.cycle(reconciler)[0] == []
    # Another process (a person's `apply`, another replica) rotates shop: this replica never deployed it.
    other = h.reconciler(VerificationSchedule())
    desired = GitDesiredSource(h.desired).load()
    gathered = engine.gather(desired, h.store, h.clock.now())
    rotation = engine.plan(gathered, h.clock.now(), force_rotate=frozenset({"shop"}))
    engine.apply(rotation, desired, other._environment(desired))
    assert h.cycle(reconciler)[0] == ["shop"]
