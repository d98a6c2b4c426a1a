"""The continuous reconciler behind ``certreconcile run``: plan and apply, again and again.

One cycle: load the declarations (the source may fetch git first) → load the stored state →
ask ACME CAs for renewal windows (ARI) → probe the targets (optional) → plan (pure) → write
the status moves time made due (``expiring_soon``, ``expired``, audited) → apply the upkeep
(renewals, drift fixes) as ``automation:renewal`` → apply the declaration changes only when
allowed (as the commit's ``git:<sha>``), else report them → refresh the metrics.

Several replicas may run against one database: they share the work through the executor's
per-name advisory lock and its re-check under the lock (a renewal another replica finished
is skipped, never issued twice). There is no coordinator and no leader.

Each cycle gathers and plans through :mod:`certreconcile.engine`, as ``plan`` and ``apply`` do, so
``run`` answers what ``plan`` shows (the same warnings too).

The loop itself is small and process-free (:func:`run_forever`): a jittered sleep that a
reload request cuts short, and a stop request honoured between cycles, never inside one. The
sleep is injected (:data:`Sleeper`): a test clock advances instead of waiting.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from certreconcile import engine
from certreconcile.actual.model import ActualState
from certreconcile.actual.schedule import VerificationSchedule
from certreconcile.actual.store import StateStore
from certreconcile.apply.executor import ApplyEnvironment, ApplyResult, ChangeResult
from certreconcile.apply.metrics import ReconcilerMetrics
from certreconcile.apply.pacing import paced
from certreconcile.clock import Clock, FixedClock
from certreconcile.desired.model import DesiredState
from certreconcile.errors import CertReconcileError
from certreconcile.plan.destroy import DEFAULT_DESTROY_THRESHOLD, DestroyThreshold, describe_names
from certreconcile.plan.plan import DESTRUCTIVE_ACTIONS, Change, Plan
from certreconcile.plan.scope import split_plan, subplan
from certreconcile.wiring import Settings

__all__ = [
    "RENEWAL_ACTOR",
    "CycleResult",
    "DesiredSource",
    "EnvironmentFactory",
    "LoopControl",
    "Reconciler",
    "ReportingSource",
    "Sleeper",
    "jittered_interval",
    "reconcile_once",
    "run_forever",
    "sleeper_for",
    "wait_on_event",
]

#: The audit actor of everything ``run`` applies on its own (design §4).
RENEWAL_ACTOR = "automation:renewal"

log = logging.getLogger("certreconcile.run")


class DesiredSource(Protocol):
    def load(self) -> DesiredState:
        """The declarations to reconcile now (a git source fetches first). Raises CertReconcileError."""
        ...


@runtime_checkable
class ReportingSource(DesiredSource, Protocol):
    def problems(self) -> tuple[str, ...]:
        """Errors of the last load that did not stop it (one line each), e.g. a refused git commit
        while the commit followed before still applies (:mod:`certreconcile.gitfollow`)."""
        ...


#: Builds the adapters for a desired state; its ``actor`` is the declarations' own (``git:<sha>``/``user:``).
EnvironmentFactory = Callable[[DesiredState], ApplyEnvironment]


@dataclass(frozen=True, slots=True)
class CycleResult:
    started_at: float  # Unix seconds, from the injected clock
    finished_at: float
    git_commit: str | None
    results: tuple[ChangeResult, ...] = ()  # every change applied (upkeep, then declaration changes)
    deferred: tuple[Change, ...] = ()  # declaration changes left alone (no --apply-changes, or over the
    # destroy threshold: those need a reviewed `apply --allow-destroy N`)
    errors: tuple[str, ...] = ()  # one line each: the cycle (or one of its applies) could not run
    warnings: tuple[str, ...] = ()
    plan: Plan | None = None  # the engine's plan of this cycle, as `plan` would show it (None: it failed first)

    @property
    def failures(self) -> tuple[ChangeResult, ...]:
        return tuple(result for result in self.results if result.outcome == "failed")

    @property
    def outcome(self) -> str:
        """``error`` (could not run), ``partial`` (a change failed), ``success`` or ``noop``."""
        if self.errors:
            return "error"
        if self.failures:
            return "partial"
        return "success" if any(r.outcome == "done" for r in self.results) else "noop"


class Reconciler:
    """One replica's reconcile cycles; keeps the adapters while the declarations stay the same."""

    def __init__(
        self,
        source: DesiredSource,
        store: StateStore,
        build_environment: EnvironmentFactory,
        clock: Clock,
        *,
        apply_changes: bool = False,
        concurrency: int = 4,
        refresh: bool = True,
        metrics: ReconcilerMetrics | None = None,
        destroy_threshold: DestroyThreshold = DEFAULT_DESTROY_THRESHOLD,
        settings: Settings | None = None,
        schedule: VerificationSchedule | None = None,
    ) -> None:
        self.source = source
        # None: probe every target each cycle (as ``plan --refresh``); else only the due ones (see actual.schedule)
        self.schedule = schedule
        self._leaf_cache: dict[str, str] = {}  # certificate id -> PEM, for the CAs' renewal info (ARI)
        self.settings = settings  # for the KMS-drift warnings, as `plan` gives them
        self.store = store
        self.build_environment = build_environment
        self.clock = clock
        self.apply_changes = apply_changes
        self.concurrency = max(1, concurrency)
        self.refresh = refresh
        self.metrics = metrics
        self.destroy_threshold = destroy_threshold
        self._env: tuple[tuple[str, str | None], ApplyEnvironment] | None = None
        self._desired: DesiredState | None = None  # the last declarations read, for the metrics

    def _environment(self, desired: DesiredState) -> ApplyEnvironment:
        key = (desired.digest, desired.git_commit)
        if self._env is None or self._env[0] != key:
            self._env = (key, replace(self.build_environment(desired), leaf_pems=self._leaf_cache))
        return self._env[1]

    def cycle(self) -> CycleResult:
        with _young_collections_every(CYCLE_YOUNG_THRESHOLD):
            return self._cycle()

    def _cycle(self) -> CycleResult:
        started = self.clock.now()
        results: list[ChangeResult] = []
        deferred: tuple[Change, ...] = ()
        errors: list[str] = []
        warnings: tuple[str, ...] = ()
        git_commit: str | None = None
        planned: Plan | None = None
        try:
            desired = self._load(errors)
            self._desired = desired
            git_commit = desired.git_commit
            env = self._environment(desired)
            now = self.clock.now()
            gathered = engine.gather(
                desired,
                self.store,
                now,
                settings=self.settings,
                issuers=env.issuers,
                persist_renewal_info=True,
                targets=env.targets if self.refresh else None,
                schedule=self.schedule,
                leaf_cache=self._leaf_cache,
            )
            warnings = gathered.warnings
            planned = engine.plan(gathered, now, destroy_threshold=self.destroy_threshold)
            self._advance_lifecycle(gathered, now, errors)
            for line in planned.warnings:  # the gathering's warnings included
                log.warning("warning: %s", line)
            pacing = paced(_without_waiting(planned, now), gathered.desired, gathered.actual, self.store, now,
                           apply_declarations=self.apply_changes)  # fmt: skip
            with pacing as (plan, paced_lines):
                split = split_plan(plan, desired, gathered.actual, now)
                if split.upkeep.changes or split.upkeep.agent_renewals:  # agents' own certificates are upkeep
                    results += self._apply(split.upkeep, desired, replace(env, actor=RENEWAL_ACTOR), errors)
                declaration = replace(split.declaration, agent_renewals=())
                deferred, held_back = self._declaration_changes(declaration, gathered, env, now, results, errors)
            warnings = (*warnings, *paced_lines, *held_back)
            self._notify(desired, results)
        except CertReconcileError as exc:
            errors.append(exc.one_line())
            log.error("cycle failed: %s", exc.one_line(), extra={"step": "cycle", "code": exc.code})  # noqa: TRY400  one line
        finally:
            self._reschedule(results)
        result = CycleResult(
            started_at=started.timestamp(),
            finished_at=self.clock.now().timestamp(),
            git_commit=git_commit,
            results=tuple(results),
            deferred=deferred,
            errors=tuple(errors),
            warnings=warnings,
            plan=planned,
        )
        self._observe(result)
        return result

    def _reschedule(self, results: list[ChangeResult]) -> None:
        """The names this cycle deployed (or tried to) are probed next cycle; the schedule is saved."""
        if self.schedule is None:
            return
        self.schedule.forget(result.change.name for result in results)
        self.schedule.save()

    def _load(self, errors: list[str]) -> DesiredState:
        try:
            return self.source.load()
        finally:
            if isinstance(self.source, ReportingSource):
                errors += self.source.problems()

    def _declaration_changes(
        self,
        declaration: Plan,
        gathered: engine.Gathered,
        env: ApplyEnvironment,
        now: datetime,
        results: list[ChangeResult],
        errors: list[str],
    ) -> tuple[tuple[Change, ...], tuple[str, ...]]:
        """Apply the declaration changes when allowed (within the destroy threshold); the ones left, and why."""
        desired, actual = gathered.desired, gathered.actual
        if not self.apply_changes:
            for change in declaration.changes:
                log.info(
                    "not applied (declaration change; run with --apply-changes or use apply): %s %s %s (%s)",
                    change.action.symbol,
                    change.action.value,
                    change.name,
                    ", ".join(reason.code.value for reason in change.reasons),
                    extra={"certificate": change.name, "step": change.action.value, "outcome": "deferred"},
                )
            return declaration.changes, ()
        allowed, deferred = self._within_destroy_threshold(declaration, desired, actual, now)
        held_back: tuple[str, ...] = ()
        if deferred:
            held_back = (_held_back_line(deferred, len(actual.certificates), self.destroy_threshold),)
            log.warning("not applied: %s", held_back[0])
        if allowed.changes:
            results += self._apply(allowed, desired, env, errors)
        return deferred, held_back

    def _within_destroy_threshold(
        self, plan: Plan, desired: DesiredState, actual: ActualState, now: datetime
    ) -> tuple[Plan, tuple[Change, ...]]:
        """``plan`` without its destructive changes when they exceed the destroy threshold, and those changes.

        ``run`` never destroys beyond the threshold: that takes a person's ``apply --allow-destroy N``.
        """
        destructive = plan.destructive
        if not self.destroy_threshold.exceeded_by(len(destructive), len(actual.certificates)):
            return plan, ()
        kept = [change for change in plan.changes if change.action not in DESTRUCTIVE_ACTIONS]
        return subplan(plan, kept, desired, actual, now), destructive

    def _advance_lifecycle(self, gathered: engine.Gathered, now: datetime, errors: list[str]) -> None:
        """This cycle's status moves (expiring_soon, expired) as ``automation:renewal``; a failure is reported."""
        try:
            engine.advance_lifecycle(gathered.desired, self.store, now, RENEWAL_ACTOR, actual=gathered.actual)
        except CertReconcileError as exc:  # the changes still run: they do not depend on the moves
            errors.append(exc.one_line())
            log.error("status moves failed: %s", exc.one_line())  # noqa: TRY400  one line, no traceback

    def _apply(self, plan: Plan, desired: DesiredState, env: ApplyEnvironment, errors: list[str]) -> list[ChangeResult]:
        began = time.monotonic()
        try:
            # lifecycle=False: the cycle made its status moves once (_advance_lifecycle), as automation:renewal
            applied: ApplyResult = engine.apply(plan, desired, env, concurrency=self.concurrency, lifecycle=False)
        except CertReconcileError as exc:  # refused (a rate limit) or the store failed: the other apply still runs
            errors.append(exc.one_line())
            log.error("apply failed: %s", exc.one_line())  # noqa: TRY400  one line, no traceback
            return []
        if self.metrics is not None:
            self.metrics.observe_apply(applied, time.monotonic() - began)
        for result in applied.results:
            level = logging.ERROR if result.outcome == "failed" else logging.INFO
            change = result.change
            fields = {"certificate": change.name, "issuer": change.issuer, "serial": result.serial,
                      "step": change.action.value, "outcome": result.outcome, "actor": env.actor,
                      "code": result.error_code}  # fmt: skip
            log.log(level, "%s %s %s: %s: %s [%s]", change.action.symbol, change.action.value, change.name,
                    result.outcome, result.message, env.actor, extra=fields)  # fmt: skip
        for agent in applied.agents:
            log.log(logging.ERROR if agent.outcome == "failed" else logging.INFO,
                    "~ renew-agent %s: %s: %s [%s]", agent.name, agent.outcome, agent.message, env.actor,
                    extra={"step": "renew-agent", "outcome": agent.outcome, "actor": env.actor})  # fmt: skip
            if agent.outcome == "failed":
                errors.append(agent.message)
        return list(applied.results)

    def _notify(self, desired: DesiredState, results: list[ChangeResult]) -> None:
        """Queue this cycle's events (``notify:``) and deliver the due ones; never fails the cycle."""
        if desired.notify is None:
            return
        from certreconcile.notify.hook import notify_after

        environ = self.settings.env if self.settings is not None else os.environ
        notify_after(desired, self.store, results, self.clock, RENEWAL_ACTOR, environ)

    def _observe(self, result: CycleResult) -> None:
        if self.metrics is None:
            return
        try:
            with self.store.session() as session:
                actual = session.load_actual()
            self.metrics.observe_state(self._desired, actual)
        except CertReconcileError as exc:  # the gauges keep their last values; the cycle counter says error
            log.error("metrics not refreshed: %s", exc.one_line())  # noqa: TRY400  one line, no traceback
        self.metrics.observe_cycle(result.outcome, result.finished_at, len(result.deferred))


