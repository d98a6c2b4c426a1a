"""Which changes of a plan are upkeep and which change the declarations' effect (``run``'s split).

``certreconcile run`` always applies *upkeep*: renewals (the renewal window or the CA's ARI
window opened, the certificate expired, was revoked, lost its key, or a rotation stopped
half-way) and drift fixes (a target that failed, was never verified or serves another
certificate). A *declaration change* (a new name, a rotation because the domains, key type or
issuer changed, a removed name revoked or retired, a target added, removed or re-declared) is
applied only with ``--apply-changes``: that is what a reviewed ``apply`` is for.

Pure: a change is classified by its action and its trigger (``Change.trigger``, set by the planner),
never by a reason's code or text. A change triggered by a declaration (or by hand) is a declaration
change as a whole (a rotation that both renews and adds a domain is one change, triggered by the
declaration; it cannot be half applied).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from certreconcile.actual.model import ActualState
from certreconcile.desired.model import DesiredState
from certreconcile.plan.budget import RATE_LIMIT_CODES, rate_limit_diagnostics
from certreconcile.plan.plan import Action, Change, Plan, Trigger

__all__ = ["DECLARATION_TRIGGERS", "PlanSplit", "is_declaration_change", "split_plan", "subplan"]

#: Triggers that exist only because somebody edited the declarations or asked by hand.
DECLARATION_TRIGGERS = frozenset({Trigger.DECLARATION, Trigger.MANUAL})


def is_declaration_change(change: Change) -> bool:
    """True for a change the declarations asked for; False for renewals and drift fixes."""
    match change.action:
        case Action.ISSUE | Action.REVOKE | Action.RETIRE:
            return True
        case Action.ROTATE | Action.REDISTRIBUTE:
            return change.trigger in DECLARATION_TRIGGERS
    return True  # pragma: no cover - every action is matched above


@dataclass(frozen=True, slots=True)
class PlanSplit:
    upkeep: Plan  # renewals and drift fixes: always applied by ``run``
    declaration: Plan  # declaration changes: applied by ``run --apply-changes`` only


def subplan(plan: Plan, changes: Iterable[Change], desired: DesiredState, actual: ActualState, now: datetime) -> Plan:
    """``plan`` restricted to ``changes``; the rate-limit diagnostics are recounted for those alone
    (a budget exceeded by deferred changes must not block the renewals)."""
    kept = tuple(changes)
    other = tuple(d for d in plan.diagnostics if d.code not in RATE_LIMIT_CODES)
    return replace(plan, changes=kept, diagnostics=(*other, *rate_limit_diagnostics(desired, actual, kept, now)))


def split_plan(plan: Plan, desired: DesiredState, actual: ActualState, now: datetime) -> PlanSplit:
    upkeep = [change for change in plan.changes if not is_declaration_change(change)]
    declaration = [change for change in plan.changes if is_declaration_change(change)]
    return PlanSplit(
        upkeep=subplan(plan, upkeep, desired, actual, now),
        declaration=subplan(plan, declaration, desired, actual, now),
    )
