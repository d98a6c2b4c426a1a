"""Destructive changes come first in the PR comment, in a warning with the `--allow-destroy N` apply needs."""

from __future__ import annotations

from collections.abc import Callable

from certreconcile.plan.destroy import DestroyCheck, DestroyThreshold
from certreconcile.plan.plan import Action, Change, Plan, ReasonCode
from certreconcile.render import render_markdown, render_pr_comments, render_text

PlanFactory = Callable[..., Plan]
ChangeFactory = Callable[..., Change]


def removals(change_factory: ChangeFactory, count: int) -> list[Change]:
    return [
        change_factory(
            Action.RETIRE if index % 2 else Action.REVOKE,
            f"gone-{index:03d}",
            (ReasonCode.REMOVED_RETIRE, "it was removed from the desired state"),
            targets=(),
        )
        for index in range(count)
    ]


def test_the_destroy_warning_comes_first_with_the_count_and_the_flag(
    plan_factory: PlanFactory, change_factory: ChangeFactory
) -> None:
    issue = change_factory(Action.ISSUE, "api", (ReasonCode.NEW_CERTIFICATE, "it is new"))
    plan = plan_factory(
        issue,
        *removals(change_factory, 3),
        warnings=("issuer letsencrypt is not reachable",),
        destroy=DestroyCheck(managed=12, threshold=DestroyThreshold()),
    )
    text = render_markdown(plan)
    block = text.index("> [!WARNING]\n> **This plan revokes or retires 3 certificates**")
    # First after the one-line summary: before the counts, the other warnings and the list of changes.
    assert text.index("**Plan:") < block < text.index("| action | count |")
    assert text.count("> [!WARNING]") == 2
    assert block < text.rindex("> [!WARNING]") < text.index("issuer letsencrypt is not reachable")
    assert "(at most 1 certificate and at most 10% of the 12 managed)" in text
    assert "`certreconcile apply` refuses it without `--allow-destroy 3`." in text
    warning = text[block : text.index("\n\n", block)]
    assert warning.splitlines()[2:] == [
        "> - `- revoke` **gone-000** (gone-000.example.com)",
        "> - `x retire` **gone-001** (gone-001.example.com)",
        "> - `- revoke` **gone-002** (gone-002.example.com)",
    ]
    assert "api" not in warning


def test_within_the_threshold_the_warning_says_no_flag_is_needed(
    plan_factory: PlanFactory, change_factory: ChangeFactory
) -> None:
    plan = plan_factory(*removals(change_factory, 1), destroy=DestroyCheck(managed=10, threshold=DestroyThreshold()))
    text = render_markdown(plan)
    assert "> **This plan revokes or retires 1 certificate**; within the destroy threshold" in text
    assert "--allow-destroy" not in text
    assert "Warning" not in render_text(plan, color=False)
    # One more removal, or one name fewer managed, and apply needs the flag.
    over = plan_factory(*removals(change_factory, 1), destroy=DestroyCheck(managed=9, threshold=DestroyThreshold()))
    assert "without `--allow-destroy 1`" in render_markdown(over)
    assert "apply refuses it without --allow-destroy 1" in render_text(over, color=False)


def test_a_plan_that_destroys_nothing_has_no_destroy_warning(
    plan_factory: PlanFactory, change_factory: ChangeFactory
) -> None:
    plan = plan_factory(change_factory(Action.ISSUE, "api", (ReasonCode.NEW_CERTIFICATE, "it is new")))
    assert "revokes or retires" not in render_markdown(plan)
    assert "> [!WARNING]" not in render_markdown(plan)


def test_a_plan_without_a_destroy_record_still_warns(plan_factory: PlanFactory, change_factory: ChangeFactory) -> None:
    plan = plan_factory(*removals(change_factory, 2), destroy=None)
    assert "if that is over the destroy threshold, `certreconcile apply` needs `--allow-destroy 2`" in render_markdown(
        plan
    )


def test_many_removals_are_counted_in_full_but_listed_in_part(
    plan_factory: PlanFactory, change_factory: ChangeFactory
) -> None:
    plan = plan_factory(*removals(change_factory, 500), destroy=DestroyCheck(managed=600, threshold=DestroyThreshold()))
    text = render_markdown(plan)
    warning = text[text.index("> [!WARNING]") : text.index("\n\n", text.index("> [!WARNING]"))]
    assert "500 certificates" in warning and "`--allow-destroy 500`" in warning
    assert warning.count("\n> - ") == 21  # twenty names and the note
    assert "> - _… 480 more, in the list of changes._" in warning
    comments = render_pr_comments(plan)
    assert "`--allow-destroy 500`" in comments[0]
    assert comments[0].index("revokes or retires 500") < comments[0].index("<details>")
