from __future__ import annotations

from collections.abc import Callable

import pytest

from certreconcile.plan.plan import Action, Change, Plan, ReasonCode
from certreconcile.render import EMPTY_PLAN_LINE, HEADER_LINE, render_text, summary_line

PlanFactory = Callable[..., Plan]
ChangeFactory = Callable[..., Change]


def test_no_escape_codes_without_color(sample_plan: tuple[str, Plan]) -> None:
    _, plan = sample_plan
    assert "\x1b" not in render_text(plan, color=False)


def test_color_marks_each_action(sample_plan: tuple[str, Plan]) -> None:
    _, plan = sample_plan
    colored = render_text(plan, color=True)
    assert "\x1b[" in colored
    for change in plan.changes:
        assert f"{change.action.symbol} {change.action.value}\x1b[0m {change.name}" in colored


@pytest.mark.parametrize(
    ("action", "code"),
    [
        (Action.ISSUE, "\x1b[32m"),
        (Action.ROTATE, "\x1b[33m"),
        (Action.REVOKE, "\x1b[31m"),
        (Action.REDISTRIBUTE, "\x1b[36m"),
        (Action.RETIRE, "\x1b[35m"),
    ],
    ids=lambda value: str(value) if isinstance(value, Action) else "",
)
def test_action_colors(
    action: Action, code: str, plan_factory: PlanFactory, change_factory: ChangeFactory
) -> None:
    plan = plan_factory(change_factory(action, "shop", (ReasonCode.FORCED, "forced")))
    assert f"{code}{action.symbol} {action.value}\x1b[0m shop" in render_text(plan, color=True)


def test_empty_plan_closes_with_no_changes(plan_factory: PlanFactory) -> None:
    text = render_text(plan_factory(), color=False)
    assert text == EMPTY_PLAN_LINE + "\n"
    assert HEADER_LINE not in text


def test_closing_line_without_retire(plan_factory: PlanFactory, change_factory: ChangeFactory) -> None:
    plan = plan_factory(
        change_factory(Action.ISSUE, "a"),
        change_factory(Action.ISSUE, "b"),
        change_factory(Action.ROTATE, "c"),
    )
    text = render_text(plan, color=False)
    assert text.startswith(HEADER_LINE + "\n")
    assert text.endswith("\nPlan: 2 to issue, 1 to rotate, 0 to revoke, 0 to redistribute.\n")
    assert summary_line(plan) == "Plan: 2 to issue, 1 to rotate, 0 to revoke, 0 to redistribute."


def test_closing_line_with_retire(plan_factory: PlanFactory, change_factory: ChangeFactory) -> None:
    plan = plan_factory(change_factory(Action.RETIRE, "a"), change_factory(Action.REVOKE, "b"))
    assert render_text(plan, color=False).splitlines()[-1] == (
        "Plan: 0 to issue, 0 to rotate, 1 to revoke, 0 to redistribute, 1 to retire."
    )


def test_change_block_layout(plan_factory: PlanFactory, change_factory: ChangeFactory) -> None:
    plan = plan_factory(
        change_factory(
            Action.ROTATE,
            "shop",
            (ReasonCode.RENEWAL_WINDOW, "it expires in 12 days (renew_before 30d)"),
            (ReasonCode.KEY_TYPE_CHANGED, "the key type changed from rsa-2048"),
            domains=("shop.example.com", "www.shop.example.com"),
            replaces_fingerprint="9f86d081884c7d659a2feaa0c55ad015",
        )
    )
    lines = render_text(plan, color=False).splitlines()
    assert lines[2:8] == [
        "  # shop will be rotated because it expires in 12 days (renew_before 30d); "
        "the key type changed from rsa-2048",
        "  ~ rotate shop",
        "      domains: shop.example.com, www.shop.example.com",
        "      issuer:  internal   key: ecdsa-p256",
        "      targets: edge-nginx, deploy-dir",
        "      replaces 9f86d081884c7d65",
    ]


def test_replaces_is_not_shown_for_issue(plan_factory: PlanFactory, change_factory: ChangeFactory) -> None:
    plan = plan_factory(change_factory(Action.ISSUE, "shop", replaces_fingerprint="9f86d081884c7d65"))
    assert "replaces" not in render_text(plan, color=False)


def test_warnings_are_printed_before_the_closing_line(plan_factory: PlanFactory) -> None:
    plan = plan_factory(warnings=("first\nsecond line", "other"))
    assert render_text(plan, color=False) == (
        f"Warning: first\n  second line\n\nWarning: other\n\n{EMPTY_PLAN_LINE}\n"
    )


@pytest.mark.parametrize("color", [False, True], ids=["no-color", "color"])
def test_control_characters_in_data_are_neutralised(
    color: bool, plan_factory: PlanFactory, change_factory: ChangeFactory
) -> None:
    hostile = "evil\x1b]0;owned\x07\x1b[2J\u202egnp.exe\r"
    plan = plan_factory(
        change_factory(
            Action.REDISTRIBUTE,
            "shop",
            (ReasonCode.TARGET_DRIFT, hostile),
            domains=(hostile,),
            served=(("edge-nginx", hostile),),
        ),
        warnings=(hostile,),
    )
    text = render_text(plan, color=color)
    assert "\x07" not in text
    assert "\r" not in text
    assert "\u202e" not in text
    assert "\x1b]" not in text
    assert "\x1b[2J" not in text
    assert "evil\\x1b]0;owned\\x07" in text
