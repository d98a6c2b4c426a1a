"""Table-driven planner tests: (desired, actual, observations, now) → changes, with ids."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certreconcile.actual.model import (
    ActualCertificate,
    ActualState,
    DistributionState,
    Observations,
    RenewalWindow,
    ServedCertificate,
    StateMeta,
)
from certreconcile.desired.model import DesiredState
from certreconcile.domain.durations import RenewBefore
from certreconcile.domain.keys import KeyType
from certreconcile.domain.policy import OnDelete, Origin
from certreconcile.domain.status import CertStatus
from certreconcile.plan import Action, ReasonCode, build_plan
from certreconcile.plan.policies import check_renewal_window, earliest_renewal, renewal_time
from engine import T0, cert, desired_doc, load

DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


@pytest.fixture(scope="module")
def desired(tmp_path_factory: pytest.TempPathFactory) -> DesiredState:
    targets = {"deploy": {"files": {"dir": "out"}}, "edge": {"files": {"dir": "edge"}}}
    return load(
        tmp_path_factory.mktemp("desired"),
        desired_doc(
            [cert("shop", "shop.example.com", "www.shop.example.com", targets=["deploy", "edge"], renew_before="30d")],
            targets=targets,
        ),
    )


def actual_for(desired: DesiredState, **overrides: object) -> ActualCertificate:
    spec = desired.certificates["shop"]
    base = ActualCertificate(
        id="11111111-1111-1111-1111-111111111111",
        name="shop",
        domains=spec.domains,
        issuer="internal",
        key_type=KeyType.ECDSA_P256,
        serial_number="abc",
        not_before=T0 - 10 * DAY,
        not_after=T0 + 80 * DAY,
        status=CertStatus.ACTIVE,
        fingerprint="f" * 64,
        on_delete=OnDelete.RETIRE,
        has_key=True,
        distributions={
            t: DistributionState(
                target=t,
                fingerprint="f" * 64,
                pushed_at=T0,
                verified_at=T0,
                target_fingerprint=desired.targets[t].fingerprint,
            )
            for t in spec.targets
        },
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def state(*certs: ActualCertificate) -> ActualState:
    return ActualState(meta=StateMeta(lineage="L", serial=7), certificates={c.name: c for c in certs})


CASES = [
    ("unchanged", {}, None, []),
    (
        "renewal-window",
        {"not_before": T0 - 60 * DAY, "not_after": T0 + 20 * DAY},
        None,
        [(Action.ROTATE, ReasonCode.RENEWAL_WINDOW)],
    ),
    ("expired", {"not_after": T0 - DAY}, None, [(Action.ROTATE, ReasonCode.EXPIRED)]),
    ("revoked", {"status": CertStatus.REVOKED}, None, [(Action.ROTATE, ReasonCode.PREVIOUS_REVOKED)]),
    ("key-missing", {"has_key": False}, None, [(Action.ROTATE, ReasonCode.KEY_MISSING)]),
    ("domains-changed", {"domains": ("shop.example.com",)}, None, [(Action.ROTATE, ReasonCode.DOMAINS_CHANGED)]),
    ("key-type-changed", {"key_type": KeyType.RSA_2048}, None, [(Action.ROTATE, ReasonCode.KEY_TYPE_CHANGED)]),
    ("issuer-changed", {"issuer": "other"}, None, [(Action.ROTATE, ReasonCode.ISSUER_CHANGED)]),
    ("rotation-stopped", {"status": CertStatus.ROTATING}, None, [(Action.ROTATE, ReasonCode.ROTATION_INCOMPLETE)]),
    ("issued-not-final", {"status": CertStatus.ISSUED}, None, [(Action.REDISTRIBUTE, ReasonCode.ROTATION_INCOMPLETE)]),
    ("drift", {}, ServedCertificate(fingerprint="e" * 64), [(Action.REDISTRIBUTE, ReasonCode.TARGET_DRIFT)]),
    ("drift-matches", {}, ServedCertificate(fingerprint="f" * 64), []),
]


@pytest.mark.parametrize(("overrides", "served", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_single_name(
    desired: DesiredState,
    overrides: dict[str, object],
    served: ServedCertificate | None,
    expected: list[tuple[Action, ReasonCode]],
) -> None:
    observations = Observations({("shop", "edge"): served}) if served else Observations()
    plan = build_plan(desired, state(actual_for(desired, **overrides)), observations, T0)
    assert [(c.action, c.reasons[0].code) for c in plan.changes] == expected


def test_new_name_is_issued_and_removed_names_follow_on_delete(desired: DesiredState) -> None:
    gone = actual_for(desired, name="gone", id="2" * 32)
    revoke = actual_for(desired, name="revoke-me", id="3" * 32, on_delete=OnDelete.REVOKE)
    plan = build_plan(desired, state(gone, revoke), Observations(), T0)
    assert [(c.action, c.name) for c in plan.changes] == [
        (Action.REVOKE, "revoke-me"),
        (Action.RETIRE, "gone"),
        (Action.ISSUE, "shop"),
    ]
    assert plan.count(Action.ISSUE) == 1


def test_api_owned_names_absent_from_the_declarations_are_left_alone(desired: DesiredState) -> None:
    """The facade's certificates (origin api) are never retired or revoked by declarations that omit them."""
    kept = actual_for(desired, name="api-retire", id="4" * 32, origin=Origin.API)
    kept_revoke = actual_for(desired, name="api-revoke", id="5" * 32, origin=Origin.API, on_delete=OnDelete.REVOKE)
    gone = actual_for(desired, name="gone", id="2" * 32)
    plan = build_plan(desired, state(kept, kept_revoke, gone), Observations(), T0)
    assert [(c.action, c.name) for c in plan.changes] == [(Action.RETIRE, "gone"), (Action.ISSUE, "shop")]
    # A declared name owned by the API is managed like any other (here: rotated when due).
    declared = actual_for(desired, origin=Origin.API, not_after=T0 + 5 * DAY)
    assert [c.action for c in build_plan(desired, state(declared), Observations(), T0).changes] == [Action.ROTATE]