#: Allocations between two young passes of the cyclic garbage collector during a cycle (default: 700). A cycle
#: builds some 100,000s of small objects living as long as it does (state, answers, plan): every pass walked them
#: again. 30 simulated days at 10,000 certificates: the collector took about 11 s of 100 s of CPU, 3.5 s with this.
CYCLE_YOUNG_THRESHOLD = 50_000
_collections_lock = threading.Lock()
_collections_held: list[tuple[int, int, int]] = []  # per cycle inside: the thresholds to restore


@contextlib.contextmanager
def _young_collections_every(allocations: int) -> Iterator[None]:
    """Young passes at most every ``allocations`` inside; as before when the last concurrent cycle has left."""
    with _collections_lock:
        before = _collections_held[0] if _collections_held else gc.get_threshold()
        _collections_held.append(before)
        gc.set_threshold(max(before[0], allocations), before[1], before[2])
    try:
        yield
    finally:
        with _collections_lock:
            restored = _collections_held.pop()
            if not _collections_held:
                gc.set_threshold(*restored)


def _held_back_line(held: tuple[Change, ...], managed: int, threshold: DestroyThreshold) -> str:
    count = len(held)
    return (
        f"{count} destructive change{'s' if count != 1 else ''} ({describe_names([c.name for c in held])}) "
        f"exceed the destroy threshold ({threshold.describe(managed)}); run does not revoke or retire them: "
        f"review the plan and run `certreconcile apply --allow-destroy {count}`"
    )


