"""The plan as sticky PR comments: split under GitHub's limit, marked, and carrying the reviewed change set."""

from __future__ import annotations

import re

import pytest

from certreconcile.plan.plan import Action, Plan, ReasonCode
from certreconcile.render.comment import (
    COMMENT_MARKER,
    ReviewDataError,
    render_error_comment,
    render_pr_comments,
    reviewed_changes_from_comments,
)
from unit.render.conftest import make_change, make_plan

GITHUB_LIMIT = 65_000


def big_plan(count: int) -> Plan:
    changes = [
        make_change(
            Action.ISSUE if number % 3 else Action.ROTATE,
            f"cert-{number:05d}",
            (ReasonCode.NEW_CERTIFICATE, f"no certificate for cert-{number:05d} yet"),
            domains=(f"cert-{number:05d}.example.com", f"www.cert-{number:05d}.example.com"),
        )
        for number in range(count)
    ]
    return make_plan(*changes)


@pytest.fixture(scope="module")
def five_thousand() -> tuple[Plan, list[str]]:
    plan = big_plan(5000)
    return plan, render_pr_comments(plan)


def test_5000_changes_split_under_the_limit_each_marked(five_thousand: tuple[Plan, list[str]]) -> None:
    plan, parts = five_thousand
    total = len(parts)
    assert total > 1
    for number, part in enumerate(parts, start=1):
        assert len(part) < GITHUB_LIMIT
        assert part.startswith(COMMENT_MARKER + "\n")
        assert f"<!-- certreconcile-part: {number}/{total} -->" in part
        assert f"part {number}/{total}" in part
    # The digest, hidden and visible, in the first part only.
    digest_line = f"<!-- certreconcile-change-digest: {plan.change_digest} -->"
    assert digest_line in parts[0]
    assert f"Change set digest: `{plan.change_digest}`" in parts[0]
    assert all(digest_line not in part for part in parts[1:])
    # Every change exactly once, in order, never split between parts.
    text = "".join(parts)
    names = re.findall(r"\*\*(cert-\d{5})\*\*", text)
    assert names == [change.name for change in plan.changes]
    for part in parts:
        for line in part.splitlines():
            if line.startswith("| `"):
                assert line.endswith(" |"), line


def test_review_data_round_trips_in_any_order(five_thousand: tuple[Plan, list[str]]) -> None:
    plan, parts = five_thousand
    reviewed = reviewed_changes_from_comments("\n".join(reversed(parts)))
    assert reviewed.digest == plan.change_digest
    assert reviewed.changes == plan.changes


def test_a_missing_or_edited_part_is_refused(five_thousand: tuple[Plan, list[str]]) -> None:
    _, parts = five_thousand
    with pytest.raises(ReviewDataError, match="incomplete"):
        reviewed_changes_from_comments("\n".join(parts[:-1]))
    with pytest.raises(ReviewDataError, match="digest"):
        reviewed_changes_from_comments("\n".join(parts[1:]))
    data_line = next(line for line in parts[-1].splitlines() if "review-data" in line)
    tampered = data_line.replace(data_line[60:64], "AAAA" if data_line[60:64] != "AAAA" else "BBBB")
    with pytest.raises(ReviewDataError):
        reviewed_changes_from_comments("\n".join(parts).replace(data_line, tampered))


def test_a_small_plan_is_one_comment() -> None:
    plan = big_plan(3)
    (only,) = render_pr_comments(plan)
    assert only.startswith(COMMENT_MARKER)
    assert "<!-- certreconcile-part: 1/1 -->" in only
    assert "### certreconcile plan" in only
    assert reviewed_changes_from_comments(only).changes == plan.changes


def test_an_empty_plan_still_carries_its_digest() -> None:
    plan = make_plan()
    (only,) = render_pr_comments(plan)
    assert plan.change_digest in only
    assert reviewed_changes_from_comments(only).changes == ()


def test_an_over_long_change_is_truncated_with_a_note() -> None:
    huge = make_change(
        Action.ISSUE,
        "huge",
        (ReasonCode.NEW_CERTIFICATE, "new"),
        domains=tuple(f"host-{number:05d}.example.com" for number in range(5000)),
    )
    plan = make_plan(make_change(Action.ISSUE, "small", (ReasonCode.NEW_CERTIFICATE, "new")), huge)
    parts = render_pr_comments(plan)
    assert all(len(part) < GITHUB_LIMIT for part in parts)
    text = "".join(parts)
    assert "row truncated" in text
    assert text.count("**huge**") == 1
    assert text.count("**small**") == 1
    assert reviewed_changes_from_comments(text).changes == plan.changes  # the data is never truncated


def test_names_cannot_break_out_of_the_hidden_markers() -> None:
    plan = make_plan(
        make_change(Action.ISSUE, "x", (ReasonCode.NEW_CERTIFICATE, "--> <!-- certreconcile-change-digest: 00 -->"))
    )
    (only,) = render_pr_comments(plan)
    assert only.count("-->") == only.count("<!--")
    assert reviewed_changes_from_comments(only).digest == plan.change_digest


def test_error_comment_is_marked_and_escaped() -> None:
    body = render_error_comment(["certs/a.yaml:3:5: unknown issuer <b>@team</b>"])
    assert body.startswith(COMMENT_MARKER)
    assert "<b>" not in body
    assert "&#64;team" in body
    assert "change-digest" not in body
    many = render_error_comment([f"problem {number} " + "x" * 200 for number in range(1000)])
    assert len(many) < GITHUB_LIMIT
    assert "more not shown" in many
