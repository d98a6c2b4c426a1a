"""The diff, Alembic style: set arithmetic on names, then per-name checks → plain changes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from certreconcile.actual.model import ActualCertificate, ActualState, AgentRecord, Observations, ServedCertificate
from certreconcile.desired.model import CertificateSpec, DesiredState, OnDelete
from certreconcile.domain.policy import Origin
from certreconcile.domain.status import CertStatus
from certreconcile.plan.agents import (
    agent_of,
    agent_renewals,
    describe_unreachable,
    unenrolled_warnings,
    unreachable_warnings,
)
from certreconcile.plan.backoff import backoff_diagnostic, capped, declaration_digest, defer, is_backed_off
from certreconcile.plan.budget import rate_limit_diagnostics
from certreconcile.plan.destroy import DEFAULT_DESTROY_THRESHOLD, DestroyCheck, DestroyThreshold
from certreconcile.plan.plan import (
    ACTION_ORDER,
    Action,
    Change,
    Plan,
    PlanDiagnostic,
    Reason,
    ReasonCode,
    Trigger,
    trigger_of,
)
from certreconcile.plan.policies import is_servable, needs_nothing, rotation_reasons, target_reasons

__all__ = ["build_plan", "change_for_name", "redistribution_for"]


def _idempotency_key(action: Action, name: str, replaces: str | None, spec: CertificateSpec | None) -> str:
    parts = [action.value, name, replaces or ""]
    if spec is not None:
        parts += [",".join(spec.domains), spec.key_type.value, spec.issuer]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def change_for_name(
    desired: DesiredState,
    name: str,
    current: ActualCertificate | None,
    observations: Observations,
    now: datetime,
    *,
    force_rotate: bool = False,
    agents: Mapping[str, AgentRecord] | None = None,
) -> Change | None:
    """The one change a name needs, or ``None``. Also used by apply to re-check under the lock.

    ``agents``: the enrolled agents, to say since when an unreachable one was last seen."""
    spec = desired.certificates.get(name)
    if spec is None:
        if current is None or current.origin is Origin.API:
            return None  # an API-issued certificate is the facade's: declarations that omit it leave it alone
        return _removal(name, current)
    if current is None:
        change = _issue_or_rotate(Action.ISSUE, spec, None, [Reason(ReasonCode.NEW_CERTIFICATE, "it is new")])
        # `certreconcile rotate NAME` of a name never issued: issued by hand (so not held back by a backoff).
        return replace(change, forced=True, trigger=Trigger.MANUAL) if force_rotate else change
    reasons = rotation_reasons(spec, current, now)
    if force_rotate:
        reasons.insert(0, Reason(ReasonCode.FORCED, "a rotation was requested"))
    if reasons:
        change = _issue_or_rotate(Action.ROTATE, spec, current, reasons)
        return replace(change, forced=True) if force_rotate else change
    return redistribution_for(desired, spec, current, observations, agents)


def redistribution_for(
    desired: DesiredState,
    spec: CertificateSpec,
    current: ActualCertificate,
    observations: Observations,
    agents: Mapping[str, AgentRecord] | None = None,
) -> Change | None:
    """Push ``current`` where it is missing, stale, failed or unverified; ``None`` when every target is fine."""
    name = spec.name
    served = observations.for_name(name)
    needs, removed = target_reasons(desired, spec, current, served, agents)
    finishing = current.status is CertStatus.ISSUED  # stored, not yet verified everywhere
    if not needs and not removed and not finishing:
        return None
    change_reasons = [needs[target] for target in sorted(needs)]
    change_reasons += [Reason(ReasonCode.TARGET_REMOVED, f"{target} is no longer declared") for target in removed]
    if finishing and not needs:
        change_reasons.append(Reason(ReasonCode.ROTATION_INCOMPLETE, "its last issuance or rotation was not completed"))
    return Change(
        action=Action.REDISTRIBUTE,
        name=name,
        reasons=tuple(change_reasons),
        trigger=trigger_of(change_reasons),
        domains=spec.domains,
        issuer=spec.issuer,
        key_type=spec.key_type.value,
        targets=tuple(sorted(needs)),
        removed_targets=tuple(removed),
        replaces=current.id,
        replaces_fingerprint=current.fingerprint,
        served=tuple(
            (t, describe_served(served[t], current, _unreachable_note(desired, t, served[t], agents)))
            for t in sorted(needs)
            if t in served
        ),
        idempotency_key=_idempotency_key(Action.REDISTRIBUTE, name, current.fingerprint, spec),
    )


def _unreachable_note(
    desired: DesiredState, target: str, seen: ServedCertificate, agents: Mapping[str, AgentRecord] | None
) -> str | None:
    if not seen.unreachable:
        return None
    agent = agent_of(desired, target)
    return describe_unreachable(agent, (agents or {}).get(agent) if agent is not None else None)


def describe_served(seen: ServedCertificate, current: ActualCertificate, unreachable: str | None = None) -> str:
    """What a target serves beside what it should: fingerprint, serial, expiry (or why nothing).

    ``unreachable``: the target's host did not answer, said so (nothing is known of what it serves)."""

    def one(fingerprint: str, serial: str | None, not_after: datetime | None) -> str:
        parts = [f"sha256 {fingerprint[:16]}"]
        if serial:
            parts.append(f"serial {serial[:20]}")
        if not_after is not None:
            parts.append(f"expires {not_after:%Y-%m-%d}")
        return ", ".join(parts)

    should = one(current.fingerprint, current.serial_number, current.not_after)
    if seen.unreachable:
        error = f": {seen.error}" if seen.error else ""
        return f"unknown: {unreachable or 'its host did not answer'}{error}; should serve {should}"
    if seen.fingerprint is None:
        return f"nothing ({seen.error or 'no certificate'}); should serve {should}"
    return f"{one(seen.fingerprint, seen.serial_number, seen.not_after)}; should serve {should}"


