"""The plan tells the truth: a declared certificate not served and verified everywhere is a pending change.

Table-driven: a name backing off after failed issuances keeps its issue/rotate in the plan, deferred
until the backoff ends (``Change.deferred_until``); the valid certificate it already has still goes to
the targets that lack it, not deferred. The plan is never "No changes" while such a change exists.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from certreconcile.actual.model import ActualCertificate, ActualState, IssuanceBackoff, Observations, OpenRotation
from certreconcile.desired.model import DesiredState
from certreconcile.domain.status import CertStatus
from certreconcile.plan import Action, ReasonCode, build_plan
from certreconcile.plan.backoff import declaration_digest
from certreconcile.render import render_json, render_markdown, render_text
from certreconcile.render.text import EMPTY_PLAN_LINE
from engine import T0
from unit.plan.test_build_plan import DAY, actual_for, desired, state

__all__ = ["desired"]  # the module-scoped fixture, shared

HOUR = timedelta(hours=1)
UNTIL = T0 + 2 * HOUR  # the next attempt


def backed_off(desired: DesiredState, *certs: ActualCertificate) -> ActualState:
    backoff = IssuanceBackoff(1, T0 - HOUR, UNTIL, declaration_digest(desired, "shop"))
    return replace(state(*certs), backoffs={"shop": backoff})


def unverified(desired: DesiredState, target: str, **overrides: object) -> ActualCertificate:
    """shop's certificate with ``target`` pushed but never verified (say, the push of a rotation failed)."""
    cert = actual_for(desired, **overrides)
    pending = replace(cert.distributions[target], verified_at=None, last_error="target-not-serving")
    return replace(cert, distributions={**cert.distributions, target: pending})


def without(desired: DesiredState, target: str, **overrides: object) -> ActualCertificate:
    """shop's certificate never pushed to ``target`` (added to the declaration since)."""
    cert = actual_for(desired, **overrides)
    return replace(cert, distributions={t: d for t, d in cert.distributions.items() if t != target})


ROTATION_OPEN = {
    "status": CertStatus.ROTATING,
    "open_rotation": OpenRotation(1, "11111111-1111-1111-1111-111111111111", None, T0 - HOUR),
}
DUE = {"not_before": T0 - 60 * DAY, "not_after": T0 + 20 * DAY}

# (id, shop's certificate or None, expected changes: (action, deferred_until, targets, first reason))
CASES = [
    ("failed-issuance", None, [(Action.ISSUE, UNTIL, ("deploy", "edge"), ReasonCode.NEW_CERTIFICATE)]),
    (
        "failed-rotation-open",
        lambda d: actual_for(d, **ROTATION_OPEN),
        [(Action.ROTATE, UNTIL, ("deploy", "edge"), ReasonCode.ROTATION_INCOMPLETE)],
    ),
    (
        "failed-rotation-target-not-verified",
        lambda d: unverified(d, "edge", **ROTATION_OPEN),
        [
            (Action.ROTATE, UNTIL, ("deploy", "edge"), ReasonCode.ROTATION_INCOMPLETE),
            (Action.REDISTRIBUTE, None, ("edge",), ReasonCode.TARGET_FAILED),
        ],
    ),
    (
        "backoff-valid-cert-missing-from-a-target",
        lambda d: without(d, "edge", **DUE),
        [
            (Action.ROTATE, UNTIL, ("deploy", "edge"), ReasonCode.RENEWAL_WINDOW),
            (Action.REDISTRIBUTE, None, ("edge",), ReasonCode.TARGET_ADDED),
        ],
    ),
    (
        "expired-cert-is-not-pushed",
        lambda d: without(d, "edge", not_after=T0 - DAY),
        [(Action.ROTATE, UNTIL, ("deploy", "edge"), ReasonCode.EXPIRED)],
    ),
    (
        "cert-without-key-is-not-pushed",
        lambda d: without(d, "edge", has_key=False),
        [(Action.ROTATE, UNTIL, ("deploy", "edge"), ReasonCode.KEY_MISSING)],
    ),
    (
        "revoked-cert-is-not-pushed",
        lambda d: without(d, "edge", status=CertStatus.REVOKED),
        [(Action.ROTATE, UNTIL, ("deploy", "edge"), ReasonCode.PREVIOUS_REVOKED)],
    ),
    ("backoff-not-needed-when-all-is-served", actual_for, []),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_backed_off_names_stay_in_the_plan(desired: DesiredState, make: object, expected: list[object]) -> None:
    certs = (make(desired),) if callable(make) else ()
    plan = build_plan(desired, backed_off(desired, *certs), Observations(), T0)
    assert [(c.action, c.deferred_until, c.targets, c.reasons[0].code) for c in plan.changes] == expected
    for change in plan.changes:
        assert change.waits(T0) is (change.deferred_until is not None)
        assert (change.deferred_reason is not None) is (change.deferred_until is not None)
    if expected:
        assert not plan.is_empty
        assert EMPTY_PLAN_LINE not in render_text(plan, color=False)
    # The same inputs once the backoff ended: the same changes, none deferred.
    later = build_plan(desired, backed_off(desired, *certs), Observations(), UNTIL)
    assert all(change.deferred_until is None for change in later.changes)


def test_a_pending_change_is_shown_with_its_reason_and_next_attempt(desired: DesiredState) -> None:
    plan = build_plan(desired, backed_off(desired), Observations(), T0)
    (issue,) = plan.changes
    assert issue.deferred_reason == (
        "last attempt failed at 2026-01-01 11:00 UTC (1 failed issuance in a row);"
        " see `certreconcile audit --name shop --action failed`"
    )
    text = render_text(plan, color=False)
    assert "  + issue shop (waiting until 2026-01-01T14:00Z)\n" in text
    assert "# pending: last attempt failed at 2026-01-01 11:00 UTC" in text
    assert text.endswith("Plan: 1 to issue, 0 to rotate, 0 to revoke, 0 to redistribute (1 waiting for a retry).\n")
    assert "(waiting until 2026-01-01T14:00Z)" in render_markdown(plan)
    assert '"deferred_until": "2026-01-01T14:00:00+00:00"' in render_json(plan)