def test_target_changes(desired: DesiredState) -> None:
    spec = desired.certificates["shop"]
    dists = dict(actual_for(desired).distributions)
    dists.pop("edge")
    dists["old"] = DistributionState(target="old", fingerprint="f" * 64, pushed_at=T0, verified_at=T0)
    dists["deploy"] = replace(dists["deploy"], verified_at=None)
    plan = build_plan(desired, state(actual_for(desired, distributions=dists)), Observations(), T0)
    (change,) = plan.changes
    assert change.action is Action.REDISTRIBUTE
    assert change.targets == ("deploy", "edge") == spec.targets
    assert change.removed_targets == ("old",)
    codes = [r.code for r in change.reasons]
    assert codes == [ReasonCode.TARGET_UNVERIFIED, ReasonCode.TARGET_ADDED, ReasonCode.TARGET_REMOVED]


def test_forced_rotation(desired: DesiredState) -> None:
    plan = build_plan(desired, state(actual_for(desired)), Observations(), T0, force_rotate=frozenset({"shop"}))
    assert [(c.action, c.reasons[0].code) for c in plan.changes] == [(Action.ROTATE, ReasonCode.FORCED)]


def test_plan_records_lineage_serial_and_is_byte_deterministic(desired: DesiredState) -> None:
    actual = state(actual_for(desired, not_after=T0 + 5 * DAY))
    first = build_plan(desired, actual, Observations(), T0)
    second = build_plan(desired, actual, Observations(), T0)
    assert first.dumps() == second.dumps()
    assert (first.lineage, first.serial, first.desired_digest) == ("L", 7, desired.digest)


def test_naive_now_is_refused(desired: DesiredState) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build_plan(desired, state(), Observations(), T0.replace(tzinfo=None))


@pytest.mark.parametrize(
    "renew",
    [
        RenewBefore(),
        RenewBefore(duration=30 * DAY),
        RenewBefore(fraction=0.99),
        RenewBefore(duration=400 * DAY),
        RenewBefore(fraction=0.01),
    ],
)
@pytest.mark.parametrize("serial", ["1", "ff", "deadbeef"])
def test_renewal_time_stays_inside_the_lifetime(desired: DesiredState, renew: RenewBefore, serial: str) -> None:
    spec = replace(desired.certificates["shop"], renew_before=renew)
    current = actual_for(desired, serial_number=serial, not_before=T0, not_after=T0 + 90 * DAY)
    due = renewal_time(spec, current)
    assert current.not_before < due < current.not_after


_SECONDS = st.integers(min_value=-10 * 86400, max_value=400 * 86400)


@settings(max_examples=400, deadline=None)
@given(
    lifetime=_SECONDS,
    renew=st.one_of(
        st.just(RenewBefore()),
        st.builds(lambda s: RenewBefore(duration=timedelta(seconds=s)), st.integers(1, 500 * 86400)),
        st.builds(lambda f: RenewBefore(fraction=f), st.floats(0.001, 0.999)),
    ),
    serial=st.text("0123456789abcdef", min_size=1, max_size=8),
    window=st.one_of(st.none(), st.tuples(_SECONDS, _SECONDS)),
    now_offset=_SECONDS,
)
def test_the_renewal_check_shortcut_never_skips_a_due_certificate(
    desired: DesiredState,
    lifetime: int,
    renew: RenewBefore,
    serial: str,
    window: tuple[int, int] | None,
    now_offset: int,
) -> None:
    """check_renewal_window skips computing the jitter before earliest_renewal: it must never be after the
    renewal time, whatever the lifetime (even a stored one that is negative) or the CA's window (even reversed)."""
    spec = replace(desired.certificates["shop"], renew_before=renew)
    ari = None if window is None else RenewalWindow(T0 + window[0] * SECOND, T0 + window[1] * SECOND)
    current = actual_for(
        desired, serial_number=serial, not_before=T0, not_after=T0 + lifetime * SECOND, renewal_window=ari
    )
    assert earliest_renewal(spec, current) <= renewal_time(spec, current)
    now = T0 + now_offset * SECOND
    due = current.not_after > now >= renewal_time(spec, current)
    assert bool(check_renewal_window(spec, current, now)) is due


def test_default_renew_before_is_min_30d_or_a_third_and_half_for_short_lived() -> None:
    assert RenewBefore().for_lifetime(90 * DAY) == 30 * DAY
    assert RenewBefore().for_lifetime(30 * DAY) == 10 * DAY
    assert RenewBefore().for_lifetime(10 * DAY) == 10 * DAY / 3
    # Short-lived certificates (Let's Encrypt's 6-day profile) renew at half their life.
    assert RenewBefore().for_lifetime(6 * DAY) == 3 * DAY
    assert RenewBefore(fraction=0.5).for_lifetime(6 * DAY) == 3 * DAY
