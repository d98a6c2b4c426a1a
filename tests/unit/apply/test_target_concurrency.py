"""The fan-out width: `ApplyEnvironment.target_concurrency` (`apply --target-concurrency`), else `--concurrency`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import pytest

from certreconcile import engine
from certreconcile.clock import FixedClock
from certreconcile.plugins.ports import DeployBundle, Target, TargetObservation
from certreconcile.testing.fake_repository import InMemoryStore
from engine import T0, cert, desired_doc, environment, load, plan_now

TARGETS = [f"t-{index}" for index in range(8)]


@dataclass
class Gathered:
    """A real files target whose pushes wait until ``barrier.parties`` of them are in flight at once."""

    inner: Target
    barrier: threading.Barrier

    def deploy(self, bundle: DeployBundle) -> None:
        self.barrier.wait()  # broken (raises) when fewer pushes than that run at once
        self.inner.deploy(bundle)

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        return self.inner.observe(name, domains)

    def verify_timeout(self) -> timedelta:
        return self.inner.verify_timeout()


def _apply(tmp_path: Path, *, concurrency: int, target_concurrency: int | None, together: int) -> list[str]:
    """Apply one certificate on 8 files targets; the targets that failed."""
    clock = FixedClock(T0)
    store = InMemoryStore(clock=clock)
    targets = {name: {"files": {"dir": f"out/{name}"}} for name in TARGETS}
    desired = load(tmp_path, desired_doc([cert("shop", targets=TARGETS)], targets=targets))
    env = environment(tmp_path, desired, store, clock)
    barrier = threading.Barrier(together, timeout=20)
    gathered = {name: Gathered(target, barrier) for name, target in env.targets.items()}
    env = replace(env, targets=gathered, target_concurrency=target_concurrency)
    result = engine.apply(plan_now(desired, store, clock), desired, env, concurrency=concurrency)
    return [name for change in result.results for name in change.failed_targets]


def test_target_concurrency_widens_the_fan_out_beyond_the_change_workers(tmp_path: Path) -> None:
    assert _apply(tmp_path, concurrency=1, target_concurrency=8, together=8) == []


@pytest.mark.parametrize("concurrency", [2, 4])
def test_without_it_the_fan_out_is_as_wide_as_concurrency(tmp_path: Path, concurrency: int) -> None:
    assert _apply(tmp_path, concurrency=concurrency, target_concurrency=None, together=concurrency) == []
