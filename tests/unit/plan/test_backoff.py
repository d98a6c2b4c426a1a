"""Per-certificate issuance backoff: the delay, what the planner defers (never drops), and apply recording failures."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from certreconcile.actual.model import (
    ActualCertificate,
    ActualState,
    IssuanceBackoff,
    Observations,
    StateMeta,
    backoff_delay,
)
from certreconcile.apply.executor import apply_plan
from certreconcile.clock import FixedClock
from certreconcile.desired.model import DesiredState
from certreconcile.domain.keys import KeyType
from certreconcile.domain.policy import OnDelete
from certreconcile.domain.status import CertStatus
from certreconcile.plan import Action, Plan, Severity, build_plan
from certreconcile.plan.backoff import CODE_BACKOFF, declaration_digest
from certreconcile.testing.fake_repository import InMemoryStore
from engine import T0, cert, desired_doc, environment, load, plan_now

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("failures", "hours"),
    [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 32), (7, 32), (1000, 32), (0, 1)],
)
def test_backoff_doubles_from_one_hour_to_a_32_hour_cap(failures: int, hours: int) -> None:
    assert backoff_delay(failures) == hours * HOUR


@pytest.fixture
def desired(tmp_path: Path) -> DesiredState:
    return load(tmp_path, desired_doc([cert("shop"), cert("api")]))


def shop_current(desired: DesiredState, **overrides: Any) -> ActualCertificate:
    base = ActualCertificate(
        id="id-shop",
        name="shop",
        domains=desired.certificates["shop"].domains,
        issuer="internal",
        key_type=KeyType.ECDSA_P256,
        serial_number="1",
        not_before=T0 - 80 * DAY,
        not_after=T0 + 5 * DAY,  # due for renewal
        status=CertStatus.ACTIVE,
        fingerprint="f" * 64,
        on_delete=OnDelete.RETIRE,
        has_key=True,
    )
    return replace(base, **overrides)


def state(*certificates: ActualCertificate, **backoffs: IssuanceBackoff) -> ActualState:
    return ActualState(meta=StateMeta("L", 3), certificates={c.name: c for c in certificates}, backoffs=dict(backoffs))


def names(plan: Plan) -> list[tuple[Action, str]]:
    return [(change.action, change.name) for change in plan.changes]


def backoff(desired: DesiredState, *, until: timedelta = 2 * HOUR, digest: str | None = "same") -> IssuanceBackoff:
    value = declaration_digest(desired, "shop") if digest == "same" else digest
    return IssuanceBackoff(failures=3, last_failure_at=T0 - HOUR, until=T0 + until, declaration_digest=value)


@pytest.mark.parametrize(
    ("case", "until", "digest", "current", "deferred"),
    [
        ("issue-backed-off", 2 * HOUR, "same", False, True),
        ("rotate-backed-off", 2 * HOUR, "same", True, True),
        ("backoff-over", -HOUR, "same", True, False),
        ("backoff-ends-now", timedelta(0), "same", False, False),
        ("declaration-changed", 2 * HOUR, "another-declaration", True, False),
        ("digest-unknown-still-backs-off", 2 * HOUR, None, True, True),
    ],
    ids=lambda value: value if isinstance(value, str) and "-" in value else None,
)
def test_the_planner_defers_issuance_while_backed_off(
    desired: DesiredState, case: str, until: timedelta, digest: str | None, current: bool, deferred: bool
) -> None:
    certificates = (shop_current(desired),) if current else ()
    plan = build_plan(
        desired, state(*certificates, shop=backoff(desired, until=until, digest=digest)), Observations(), T0
    )
    action = Action.ROTATE if current else Action.ISSUE
    # Never dropped: backed off, it is still a pending change, deferred until the backoff ends.
    (shop,) = [change for change in plan.changes if change.name == "shop" and change.action is action]
    # shop's certificate (still valid) was never pushed: while its rotation waits, it is redistributed.
    others = [(c.action, c.deferred_until) for c in plan.changes if c.name == "shop" and c.action is not action]
    assert others == ([(Action.REDISTRIBUTE, None)] if deferred and current else [])
    assert shop.deferred_until == (T0 + until if deferred else None)
    assert shop.waits(T0) is deferred
    assert (Action.ISSUE, "api") in names(plan)  # other names carry on
    assert [c.deferred_until for c in plan.changes if c.name == "api"] == [None]
    notes = [d for d in plan.diagnostics if d.code == CODE_BACKOFF]
    if deferred:
        (note,) = notes
        assert note.severity is Severity.WARNING
        assert note.summary == (
            "shop: backing off after 3 failed issuances until 2026-01-01 14:00 UTC; change the declaration or wait"
        )
        assert "certreconcile rotate shop" in note.hint
        assert plan.errors == ()
    else:
        assert notes == []


def test_a_forced_rotation_ignores_the_backoff(desired: DesiredState) -> None:
    actual = state(shop_current(desired, not_after=T0 + 60 * DAY), shop=backoff(desired))
    plan = build_plan(desired, actual, Observations(), T0, force_rotate=frozenset({"shop"}))
    (rotate,) = [c for c in plan.changes if c.name == "shop"]
    assert rotate.action is Action.ROTATE and rotate.forced
    assert [d for d in plan.diagnostics if d.code == CODE_BACKOFF] == []


def test_rotate_of_a_name_never_issued_ignores_the_backoff(desired: DesiredState) -> None:
    plan = build_plan(desired, state(shop=backoff(desired)), Observations(), T0, force_rotate=frozenset({"shop"}))
    (issue,) = [c for c in plan.changes if c.name == "shop"]
    assert issue.action is Action.ISSUE and issue.forced
    assert [d for d in plan.diagnostics if d.code == CODE_BACKOFF] == []


def test_redistribution_is_not_held_back(desired: DesiredState) -> None:
    current = shop_current(desired, not_after=T0 + 60 * DAY)  # not due: only its target is missing
    plan = build_plan(desired, state(current, shop=backoff(desired)), Observations(), T0)
    assert (Action.REDISTRIBUTE, "shop") in names(plan)


def test_the_declaration_digest_covers_issuance_inputs_only(tmp_path: Path) -> None:
    base = load(tmp_path / "a", desired_doc([cert("shop")]))
    other_target = load(
        tmp_path / "b",
        desired_doc([cert("shop", targets=["edge"])], targets={"edge": {"files": {"dir": "edge"}}}),
    )
    other_domains = load(tmp_path / "c", desired_doc([cert("shop", "shop.example.com", "www.shop.example.com")]))
    other_issuer = load(tmp_path / "d", desired_doc([cert("shop")], lifetime="30d"))
    digest = declaration_digest(base, "shop")
    assert digest is not None and len(digest) == 64
    assert declaration_digest(other_target, "shop") == digest
    assert declaration_digest(other_domains, "shop") != digest
    assert declaration_digest(other_issuer, "shop") != digest  # the issuer's declaration changed
    assert declaration_digest(base, "missing") is None


class _BrokenIssuer:
    name = "internal"

    def supported_key_types(self):  # type: ignore[no-untyped-def]
        return frozenset(KeyType)

    def issue(self, request):  # type: ignore[no-untyped-def]
        raise RuntimeError("CA unreachable")

    def revoke(self, cert_pem, reason):  # type: ignore[no-untyped-def]
        raise NotImplementedError


def test_failed_issuance_backs_off_doubling_and_a_new_declaration_resets_it(tmp_path: Path) -> None:
    clock = FixedClock(T0)
    store = InMemoryStore(clock=clock)
    desired = load(tmp_path / "one", desired_doc([cert("shop")]))
    env = replace(environment(tmp_path / "one", desired, store, clock), issuers={"internal": _BrokenIssuer()})

    waits = []
    for _ in range(7):
        plan = plan_now(desired, store, clock)
        assert names(plan) == [(Action.ISSUE, "shop")]
        assert not apply_plan(plan, desired, env).ok
        with store.session() as session:
            backoff = session.load_actual().backoffs["shop"]
        waits.append((backoff.until - clock.now()) / HOUR)
        assert backoff.declaration_digest == declaration_digest(desired, "shop")
        # Backed off: the next plan holds shop as a pending issue deferred until the backoff ends, and
        # apply skips it (the issuer is not asked, no failure is added) until then.
        clock.advance(backoff.until - clock.now() - timedelta(seconds=1))
        waiting = plan_now(desired, store, clock)
        assert [(c.action, c.deferred_until) for c in waiting.changes] == [(Action.ISSUE, backoff.until)]
        assert [d.code for d in waiting.diagnostics] == [CODE_BACKOFF]
        skipped = apply_plan(waiting, desired, env)
        assert skipped.ok and [r.outcome for r in skipped.results] == ["skipped"]
        assert skipped.results[0].message.startswith(f"waiting until {backoff.until.isoformat()}")
        with store.session() as session:
            assert session.load_actual().backoffs["shop"] == backoff
        clock.advance(timedelta(seconds=1))
    assert waits == [1, 2, 4, 8, 16, 32, 32]

    # The next failure is recorded one hour after the last one...
    assert not apply_plan(plan_now(desired, store, clock), desired, env).ok
    # ...and a changed declaration is planned at once; its own failure starts again at 1 h.
    changed = load(tmp_path / "two", desired_doc([cert("shop", "shop.example.com", "www.shop.example.com")]))
    plan = plan_now(changed, store, clock)
    assert names(plan) == [(Action.ISSUE, "shop")]
    assert not apply_plan(plan, changed, env).ok
    with store.session() as session:
        backoff = session.load_actual().backoffs["shop"]
    assert (backoff.failures, backoff.until - clock.now()) == (1, HOUR)


def test_a_backed_off_rotation_never_holds_back_the_valid_certificate(tmp_path: Path) -> None:
    """The rotation of shop fails and backs off; the target added meanwhile still gets the valid certificate."""
    clock = FixedClock(T0)
    store = InMemoryStore(clock=clock)
    targets = {"deploy": {"files": {"dir": "out/deploy"}}, "edge": {"files": {"dir": "out/edge"}}}
    first = load(tmp_path, desired_doc([cert("shop")], targets=targets))
    assert apply_plan(plan_now(first, store, clock), first, environment(tmp_path, first, store, clock)).ok
    # A new key type (a rotation) and a new target, with a CA that fails.
    second = load(tmp_path, desired_doc([cert("shop", key="rsa-2048", targets=["deploy", "edge"])], targets=targets))
    env = replace(environment(tmp_path, second, store, clock), issuers={"internal": _BrokenIssuer()})
    assert not apply_plan(plan_now(second, store, clock), second, env).ok
    with store.session() as session:
        until = session.load_actual().backoffs["shop"].until

    plan = plan_now(second, store, clock)
    assert [(c.action, c.deferred_until, c.targets) for c in plan.changes] == [
        (Action.ROTATE, until, ("deploy", "edge")),
        (Action.REDISTRIBUTE, None, ("edge",)),
    ]
    result = apply_plan(plan, second, env)
    assert result.ok
    assert [(r.change.action, r.outcome) for r in result.results] == [
        (Action.ROTATE, "skipped"),
        (Action.REDISTRIBUTE, "done"),
    ]
    with store.session() as session:
        current = session.load_actual().certificates["shop"]
    assert current.distributions["edge"].verified_at is not None
    assert current.distributions["edge"].fingerprint == current.fingerprint
    # Only the rotation is left, still waiting for its next attempt.
    again = plan_now(second, store, clock)
    assert [(c.action, c.deferred_until) for c in again.changes] == [(Action.ROTATE, until)]


@pytest.mark.parametrize(
    ("left_at_failure", "backoff_hours", "waits_hours"),
    [
        (30 * DAY, 32, 32),  # far from expiry: the doubling backoff stands
        (40 * HOUR, 32, 10),  # a quarter of the 40 h left
        (17 * HOUR, 32, 4.25),
        (2 * HOUR, 16, 1),  # never sooner than the first step
        (-5 * HOUR, 32, 32),  # already expired at the failure: nothing to save, the doubling stands
    ],
)
def test_a_renewal_backoff_never_waits_more_than_a_quarter_of_the_lifetime_left(
    desired: DesiredState, left_at_failure: timedelta, backoff_hours: int, waits_hours: float
) -> None:
    # A 6-day certificate whose renewals failed for two days (its DNS provider refusing updates)
    # doubled its backoff to 32 h with 17 h left: it expired after the fault was gone. Capped now.
    failed_at = T0 - HOUR / 2
    current = shop_current(desired, not_after=failed_at + left_at_failure)
    backed_off = IssuanceBackoff(
        failures=6, last_failure_at=failed_at, until=failed_at + backoff_hours * HOUR,
        declaration_digest=declaration_digest(desired, "shop"),
    )  # fmt: skip
    plan = build_plan(desired, state(current, shop=backed_off), Observations(), T0)
    (shop,) = [c for c in plan.changes if c.name == "shop" and c.action in (Action.ROTATE, Action.ISSUE)]
    until = failed_at + waits_hours * HOUR
    assert shop.deferred_until == (until if until > T0 else None)