def _without_waiting(plan: Plan, now: datetime) -> Plan:
    """``plan`` less the changes a backoff defers past ``now`` (logged): apply would only skip them."""
    for change in plan.changes:
        if change.waits(now):
            log.info(
                "waiting until %s (backing off after a failed attempt): %s %s %s",
                change.deferred_until.isoformat() if change.deferred_until is not None else "",
                change.action.symbol,
                change.action.value,
                change.name,
            )
    return replace(plan, changes=tuple(change for change in plan.changes if not change.waits(now)))


def reconcile_once(
    source: DesiredSource,
    store: StateStore,
    build_environment: EnvironmentFactory,
    clock: Clock,
    *,
    apply_changes: bool = False,
    concurrency: int = 4,
    refresh: bool = True,
    metrics: ReconcilerMetrics | None = None,
    destroy_threshold: DestroyThreshold = DEFAULT_DESTROY_THRESHOLD,
    settings: Settings | None = None,
    schedule: VerificationSchedule | None = None,
) -> CycleResult:
    """One cycle with fresh adapters (see :class:`Reconciler` to keep them between cycles)."""
    reconciler = Reconciler(
        source,
        store,
        build_environment,
        clock,
        apply_changes=apply_changes,
        concurrency=concurrency,
        refresh=refresh,
        metrics=metrics,
        destroy_threshold=destroy_threshold,
        settings=settings,
        schedule=schedule,
    )
    return reconciler.cycle()


