"""Comparing the change set planned at merge with the reviewed one: what passes, what is refused."""

from __future__ import annotations

from dataclasses import replace

import pytest

from certreconcile.plan.plan import Action, Change, Reason, ReasonCode, trigger_of
from certreconcile.plan.review import compare_with_review


def change(action: Action, name: str, *codes: ReasonCode, domains: tuple[str, ...] = ()) -> Change:
    return Change(
        action=action,
        name=name,
        reasons=tuple(Reason(code, f"{code.value} message") for code in codes),
        trigger=trigger_of(Reason(code, "") for code in codes),
        domains=domains or (f"{name}.example.com",),
        issuer="internal",
        key_type="ecdsa-p256",
        targets=("deploy",),
        idempotency_key=f"{action.value}-{name}",
    )


ISSUE_Y = change(Action.ISSUE, "y", ReasonCode.NEW_CERTIFICATE)
RENEW_X = change(Action.ROTATE, "x", ReasonCode.RENEWAL_WINDOW)
ARI_W = change(Action.ROTATE, "w", ReasonCode.ARI_WINDOW, ReasonCode.EXPIRED)
ROTATE_Z_DOMAINS = change(Action.ROTATE, "z", ReasonCode.DOMAINS_CHANGED)


@pytest.mark.parametrize(
    ("reviewed", "current", "differences", "renewals"),
    [
        pytest.param([ISSUE_Y], [ISSUE_Y], [], [], id="equal"),
        pytest.param(
            [ISSUE_Y],
            [replace(ISSUE_Y, reasons=(Reason(ReasonCode.NEW_CERTIFICATE, "other words"),), replaces="c-2")],
            [],
            [],
            id="reason-text-and-ids-ignored",
        ),
        pytest.param(
            [ISSUE_Y], [ISSUE_Y, RENEW_X], [], ["+ rotate x (renewal due since the review)"], id="renewal-fell-due"
        ),
        pytest.param([ISSUE_Y, ARI_W], [ISSUE_Y], [], ["- rotate w (reviewed renewal, no longer due)"], id="renewed"),
        pytest.param(
            [ISSUE_Y], [ISSUE_Y, ROTATE_Z_DOMAINS], ["+ rotate z (new since the review)"], [], id="new-non-renewal"
        ),
        pytest.param([ISSUE_Y], [], ["- issue y (reviewed, no longer planned)"], [], id="dropped"),
        pytest.param(
            [ISSUE_Y],
            [replace(ISSUE_Y, domains=("y.example.com", "www.y.example.com"))],
            ["~ issue y: domains changed"],
            [],
            id="domains-changed",
        ),
        pytest.param(
            [RENEW_X],
            [replace(RENEW_X, targets=("deploy", "edge"), key_type="rsa-2048")],
            ["~ rotate x: key type, targets changed"],
            [],
            id="fields-changed",
        ),
        pytest.param(
            [],
            [change(Action.ROTATE, "v", ReasonCode.RENEWAL_WINDOW, ReasonCode.KEY_TYPE_CHANGED)],
            ["+ rotate v (new since the review)"],
            [],
            id="renewal-mixed-with-a-declared-change",
        ),
        pytest.param(
            [],
            [replace(RENEW_X, forced=True)],
            ["+ rotate x (new since the review)"],
            [],
            id="forced-is-no-renewal",
        ),
        pytest.param(
            [ISSUE_Y],
            [change(Action.ROTATE, "y", ReasonCode.RENEWAL_WINDOW)],
            ["- issue y (reviewed, no longer planned)"],
            ["+ rotate y (renewal due since the review)"],
            id="issue-became-rotate",
        ),
    ],
)
def test_compare_with_review(
    reviewed: list[Change], current: list[Change], differences: list[str], renewals: list[str]
) -> None:
    result = compare_with_review(reviewed, current)
    assert list(result.differences) == differences
    assert list(result.renewals) == renewals
    assert result.acceptable is (not differences)
    assert result.equal is (not differences and not renewals)
