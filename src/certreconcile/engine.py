"""The one path from declarations to effects: gather → plan → apply, and the manual rotate and revoke.

Every caller goes through here: the CLI (``plan``, ``apply``, ``rotate``, ``revoke``, ``status``),
``run`` (:mod:`certreconcile.reconciler`), the :class:`~certreconcile.manager.CertificateManager`
facade and the tests. So the same inputs give the same plan, warnings included, whoever asks.

- :func:`gather` does the input I/O: the stored state, the renewal windows the CAs offer (ARI),
  the targets' observations (``--refresh``) and the warnings found on the way (stored keys
  wrapped by another KMS, CAs that did not answer).
- :func:`plan` is pure: the planner over what was gathered, at the time given.
- :func:`apply`, :func:`rotate_now`, :func:`revoke_now` run changes through the executor's workers.
- :func:`advance_lifecycle` writes the status moves time made due (``expiring_soon``, ``expired``),
  audited: :func:`apply` does it before its changes, ``run`` once per cycle; never ``plan``.

The clock is never read here: every function takes ``now`` (or the environment's clock).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from certreconcile.actual.model import ActualState, Observations
from certreconcile.actual.refresh import observe_targets
from certreconcile.actual.schedule import Expected, VerificationSchedule
from certreconcile.actual.store import StateStore
from certreconcile.apply.ari import refresh_renewal_info
from certreconcile.apply.lifecycle import LifecycleResult, advance_lifecycle
from certreconcile.apply.results import AgentOutcome
from certreconcile.desired.model import DesiredState
from certreconcile.errors import CertReconcileError
from certreconcile.plan import build_plan
from certreconcile.plan.destroy import DEFAULT_DESTROY_THRESHOLD, DestroyThreshold
from certreconcile.plan.plan import Plan
from certreconcile.plugins.ports import Issuer, Target
from certreconcile.wiring import Settings, kms_drift_warnings

if TYPE_CHECKING:  # the executor (cryptography, the issuance machinery) is imported where changes run: plan needs none
    from certreconcile.apply.executor import ApplyEnvironment, ApplyResult, ChangeResult
    from certreconcile.apply.workers import WorkerWiring

__all__ = [
    "Gathered",
    "LifecycleResult",
    "advance_lifecycle",
    "after_certificates",
    "apply",
    "gather",
    "plan",
    "revoke_now",
    "rotate_now",
    "rotation_plan",
]


@dataclass(frozen=True, slots=True)
class Gathered:
    """Everything the planner reads, gathered at one moment. Holds no secret: plans are built from it."""

    desired: DesiredState
    actual: ActualState  # with the CAs' renewal windows (ARI) in place when they were asked
    observations: Observations  # what the targets serve (empty without a refresh)
    warnings: tuple[str, ...] = ()  # KMS drift first, then the CAs that did not answer
    renewal_info_asked: int = 0  # how many certificates the CAs were asked about


def gather(
    desired: DesiredState,
    store: StateStore,
    now: datetime,
    *,
    settings: Settings | None = None,
    issuers: Mapping[str, Issuer] | None = None,
    persist_renewal_info: bool = False,
    targets: Mapping[str, Target] | None = None,
    schedule: VerificationSchedule | None = None,
    leaf_cache: MutableMapping[str, str] | None = None,
) -> Gathered:
    """Read the stored state and, when asked, the CAs and the targets.

    ``settings``: check which KMS wrapped the stored keys (a warning when not the declared one).
    ``issuers``: ask ACME CAs for renewal windows; store the answers only with ``persist_renewal_info``
    (``plan`` runs read-only). ``targets``: probe each declared target of every stored name; with a
    ``schedule`` (``run``), only the pairs it says are due, reusing the last verified observation of the others.
    The Retry-Afters of the windows the CAs answered again are stored while the targets are probed.
    """
    with store.session() as session:
        actual = session.load_actual(now)
        key_usage = session.key_ref_usage() if settings is not None else ()
    warnings = kms_drift_warnings(desired, settings, key_usage) if settings is not None else ()
    asked, pending = 0, None
    if issuers is not None:
        refreshed = refresh_renewal_info(
            actual, issuers, store, now, persist=persist_renewal_info, leaf_cache=leaf_cache, defer_unchanged=True
        )
        actual, asked, pending = refreshed.actual, refreshed.asked, refreshed.pending
        warnings = (*warnings, *refreshed.warnings)
    with _running_beside(pending):
        observations = _observe(desired, actual, now, targets, schedule)
    return Gathered(desired, actual, observations, warnings, asked)


@contextmanager
def _running_beside(work: Callable[[], None] | None) -> Iterator[None]:
    """Run ``work`` on a thread of its own while the block runs; done (its error raised) when the block ends."""
    if work is None:
        yield
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ari-save") as pool:
        running = pool.submit(work)
        try:
            yield
        except BaseException:
            running.exception()  # waited for: nothing runs on after gather; the block's error is the one raised
            raise
        running.result()


def _observe(
    desired: DesiredState,
    actual: ActualState,
    now: datetime,
    targets: Mapping[str, Target] | None,
    schedule: VerificationSchedule | None,
) -> Observations:
    """What the targets serve (see :func:`gather`); empty without ``targets``."""
    observations = Observations()
    if targets is not None:
        probes = [
            (name, spec.domains, target)
            for name, spec in desired.certificates.items()
            if name in actual.certificates
            for target in spec.targets
        ]
        if schedule is None:
            observations = observe_targets(probes, targets)
        else:
            observations = schedule.observe(probes, targets, _expected(desired, actual), now)
    return observations


def _expected(desired: DesiredState, actual: ActualState) -> dict[tuple[str, str], Expected]:
    """What each (stored name, declared target) pair should serve: the schedule's test of a reused observation."""
    declarations = {name: spec.fingerprint for name, spec in desired.targets.items()}
    expected: dict[tuple[str, str], Expected] = {}
    for name, spec in desired.certificates.items():
        current = actual.certificates.get(name)
        if current is not None:
            for target in spec.targets:
                expected[(name, target)] = Expected(current.fingerprint, declarations.get(target))
    return expected