@dataclass
class LoopControl:
    """Requests from signal handlers (or tests) to the loop. Setting events is all a handler does.

    A stop request also sets the reload event, so a sleeping loop wakes at once; a cycle in
    flight is never interrupted: the loop looks at the stop request only between cycles.
    """

    stop_event: threading.Event = field(default_factory=threading.Event)
    reload_event: threading.Event = field(default_factory=threading.Event)

    def request_stop(self) -> None:
        self.stop_event.set()
        self.reload_event.set()

    def request_reload(self) -> None:
        self.reload_event.set()

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()


#: Sleeps up to ``seconds`` unless ``wake`` is set first. The loop's only way to wait: a test
#: clock's sleeper advances the clock and returns at once (see :mod:`certreconcile.clock`).
Sleeper = Callable[[threading.Event, float], None]


#: The real time a test clock's sleep takes, whatever it advances the clock by.
TEST_SLEEP_SECONDS = 0.01


def wait_on_event(wake: threading.Event, seconds: float) -> None:
    """The real sleeper: wait on ``wake`` for up to ``seconds``."""
    wake.wait(seconds)


def sleeper_for(clock: Clock) -> Sleeper:
    """The real sleeper, or for a :class:`FixedClock` (tests) one that advances it and returns at once.

    The fixed clock's sleeper waits a moment of real time (:data:`TEST_SLEEP_SECONDS`) so signals and
    other replicas get their turn; a reload request already set skips the advance.
    """
    if not isinstance(clock, FixedClock):
        return wait_on_event
    fixed = clock

    def advance(wake: threading.Event, seconds: float) -> None:
        if not wake.is_set():
            fixed.advance(timedelta(seconds=seconds))
        wake.wait(min(seconds, TEST_SLEEP_SECONDS))

    return advance


def jittered_interval(interval: float, jitter: float, rng: random.Random) -> float:
    """``interval`` moved by up to ``jitter`` (a fraction) either way, so replicas drift apart."""
    return max(0.0, interval * (1.0 + rng.uniform(-jitter, jitter)))


def run_forever(
    cycle: Callable[[], CycleResult],
    *,
    interval: float,
    jitter: float,
    control: LoopControl,
    once: bool = False,
    rng: random.Random | None = None,
    on_cycle: Callable[[CycleResult], None] | None = None,
    sleep: Sleeper = wait_on_event,
) -> int:
    """Run ``cycle`` until a stop is requested (or once); returns how many cycles ran.

    Between cycles it sleeps a jittered ``interval`` (seconds) through ``sleep``; a reload request
    (SIGHUP) starts the next cycle at once, also when it arrived during the previous one.
    """
    rng = rng or random.Random()  # noqa: S311  spreads replicas in time; not a secret
    cycles = 0
    while not control.stopping:
        control.reload_event.clear()
        result = cycle()
        cycles += 1
        if on_cycle is not None:
            on_cycle(result)
        if once or control.stopping:
            break
        sleep(control.reload_event, jittered_interval(interval, jitter, rng))
    return cycles
