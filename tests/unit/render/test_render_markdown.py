from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from certreconcile.plan.plan import Action, Change, Plan, ReasonCode
from certreconcile.render import DEFAULT_LIMIT, escape_markdown, render_markdown

PlanFactory = Callable[..., Plan]
ChangeFactory = Callable[..., Change]

NOTE = re.compile(
    r"_… (\d+) more changes? not shown \(the full plan is in the job log / "
    r"`certreconcile plan --format json`\)\._"
)


def big_plan(plan_factory: PlanFactory, change_factory: ChangeFactory, size: int) -> Plan:
    actions = list(Action)
    changes = [
        change_factory(
            actions[index % len(actions)],
            f"site-{index:05d}",
            (ReasonCode.RENEWAL_WINDOW, f"it expires in {index % 30} days (renew_before 30d)"),
            domains=(f"site-{index:05d}.example.com", f"www.site-{index:05d}.example.com"),
        )
        for index in range(size)
    ]
    return plan_factory(*changes, warnings=("this apply would exceed a rate limit",))


def test_5000_changes_are_truncated_below_the_limit(
    plan_factory: PlanFactory, change_factory: ChangeFactory
) -> None:
    plan = big_plan(plan_factory, change_factory, 5000)
    text = render_markdown(plan)
    assert DEFAULT_LIMIT == 65000
    assert len(text) <= 65000
    match = NOTE.search(text)
    assert match is not None
    shown = text.count("| `") - 5  # rows of the details table, minus the five summary rows
    assert shown > 0
    assert int(match.group(1)) == 5000 - shown
    assert f"5000 changes (first {shown} shown)" in text
    # The summary is complete although the details are not.
    assert (
        "**Plan: 1000 to issue, 1000 to rotate, 1000 to revoke, 1000 to redistribute, 1000 to retire.**"
        in text
    )
    for action in Action:
        assert f"| `{action.symbol}` {action.value} | 1000 |" in text
    assert "this apply would exceed a rate limit" in text
    assert text.index("**Plan:") < text.index("<details>")
    assert text.rstrip().endswith("</details>")


@pytest.mark.parametrize("limit", [1, 40, 300, 1200, 5000, 20000])
def test_any_limit_is_honoured(limit: int, plan_factory: PlanFactory, change_factory: ChangeFactory) -> None:
    plan = big_plan(plan_factory, change_factory, 300)
    assert len(render_markdown(plan, limit=limit)) <= limit


def test_many_warnings_are_cut_but_the_counts_stay(
    plan_factory: PlanFactory, change_factory: ChangeFactory
) -> None:
    warnings = tuple(f"warning number {index} " + "x" * 80 for index in range(2000))
    plan = plan_factory(change_factory(Action.ISSUE, "shop"), warnings=warnings)
    text = render_markdown(plan)
    assert len(text) <= DEFAULT_LIMIT
    assert "more warnings not shown" in text
    assert "| `+` issue | 1 |" in text
    assert "**shop**" in text  # the one change still fits


def test_small_plan_is_not_truncated(sample_plan: tuple[str, Plan]) -> None:
    _, plan = sample_plan
    text = render_markdown(plan)
    assert NOTE.search(text) is None
    for change in plan.changes:
        assert f"**{escape_markdown(change.name)}**" in text


def test_empty_plan_has_no_details(plan_factory: PlanFactory) -> None:
    text = render_markdown(plan_factory())
    assert "**No changes. Certificates match the desired state.**" in text
    assert "<details>" not in text


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a|b", "a&#124;b"),
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("`rm -rf`", "&#96;rm -rf&#96;"),
        ("*bold* _it_ [link](x) ~~s~~", "\\*bold\\* \\_it\\_ \\[link\\](x) \\~\\~s\\~\\~"),
        ("a&amp;b", "a&amp;amp;b"),
        ("@everyone", "&#64;everyone"),
        ("line\nbreak", "line break"),
        ("shop.example.com", "shop.example.com"),
    ],
)
def test_escape_markdown(raw: str, escaped: str) -> None:
    assert escape_markdown(raw) == escaped


def test_user_strings_cannot_break_the_table(
    plan_factory: PlanFactory, change_factory: ChangeFactory
) -> None:
    plan = plan_factory(
        change_factory(
            Action.REDISTRIBUTE,
            "shop",
            (ReasonCode.TARGET_DRIFT, "serves `x` | <img src=x onerror=alert(1)>\n| forged | row |"),
            domains=("a|b.example.com", "<b>.example.com"),
            served=(("edge|nginx", "</details><h1>owned</h1>"),),
        ),
        warnings=("</details> `pwned` | x",),
    )
    text = render_markdown(plan)
    assert "<img" not in text
    assert "<b>" not in text
    assert "<h1>" not in text
    assert "`pwned`" not in text
    assert text.count("</details>") == 1
    rows = [line for line in text.splitlines() if line.startswith("| `> redistribute`")]
    assert len(rows) == 1
    assert rows[0].count("|") == 6  # five cells: no pipe leaked from the data


def test_limit_must_be_positive(plan_factory: PlanFactory) -> None:
    with pytest.raises(ValueError, match="limit"):
        render_markdown(plan_factory(), limit=0)