def plan(
    gathered: Gathered,
    now: datetime,
    *,
    force_rotate: frozenset[str] = frozenset(),
    destroy_threshold: DestroyThreshold = DEFAULT_DESTROY_THRESHOLD,
) -> Plan:
    """The plan for what was gathered (pure), with the gathering's warnings after the planner's own."""
    result = build_plan(
        gathered.desired,
        gathered.actual,
        gathered.observations,
        now,
        force_rotate=force_rotate,
        destroy_threshold=destroy_threshold,
    )
    if gathered.warnings:
        result = replace(result, warnings=(*result.warnings, *gathered.warnings))
    return result


def apply(
    the_plan: Plan,
    desired: DesiredState,
    env: ApplyEnvironment,
    *,
    concurrency: int = 4,
    saved: bool = False,
    lifecycle: bool = True,
    workers: int = 1,
    wiring: WorkerWiring | None = None,
) -> ApplyResult:
    """Run every change of ``the_plan`` (a ``saved`` one is first checked for staleness).

    First, unless the plan is refused (errors in it, or stale), the status moves now calls for
    (:func:`advance_lifecycle`, as ``env.actor``); ``lifecycle=False`` when the caller made them (``run``).
    ``workers`` > 1: the changes run in that many processes, each wired by ``wiring``
    (:class:`certreconcile.wiring.ProcessWiring`; :mod:`certreconcile.apply.workers`).
    """
    from certreconcile.apply import executor

    if lifecycle:
        executor.refuse_plan_errors(the_plan)
        if workers > 1:
            from certreconcile.apply.workers import refuse_unshareable

            refuse_unshareable(the_plan.changes, desired)
        if saved:
            with env.store.session() as session:
                executor.check_fresh(the_plan, desired, session)
        advance_lifecycle(desired, env.store, env.clock.now(), env.actor)
    result = executor.apply_plan(
        the_plan, desired, env, concurrency=concurrency, saved=saved, workers=workers, wiring=wiring
    )
    return after_certificates(the_plan, desired, env, result)


def after_certificates(the_plan: Plan, desired: DesiredState, env: ApplyEnvironment, result: ApplyResult) -> (
    ApplyResult
):
    """The fleet's part of an apply: renew the agents' own certificates the plan holds
    (:mod:`certreconcile.fleet.renewal`), then record when each agent last answered."""
    from certreconcile.fleet.applier import Fleet, fleet_of

    fleet = fleet_of(env.targets.values())
    if the_plan.agent_renewals:
        if fleet is None:
            from certreconcile.fleet.ca import FleetCa

            fleet = Fleet(lambda: FleetCa.open(env.store, env.kms, env.clock.now(), env.actor, create=False), env.clock)
        from certreconcile.fleet.renewal import renew_agents

        renewed = renew_agents(the_plan.agent_renewals, desired, fleet, env.store, env.clock, env.actor)
        outcomes = tuple(AgentOutcome(item.name, "done" if item.ok else "failed", item.message) for item in renewed)
        result = replace(result, agents=outcomes)
    if fleet is not None:
        fleet.record_contacts(env.store)
    return result


def rotation_plan(
    name: str,
    desired: DesiredState,
    store: StateStore,
    now: datetime,
    *,
    settings: Settings | None = None,
    destroy_threshold: DestroyThreshold = DEFAULT_DESTROY_THRESHOLD,
) -> Plan:
    """The plan of ``certreconcile rotate NAME``: that name's forced rotation (and nothing else)."""
    if name not in desired.certificates:
        raise CertReconcileError(
            f"{name!r} is not declared", code="name-unknown", hint="rotate takes the name of a declared certificate"
        )
    full = plan(gather(desired, store, now, settings=settings), now, force_rotate=frozenset({name}),
                destroy_threshold=destroy_threshold)  # fmt: skip
    return Plan(
        changes=tuple(change for change in full.changes if change.name == name),
        created_at=full.created_at,
        desired_digest=full.desired_digest,
        lineage=full.lineage,
        serial=full.serial,
        git_commit=full.git_commit,
    )


def rotate_now(
    name: str,
    desired: DesiredState,
    env: ApplyEnvironment,
    *,
    settings: Settings | None = None,
    destroy_threshold: DestroyThreshold = DEFAULT_DESTROY_THRESHOLD,
) -> ApplyResult:
    """``certreconcile rotate NAME``: a new key, issue, distribute and verify, now, for a declared name."""
    the_plan = rotation_plan(
        name, desired, env.store, env.clock.now(), settings=settings, destroy_threshold=destroy_threshold
    )
    return apply(the_plan, desired, env, concurrency=1)


def revoke_now(
    name: str, desired: DesiredState, env: ApplyEnvironment, reason: str, *, force: bool = False
) -> ChangeResult:
    """``certreconcile revoke NAME``: revoke the current certificate at its CA now (refused while served)."""
    from certreconcile.apply import executor

    return executor.revoke_now(name, desired, env, reason, env.clock.now(), force=force)
