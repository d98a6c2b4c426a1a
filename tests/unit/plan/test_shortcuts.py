"""The planner's shortcut (``needs_nothing``) must never hide a change: whenever it says a name needs
nothing, the full checks find nothing either. Random stored certificates around a healthy one."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certreconcile.actual.model import (
    ActualCertificate,
    DistributionState,
    Observations,
    RenewalWindow,
    ServedCertificate,
)
from certreconcile.desired.model import DesiredState
from certreconcile.domain.keys import KeyType
from certreconcile.domain.policy import OnDelete
from certreconcile.domain.status import CertStatus
from certreconcile.plan.diff import change_for_name
from certreconcile.plan.policies import needs_nothing, rotation_reasons, target_reasons
from engine import T0, cert, desired_doc, load

DAY = timedelta(days=1)
GOOD = "f" * 64
POOL = ("deploy", "edge", "gone")


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


def healthy(desired: DesiredState) -> ActualCertificate:
    spec = desired.certificates["shop"]
    return ActualCertificate(
        id="11111111-1111-1111-1111-111111111111",
        name="shop",
        domains=spec.domains,
        issuer=spec.issuer,
        key_type=spec.key_type,
        serial_number="abc",
        not_before=T0 - 10 * DAY,
        not_after=T0 + 80 * DAY,
        status=CertStatus.ACTIVE,
        fingerprint=GOOD,
        on_delete=OnDelete.RETIRE,
        has_key=True,
        distributions={
            t: DistributionState(t, GOOD, T0, T0, target_fingerprint=desired.targets[t].fingerprint)
            for t in spec.targets
        },
    )


def test_a_healthy_name_takes_the_shortcut(desired: DesiredState) -> None:
    spec = desired.certificates["shop"]
    assert needs_nothing(desired.targets, spec, healthy(desired), {}, T0)


_DAYS = st.integers(min_value=-100, max_value=100)


@st.composite
def distribution(draw: st.DrawFn, target: str, desired: DesiredState) -> DistributionState:
    declared = desired.targets[target].fingerprint if target in desired.targets else "d" * 64
    return DistributionState(
        target,
        draw(st.sampled_from([GOOD, "e" * 64])),
        T0,
        draw(st.sampled_from([T0, None])),
        draw(st.sampled_from([None, "refused"])),
        draw(st.sampled_from([None, declared, "s" * 64])),
        draw(st.sampled_from([None, GOOD])),
    )


def sometimes(draw: st.DrawFn, value: object, other: st.SearchStrategy[object]) -> object:
    """``value`` three times in four, else a draw of ``other``: names near the healthy one, often still healthy."""
    return draw(other) if draw(st.integers(0, 3)) == 0 else value


@settings(max_examples=800, deadline=None)
@given(data=st.data())
def test_the_shortcut_never_hides_a_change(desired: DesiredState, data: st.DataObject) -> None:
    draw = data.draw
    base_spec, base = desired.certificates["shop"], healthy(desired)
    spec = replace(
        base_spec,
        targets=sometimes(draw, base_spec.targets, st.lists(st.sampled_from(POOL[:2]), max_size=3).map(tuple)),
        domains=sometimes(draw, base_spec.domains, st.sampled_from([base_spec.domains[::-1], base_spec.domains[:1]])),
    )
    window = sometimes(draw, None, st.tuples(_DAYS, _DAYS))
    targets = sometimes(draw, list(base.distributions), st.lists(st.sampled_from(POOL), max_size=3, unique=True))
    current = replace(
        base,
        status=sometimes(draw, base.status, st.sampled_from(list(CertStatus))),
        has_key=sometimes(draw, True, st.booleans()),
        not_before=sometimes(draw, base.not_before, _DAYS.map(lambda days: T0 + days * DAY)),
        not_after=sometimes(draw, base.not_after, _DAYS.map(lambda days: T0 + days * DAY)),
        key_type=sometimes(draw, base.key_type, st.sampled_from(list(KeyType))),
        issuer=sometimes(draw, base.issuer, st.just("another")),
        renewal_window=None if window is None else RenewalWindow(T0 + window[0] * DAY, T0 + window[1] * DAY),
        distributions={
            t: sometimes(draw, base.distributions.get(t), distribution(t, desired)) or draw(distribution(t, desired))
            for t in targets
        },
    )
    seen = st.builds(
        ServedCertificate,
        st.sampled_from([GOOD, None, "e" * 64]),
        error=st.sampled_from([None, "handshake failed"]),
        unreachable=st.booleans(),
    )
    served = sometimes(draw, {}, st.dictionaries(st.sampled_from(POOL), seen))
    now = T0 + sometimes(draw, 0, _DAYS) * DAY
    if needs_nothing(desired.targets, spec, current, served, now):
        assert rotation_reasons(spec, current, now) == []
        assert target_reasons(desired, spec, current, served) == ({}, [])
        assert current.status is not CertStatus.ISSUED
        observations = Observations({("shop", t): seen for t, seen in served.items()})
        only = replace(desired, certificates={"shop": spec})
        assert change_for_name(only, "shop", current, observations, now) is None


def _stale(current: ActualCertificate, target: str, **fields: object) -> dict[str, DistributionState]:
    return {**current.distributions, target: replace(current.distributions[target], **fields)}  # type: ignore[arg-type]


# One change at a time to the healthy name, each making some check find something.
SINGLE = {
    "revoked": lambda c: replace(c, status=CertStatus.REVOKED),
    "rotating": lambda c: replace(c, status=CertStatus.ROTATING),
    "issued": lambda c: replace(c, status=CertStatus.ISSUED),
    "no key": lambda c: replace(c, has_key=False),
    "expired now": lambda c: replace(c, not_after=T0),
    "expired, window later": lambda c: replace(
        c, not_after=T0 - DAY, renewal_window=RenewalWindow(T0 + DAY, T0 + 2 * DAY)
    ),
    "domains": lambda c: replace(c, domains=c.domains[::-1]),
    "key type": lambda c: replace(c, key_type=KeyType.RSA_2048),
    "issuer": lambda c: replace(c, issuer="another"),
    "due": lambda c: replace(c, not_after=T0 + 5 * DAY),
    "window open": lambda c: replace(c, renewal_window=RenewalWindow(T0 - DAY, T0 - DAY)),
    "target missing": lambda c: replace(c, distributions={"deploy": c.distributions["deploy"]}),
    "target removed": lambda c: replace(
        c, distributions={**c.distributions, "gone": replace(c.distributions["deploy"], target="gone")}
    ),
    "older certificate": lambda c: replace(c, distributions=_stale(c, "edge", fingerprint="e" * 64)),
    "never verified": lambda c: replace(c, distributions=_stale(c, "edge", verified_at=None)),
    "failed": lambda c: replace(c, distributions=_stale(c, "edge", verified_at=None, last_error="refused")),
    "declaration changed": lambda c: replace(c, distributions=_stale(c, "edge", target_fingerprint="s" * 64)),
}


@pytest.mark.parametrize("change", sorted(SINGLE))
def test_each_check_stops_the_shortcut(desired: DesiredState, change: str) -> None:
    spec = desired.certificates["shop"]
    current = SINGLE[change](healthy(desired))
    found = rotation_reasons(spec, current, T0) or target_reasons(desired, spec, current, {}) != ({}, [])
    assert found or current.status is CertStatus.ISSUED
    assert not needs_nothing(desired.targets, spec, current, {}, T0)


@pytest.mark.parametrize(
    ("target", "served"),
    [
        ("edge", ServedCertificate(None)),
        ("edge", ServedCertificate("e" * 64)),
        ("edge", ServedCertificate(GOOD, error="handshake failed")),
        ("edge", ServedCertificate(GOOD, unreachable=True)),
        ("gone", ServedCertificate(GOOD)),
    ],
)
def test_an_observation_other_than_the_stored_certificate_stops_the_shortcut(
    desired: DesiredState, target: str, served: ServedCertificate
) -> None:
    spec = desired.certificates["shop"]
    assert not needs_nothing(desired.targets, spec, healthy(desired), {target: served}, T0)


def test_every_target_seen_serving_the_stored_certificate_takes_the_shortcut(desired: DesiredState) -> None:
    spec = desired.certificates["shop"]
    served = {target: ServedCertificate(GOOD) for target in spec.targets}
    assert needs_nothing(desired.targets, spec, healthy(desired), served, T0)


def test_a_target_listed_twice_stops_the_shortcut(desired: DesiredState) -> None:
    spec = replace(desired.certificates["shop"], targets=("deploy", "deploy"))
    current = replace(healthy(desired), distributions={**healthy(desired).distributions})
    assert target_reasons(desired, spec, current, {})[1] == ["edge"]
    assert not needs_nothing(desired.targets, spec, current, {}, T0)
