"""The planner: a pure function of (desired, actual, observations, now) → Plan."""

from certreconcile.plan.diff import build_plan, change_for_name
from certreconcile.plan.plan import (
    FORMAT_VERSION,
    Action,
    Change,
    Plan,
    PlanDiagnostic,
    Reason,
    ReasonCode,
    Severity,
    Trigger,
    plan_from_json,
)

__all__ = [
    "FORMAT_VERSION",
    "Action",
    "Change",
    "Plan",
    "PlanDiagnostic",
    "Reason",
    "ReasonCode",
    "Severity",
    "Trigger",
    "build_plan",
    "change_for_name",
    "plan_from_json",
]
