"""Change.trigger: the planner records what set a change off; run's scope and the review check read it.

No decision reads a reason's code or text (reasons are for people): a change whose reasons say
"renewal window" but whose trigger says otherwise is judged by its trigger.
"""

from __future__ import annotations

import ast
import json
from datetime import timedelta
from pathlib import Path

import pytest
from test_build_plan import CASES, actual_for, state

from certreconcile.actual.model import Observations, ServedCertificate
from certreconcile.desired.model import DesiredState
from certreconcile.plan import build_plan
from certreconcile.plan.plan import (
    REASON_TRIGGERS,
    Action,
    Change,
    Reason,
    ReasonCode,
    Trigger,
    plan_from_json,
    trigger_of,
)
from certreconcile.plan.review import compare_with_review, is_renewal
from certreconcile.plan.scope import is_declaration_change
from engine import T0, cert, desired_doc, load

SRC = Path(__file__).resolve().parents[3] / "src" / "certreconcile"



@pytest.fixture(scope="module")
def desired(tmp_path_factory: pytest.TempPathFactory) -> DesiredState:
    """The declarations of test_build_plan (its CASES are built against them)."""
    targets = {"deploy": {"files": {"dir": "out"}}, "edge": {"files": {"dir": "edge"}}}
    return load(
        tmp_path_factory.mktemp("desired"),
        desired_doc(
            [cert("shop", "shop.example.com", "www.shop.example.com", targets=["deploy", "edge"], renew_before="30d")],
            targets=targets,
        ),
    )


EXPECTED = {
    "renewal-window": Trigger.TIME,
    "expired": Trigger.TIME,
    "revoked": Trigger.DRIFT,
    "key-missing": Trigger.DRIFT,
    "domains-changed": Trigger.DECLARATION,
    "key-type-changed": Trigger.DECLARATION,
    "issuer-changed": Trigger.DECLARATION,
    "rotation-stopped": Trigger.FAILURE_RETRY,
    "issued-not-final": Trigger.FAILURE_RETRY,
    "drift": Trigger.DRIFT,
}


def test_every_reason_reports_a_trigger() -> None:
    assert set(REASON_TRIGGERS) == set(ReasonCode)


@pytest.mark.parametrize(("case", "overrides", "served"), [(c[0], c[1], c[2]) for c in CASES if c[3]])
def test_the_planner_sets_the_trigger(
    desired: DesiredState, case: str, overrides: dict[str, object], served: ServedCertificate | None
) -> None:
    observations = Observations({("shop", "edge"): served}) if served else Observations()
    plan = build_plan(desired, state(actual_for(desired, **overrides)), observations, T0)
    assert [change.trigger for change in plan.changes] == [EXPECTED[case]]


def test_new_removed_and_forced_names(desired: DesiredState) -> None:
    gone = actual_for(desired, name="gone", id="2" * 32)
    plan = build_plan(desired, state(gone), Observations(), T0)
    assert [(c.action, c.trigger) for c in plan.changes] == [
        (Action.RETIRE, Trigger.DECLARATION),
        (Action.ISSUE, Trigger.DECLARATION),
    ]
    forced = build_plan(desired, state(actual_for(desired)), Observations(), T0, force_rotate=frozenset({"shop"}))
    assert [(c.action, c.trigger) for c in forced.changes] == [(Action.ROTATE, Trigger.MANUAL)]
    first = build_plan(desired, state(), Observations(), T0, force_rotate=frozenset({"shop"}))
    assert [(c.action, c.trigger) for c in first.changes] == [(Action.ISSUE, Trigger.MANUAL)]


def test_the_strongest_trigger_wins_and_time_needs_every_reason() -> None:
    reasons = [Reason(ReasonCode.RENEWAL_WINDOW, "x"), Reason(ReasonCode.KEY_MISSING, "y")]
    assert trigger_of(reasons) is Trigger.DRIFT
    assert trigger_of([*reasons, Reason(ReasonCode.TARGET_FAILED, "z")]) is Trigger.FAILURE_RETRY
    assert trigger_of([*reasons, Reason(ReasonCode.DOMAINS_CHANGED, "z")]) is Trigger.DECLARATION
    assert trigger_of([Reason(ReasonCode.DOMAINS_CHANGED, "z"), Reason(ReasonCode.FORCED, "f")]) is Trigger.MANUAL
    assert trigger_of([Reason(ReasonCode.ARI_WINDOW, "a"), Reason(ReasonCode.EXPIRED, "e")]) is Trigger.TIME


def _rotation(trigger: Trigger) -> Change:
    # Reasons that say "renewal": the decisions must not read them.
    return Change(
        action=Action.ROTATE,
        name="shop",
        reasons=(Reason(ReasonCode.RENEWAL_WINDOW, "it expires in 12 days"),),
        domains=("shop.example.com",),
        issuer="ca",
        key_type="ecdsa-p256",
        targets=("web",),
        trigger=trigger,
    )


@pytest.mark.parametrize(
    ("trigger", "declaration", "renewal"),
    [
        (Trigger.TIME, False, True),
        (Trigger.DRIFT, False, False),
        (Trigger.FAILURE_RETRY, False, False),
        (Trigger.DECLARATION, True, False),
        (Trigger.MANUAL, True, False),
    ],
)
def test_scope_and_review_decide_on_the_trigger(trigger: Trigger, declaration: bool, renewal: bool) -> None:
    change = _rotation(trigger)
    assert is_declaration_change(change) is declaration
    assert is_renewal(change) is renewal
    assert compare_with_review([], [change]).acceptable is renewal


def test_trigger_round_trips_and_old_plans_get_the_planners_trigger(desired: DesiredState) -> None:
    plan = build_plan(desired, state(actual_for(desired, not_after=T0 - timedelta(days=1))), Observations(), T0)
    data = json.loads(plan.dumps())
    assert plan_from_json(data) == plan
    for change in data["changes"]:
        del change["trigger"]  # a plan saved before triggers were recorded
    assert [c.trigger for c in plan_from_json(data).changes] == [c.trigger for c in plan.changes] == [Trigger.TIME]


def test_the_digest_is_stable_for_identical_plans(desired: DesiredState) -> None:
    first = build_plan(desired, state(actual_for(desired, has_key=False)), Observations(), T0)
    second = build_plan(desired, state(actual_for(desired, has_key=False)), Observations(), T0)
    assert first.change_digest == second.change_digest
    assert plan_from_json(json.loads(first.dumps())).change_digest == first.change_digest


@pytest.mark.parametrize("package", ["plan", "apply"])
def test_no_decision_reads_a_reasons_code(package: str) -> None:
    """In plan/ and apply/, a reason's code is only ever turned into text (never compared or matched)."""
    offenders = []
    for path in sorted((SRC / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                parts = [node.left, *node.comparators]
                if any(_reason_code(part) for part in parts):
                    offenders.append(f"{path.name}:{node.lineno}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "startswith"
                and "code" in ast.unparse(node.func.value)
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def _reason_code(node: ast.expr) -> bool:
    text = ast.unparse(node)
    return "reason.code" in text or ("reasons" in text and ".code" in text)
