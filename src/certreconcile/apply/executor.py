"""Apply: the only stage with external effects.

Per change: lock the name (PostgreSQL advisory lock) → check the precondition again under
the lock → run idempotent steps, each journalled → audit. One failing change never stops
the others: the runner's one broad ``except`` records it and moves on.

This module runs a plan; the pieces live beside it (``runner`` and its step mixins, ``results``,
``order_journal``, ``manual_revoke``) and are re-exported here.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from certreconcile.actual.model import Observations
from certreconcile.actual.store import StateSession
from certreconcile.apply.manual_revoke import revoke_now, serving_targets
from certreconcile.apply.results import (
    NOT_THE_NAMES_FAULT,
    ApplyEnvironment,
    ApplyResult,
    ChangeResult,
    Outcome,
    WorkerReport,
    certificate_context,
)
from certreconcile.apply.runner import ChangeRunner
from certreconcile.desired.model import DesiredState
from certreconcile.errors import ApplyError, StalePlanError
from certreconcile.plan.plan import Change, Plan

if TYPE_CHECKING:
    from certreconcile.apply.workers import WorkerWiring

__all__ = [
    "NOT_THE_NAMES_FAULT",
    "ApplyEnvironment",
    "ApplyResult",
    "ChangeResult",
    "ChangeRunner",
    "Outcome",
    "WorkerReport",
    "apply_plan",
    "certificate_context",
    "check_fresh",
    "refuse_plan_errors",
    "revoke_now",
    "run_changes",
    "serving_targets",
]


def check_fresh(plan: Plan, desired: DesiredState, session: StateSession) -> None:
    """Refuse a saved plan built on another state or another desired state (Terraform's stale plan)."""
    meta = session.meta()
    if plan.lineage != meta.lineage:
        raise StalePlanError(
            "the saved plan was made for another state database (lineage differs)",
            hint="run `certreconcile plan --out FILE` against this database",
        )
    if plan.serial != meta.serial:
        raise StalePlanError(
            f"the saved plan is stale: the state moved from serial {plan.serial} to {meta.serial} since it was made",
            hint="run `certreconcile plan --out FILE` again and apply the new plan",
        )
    if plan.desired_digest != desired.digest:
        raise StalePlanError(
            "the saved plan is stale: the desired state changed since it was made",
            hint="run `certreconcile plan --out FILE` again and apply the new plan",
        )


def apply_plan(
    plan: Plan,
    desired: DesiredState,
    env: ApplyEnvironment,
    *,
    concurrency: int = 4,
    saved: bool = False,
    plan_observations: Observations | None = None,
    workers: int = 1,
    wiring: WorkerWiring | None = None,
) -> ApplyResult:
    """Run every change of ``plan``. With ``saved``, first refuse a stale plan (nothing changes).

    A plan with error diagnostics (a Let's Encrypt budget exceeded) is refused before anything
    happens: no run is recorded, no CA is contacted. ``workers`` > 1: the changes run in that many
    processes (:mod:`certreconcile.apply.workers`), each building its environment with ``wiring``.
    """
    refuse_plan_errors(plan)
    if workers > 1:
        from certreconcile.apply.workers import refuse_unshareable

        refuse_unshareable(plan.changes, desired)
    with env.store.session() as session:
        if saved:
            check_fresh(plan, desired, session)
        run_id = session.start_run(desired.git_commit, plan.change_digest, env.clock.now())
    reports: tuple[WorkerReport, ...] = ()
    if workers > 1 and len(plan.changes) > 1:
        from certreconcile.apply.workers import run_in_processes

        if wiring is None:
            raise ApplyError("apply with worker processes needs their wiring", code="internal-error")
        results, reports = run_in_processes(plan.changes, desired, env, run_id, max(1, concurrency), workers, wiring)
    else:
        results = _run_all(plan.changes, desired, env, run_id, max(1, concurrency))
    failures = tuple(result for result in results if result.outcome == "failed")
    with env.store.session() as session:
        serial = session.meta().serial
        if any(result.outcome != "skipped" for result in results):
            serial = session.bump_serial()
        outcome = "noop" if not results else ("success" if not failures else "partial")
        if failures and len(failures) == len(results):
            outcome = "failed"
        session.finish_run(run_id, outcome, env.clock.now())
    return ApplyResult(run_id=run_id, results=results, serial=serial, failures=failures, workers=reports)


def refuse_plan_errors(plan: Plan) -> None:
    """Raise :class:`ApplyError` naming the plan's first error diagnostic (and how many more there are)."""
    errors = plan.errors
    if not errors:
        return
    first = errors[0]
    more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''} in the plan)" if len(errors) > 1 else ""
    raise ApplyError(f"apply refused, nothing was changed: {first.summary}{more}", code=first.code, hint=first.hint)


def _run_all(
    changes: tuple[Change, ...], desired: DesiredState, env: ApplyEnvironment, run_id: int, concurrency: int
) -> tuple[ChangeResult, ...]:
    if not changes:
        return ()
    work: queue.Queue[tuple[int, Change]] = queue.Queue()
    for index, change in enumerate(changes):
        work.put((index, change))
    results: list[ChangeResult | None] = [None] * len(changes)

    def take() -> tuple[int, Change] | None:
        try:
            return work.get_nowait()
        except queue.Empty:
            return None

    def done(index: int, result: ChangeResult) -> None:
        results[index] = result
        if env.on_progress is not None:
            env.on_progress(result)

    run_changes(take, done, desired, env, run_id, concurrency, threads=min(concurrency, len(changes)))
    return tuple(result for result in results if result is not None)


def run_changes(
    take: Callable[[], tuple[int, Change] | None],
    done: Callable[[int, ChangeResult], None],
    desired: DesiredState,
    env: ApplyEnvironment,
    run_id: int,
    concurrency: int,
    *,
    threads: int,
) -> None:
    """``threads`` threads, each on its own session, run the changes ``take`` gives until it gives None.

    ``take`` and ``done`` are called from those threads (they must be thread-safe); the deployments of
    all of them share one pool of ``concurrency`` threads. :mod:`certreconcile.apply.workers` runs this in
    each worker process, ``take`` reading the change indexes the parent hands out.
    """

    def worker() -> None:
        with env.store.session() as session:
            runner = ChangeRunner(session, desired, env, run_id, target_pool)
            while (item := take()) is not None:
                index, change = item
                done(index, runner.run(change))

    width = env.target_concurrency or concurrency  # the fan-out of one certificate to its targets
    with ThreadPoolExecutor(max_workers=max(1, width), thread_name_prefix="deploy") as target_pool:
        started = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
        for thread in started:
            thread.start()
        for thread in started:
            thread.join()