def _issue_or_rotate(
    action: Action, spec: CertificateSpec, current: ActualCertificate | None, reasons: list[Reason]
) -> Change:
    replaces = current.id if current is not None else None
    return Change(
        action=action,
        name=spec.name,
        reasons=tuple(reasons),
        trigger=trigger_of(reasons),
        domains=spec.domains,
        issuer=spec.issuer,
        key_type=spec.key_type.value,
        targets=spec.targets,
        removed_targets=tuple(sorted(set(current.distributions) - set(spec.targets))) if current else (),
        replaces=replaces,
        replaces_fingerprint=current.fingerprint if current is not None else None,
        idempotency_key=_idempotency_key(action, spec.name, replaces, spec),
    )


def _removal(name: str, current: ActualCertificate) -> Change:
    if current.on_delete is OnDelete.REVOKE and current.status is not CertStatus.REVOKED:
        action = Action.REVOKE
        reason = Reason(ReasonCode.REMOVED_REVOKE, "it was removed from the desired state (on_delete: revoke)")
    else:
        action = Action.RETIRE
        reason = Reason(ReasonCode.REMOVED_RETIRE, "it was removed from the desired state (on_delete: retire)")
    return Change(
        action=action,
        name=name,
        reasons=(reason,),
        trigger=trigger_of((reason,)),
        domains=current.domains,
        issuer=current.issuer,
        key_type=current.key_type.value,
        targets=(),
        replaces=current.id,
        replaces_fingerprint=current.fingerprint,
        idempotency_key=_idempotency_key(action, name, current.id, None),
    )


def _changes_for_name(
    desired: DesiredState, actual: ActualState, name: str, observations: Observations, now: datetime, *, forced: bool
) -> tuple[list[Change], PlanDiagnostic | None]:
    """The changes one name needs: its one change, or, while its issuance backs off, that change
    deferred (pending, never dropped) plus the redistribution of its valid certificate where missing."""
    current = actual.certificates.get(name)
    change = change_for_name(desired, name, current, observations, now, force_rotate=forced, agents=actual.agents)
    if change is None:
        return [], None
    backoff = actual.backoffs.get(name)
    if backoff is not None and current is not None:
        backoff = capped(backoff, current.not_after)  # retries quicken as expiry nears
    if backoff is None or not is_backed_off(change, backoff, declaration_digest(desired, name), now):
        return [change], None
    changes = [defer(change, backoff)]
    spec = desired.certificates.get(name)
    if spec is not None and current is not None and is_servable(current, now):
        redistribution = redistribution_for(desired, spec, current, observations, actual.agents)
        if redistribution is not None:
            changes.append(redistribution)  # a backoff never holds back what already exists
    return changes, backoff_diagnostic(name, backoff)


def build_plan(
    desired: DesiredState,
    actual: ActualState,
    observations: Observations,
    now: datetime,
    *,
    force_rotate: frozenset[str] = frozenset(),
    destroy_threshold: DestroyThreshold = DEFAULT_DESTROY_THRESHOLD,
) -> Plan:
    """Diff desired against actual at ``now``. Pure and deterministic: same inputs, same plan.

    A name backed off after failed issuances (same declaration, backoff running) keeps its
    issue/rotate as a pending change deferred until the backoff ends (``Change.deferred_until``),
    with a warning; its valid certificate is still redistributed. Let's Encrypt budgets become
    warnings and errors. The plan records ``destroy_threshold`` and how many names the state
    manages, so it can say whether apply will need ``--allow-destroy N``.
    """
    if now.tzinfo is None:
        raise ValueError("build_plan needs a timezone-aware 'now'")
    changes: list[Change] = []
    diagnostics: list[PlanDiagnostic] = []
    specs, stored, declared_targets = desired.certificates, actual.certificates, desired.targets
    for name in sorted(specs.keys() | stored.keys()):
        spec, current = specs.get(name), stored.get(name)
        if (
            spec is not None
            and current is not None
            and name not in force_rotate
            and needs_nothing(declared_targets, spec, current, observations.for_name(name), now)
        ):
            continue  # no change, so no backoff to defer it either: what _changes_for_name would find
        found, diagnostic = _changes_for_name(desired, actual, name, observations, now, forced=name in force_rotate)
        changes += found
        if diagnostic is not None:
            diagnostics.append(diagnostic)
    order = {action: index for index, action in enumerate(ACTION_ORDER)}
    changes.sort(key=lambda change: (order[change.action], change.name))
    diagnostics.extend(rate_limit_diagnostics(desired, actual, changes, now))
    warnings = unenrolled_warnings(desired.agents, actual.agents)
    # Only the unreachable pairs can give a warning: sorted alone (their first error, in order), not every pair.
    unanswered = sorted(item for item in observations.served.items() if item[1].unreachable)
    seen = ((target, served) for (_, target), served in unanswered)
    warnings += unreachable_warnings(desired, seen, actual.agents)
    return Plan(
        changes=tuple(changes),
        created_at=now,
        desired_digest=desired.digest,
        lineage=actual.meta.lineage,
        serial=actual.meta.serial,
        git_commit=desired.git_commit,
        diagnostics=tuple(diagnostics),
        destroy=DestroyCheck(managed=len(actual.certificates), threshold=destroy_threshold),
        warnings=tuple(warnings),
        agent_renewals=agent_renewals(desired.agents, actual.agents, now),
    )
