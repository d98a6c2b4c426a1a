"""The planner and agents: unreachable observations, agents' certificate renewals, unenrolled agents."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certreconcile.actual.model import (
    ActualCertificate,
    ActualState,
    AgentRecord,
    DistributionState,
    Observations,
    ServedCertificate,
    StateMeta,
)
from certreconcile.actual.refresh import observe_targets
from certreconcile.desired.model import DesiredState
from certreconcile.domain.keys import KeyType
from certreconcile.domain.policy import OnDelete
from certreconcile.domain.status import CertStatus
from certreconcile.plan import Action, ReasonCode, build_plan, plan_from_json
from certreconcile.plan.agents import agent_renewals, renewal_due
from certreconcile.plan.fleet import AgentRenewal
from certreconcile.plugins.ports import TargetObservation
from certreconcile.render import render_markdown, render_pr_comments, render_text
from certreconcile.render.comment import reviewed_changes_from_comments
from engine import T0, cert, desired_doc, load

DAY = timedelta(days=1)
FINGERPRINT = "f" * 64
TARGETS = ("deploy", "web-1/edge", "web-2/edge")


@pytest.fixture(scope="module")
def desired(tmp_path_factory: pytest.TempPathFactory) -> DesiredState:
    doc = desired_doc([cert("shop", targets=list(TARGETS))], targets={"deploy": {"files": {"dir": "out"}}})
    doc["agents"] = {"web-1": {"url": "https://web-1.internal:9443"}, "web-2": {"url": "https://web-2.internal:9443"}}
    return load(tmp_path_factory.mktemp("fleet"), doc)


def record(name: str, *, not_before: datetime, not_after: datetime, **extra: Any) -> AgentRecord:
    return AgentRecord(name, "0a", "a" * 64, not_before, not_after, enrolled_at=not_before, **extra)


def enrolled(**extra: Any) -> dict[str, AgentRecord]:
    return {
        name: record(name, not_before=T0 - 10 * DAY, not_after=T0 + 80 * DAY, **extra) for name in ("web-1", "web-2")
    }


def current(desired: DesiredState, **verified: datetime | None) -> ActualCertificate:
    """The certificate of ``shop``, pushed everywhere; ``verified`` overrides a target's ``verified_at``."""
    distributions = {}
    for target in TARGETS:
        key = target.replace("/", "_").replace("-", "_")
        distributions[target] = DistributionState(
            target, FINGERPRINT, T0, verified.get(key, T0), target_fingerprint=desired.targets[target].fingerprint
        )
    return ActualCertificate(
        id="1" * 32, name="shop", domains=("shop.example.com",), issuer="internal", key_type=KeyType.ECDSA_P256,
        serial_number="abc", not_before=T0 - 10 * DAY, not_after=T0 + 80 * DAY, status=CertStatus.ACTIVE,
        fingerprint=FINGERPRINT, on_delete=OnDelete.RETIRE, has_key=True, distributions=distributions,
    )  # fmt: skip


def actual(cert_: ActualCertificate | None, agents: dict[str, AgentRecord]) -> ActualState:
    certificates = {cert_.name: cert_} if cert_ is not None else {}
    return ActualState(meta=StateMeta("L", 3), certificates=certificates, agents=agents)


UNREACHABLE = ServedCertificate(None, error="connection refused", unreachable=True)


def test_an_unreachable_agent_is_never_drift_and_never_a_change_by_itself(desired: DesiredState) -> None:
    observations = Observations({("shop", "web-1/edge"): UNREACHABLE, ("shop", "web-2/edge"): UNREACHABLE})
    plan = build_plan(desired, actual(current(desired), enrolled(last_seen_at=T0 - DAY)), observations, T0)
    assert plan.changes == ()
    assert plan.is_empty
    assert plan.warnings == (
        "agent web-1 did not answer (connection refused); last seen 2025-12-31T12:00Z",
        "agent web-2 did not answer (connection refused); last seen 2025-12-31T12:00Z",
    )


def test_a_reachable_agent_serving_another_certificate_is_drift(desired: DesiredState) -> None:
    observations = Observations({("shop", "web-1/edge"): ServedCertificate("e" * 64)})
    plan = build_plan(desired, actual(current(desired), enrolled()), observations, T0)
    assert [(c.action, c.reasons[0].code) for c in plan.changes] == [(Action.REDISTRIBUTE, ReasonCode.TARGET_DRIFT)]


def test_an_owed_distribution_stays_and_says_since_when_its_agent_is_unreachable(desired: DesiredState) -> None:
    observations = Observations({("shop", "web-1/edge"): UNREACHABLE})
    cert_ = current(desired, web_1_edge=None)  # pushed, never verified: the rotation is open
    plan = build_plan(desired, actual(cert_, enrolled(last_seen_at=T0 - 2 * DAY)), observations, T0)
    (change,) = plan.changes
    assert change.action is Action.REDISTRIBUTE
    assert change.targets == ("web-1/edge",)
    (reason,) = change.reasons
    assert reason.code is ReasonCode.TARGET_UNVERIFIED
    assert reason.message == (
        "web-1/edge was never verified; agent web-1 is unreachable (last seen 2025-12-30T12:00Z)"
    )
    ((target, served),) = change.served
    assert target == "web-1/edge"
    assert served.startswith("unknown: agent web-1 is unreachable (last seen 2025-12-30T12:00Z): connection refused")
    assert not plan.is_empty
    assert "No changes" not in render_text(plan, color=False)


def test_an_agent_never_seen_says_so(desired: DesiredState) -> None:
    observations = Observations({("shop", "web-2/edge"): UNREACHABLE})
    plan = build_plan(desired, actual(current(desired, web_2_edge=None), enrolled()), observations, T0)
    assert plan.changes[0].reasons[0].message.endswith("agent web-2 is unreachable (never seen)")
    assert plan.warnings == ("agent web-2 did not answer (connection refused); never seen",)


def test_unenrolled_agents_are_warned_with_the_enroll_hint(desired: DesiredState) -> None:
    plan = build_plan(desired, actual(current(desired), {"web-1": enrolled()["web-1"]}), Observations(), T0)
    (warning,) = plan.warnings
    assert warning.startswith("agent web-2 is declared but not enrolled")
    assert "certreconcile agent enroll web-2 --csr FILE" in warning
    assert plan.agent_renewals == ()


def test_an_agent_due_for_renewal_is_a_pending_change(desired: DesiredState) -> None:
    agents = enrolled()
    agents["web-2"] = record("web-2", not_before=T0 - 60 * DAY, not_after=T0 + 9 * DAY)
    agents["web-1"] = record("web-1", not_before=T0 - 60 * DAY, not_after=T0 - DAY)
    plan = build_plan(desired, actual(current(desired), agents), Observations(), T0)
    assert plan.changes == ()
    assert plan.agent_renewals == (
        AgentRenewal("web-1", T0 - DAY, "expired 1 day ago"),
        AgentRenewal("web-2", T0 + 9 * DAY, "expires in 9 days"),
    )
    assert not plan.is_empty
    text = render_text(plan, color=False)
    assert "renew agent web-2's certificate: expires in 9 days" in text
    assert "2 agent certificates to renew" in text
    assert "renew agent web-1's certificate: expired 1 day ago" in render_markdown(plan)


def test_the_change_digest_and_the_review_data_cover_agent_renewals(desired: DesiredState) -> None:
    plan = build_plan(desired, actual(current(desired), enrolled()), Observations(), T0)
    due = replace(plan, agent_renewals=(AgentRenewal("web-1", T0 + DAY, "expires in 1 day"),))
    assert due.change_digest != plan.change_digest
    reviewed = reviewed_changes_from_comments("".join(render_pr_comments(due)))
    assert reviewed.digest == due.change_digest
    assert reviewed.changes == due.changes


def test_plans_without_agents_keep_their_change_digest(desired: DesiredState) -> None:
    plan = build_plan(desired, actual(None, enrolled()), Observations(), T0)
    body = json.dumps([c.to_json() for c in plan.changes], sort_keys=True, separators=(",", ":")).encode()
    assert plan.change_digest == hashlib.sha256(body).hexdigest()


# ---------------------------------------------------------------- properties

_instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(T0.tzinfo)  # type: ignore[arg-type]
)


@settings(max_examples=200, deadline=None)
@given(
    not_before=_instants,
    lifetime=st.timedeltas(min_value=timedelta(hours=1), max_value=timedelta(days=800)),
    offset=st.timedeltas(min_value=timedelta(days=-900), max_value=timedelta(days=900)),
)
def test_renewal_is_due_exactly_in_the_last_third(not_before: datetime, lifetime: timedelta, offset: timedelta) -> None:
    not_after = not_before + lifetime
    now = not_before + offset
    agent = record("web-1", not_before=not_before, not_after=not_after)
    due = renewal_due(agent, now)
    assert due == (3 * (not_after - now) <= lifetime)
    renewals = agent_renewals({"web-1": None}, {"web-1": agent}, now)  # type: ignore[dict-item]
    assert [r.name for r in renewals] == (["web-1"] if due else [])
    if renewals:
        assert ("expired" in renewals[0].reason) == (not_after <= now)


_served = st.builds(
    ServedCertificate,
    fingerprint=st.one_of(st.none(), st.sampled_from(["e" * 64, FINGERPRINT])),
    error=st.one_of(st.none(), st.text(max_size=20)),
    unreachable=st.just(True),
)


@settings(max_examples=150, deadline=None)
@given(
    seen=st.dictionaries(st.sampled_from(TARGETS), _served, max_size=3),
    unverified=st.sets(st.sampled_from(TARGETS)),
)
def test_unreachable_observations_never_make_drift(
    desired: DesiredState, seen: dict[str, ServedCertificate], unverified: set[str]
) -> None:
    overrides = {t.replace("/", "_").replace("-", "_"): None for t in unverified}
    cert_ = current(desired, **overrides)
    observations = Observations({("shop", t): s for t, s in seen.items()})
    with_observations = build_plan(desired, actual(cert_, enrolled()), observations, T0)
    without = build_plan(desired, actual(cert_, enrolled()), Observations(), T0)
    codes = [r.code for c in with_observations.changes for r in c.reasons]
    assert ReasonCode.TARGET_DRIFT not in codes
    # What is owed is owed all the same: unreachable observations neither add nor hide a change.
    owed = [(c.action, c.targets) for c in without.changes]
    assert [(c.action, c.targets) for c in with_observations.changes] == owed
    silent = {t.split("/")[0] for t in seen}  # one warning per agent (a plain target by its own name)
    assert len(with_observations.warnings) == len(silent)


@settings(max_examples=100, deadline=None)
@given(
    renewals=st.lists(
        st.builds(
            AgentRenewal,
            name=st.sampled_from(["web-1", "web-2", "lb-1"]),
            not_after=st.one_of(st.none(), _instants),
            reason=st.text(max_size=30),
        ),
        max_size=3,
    )
)
def test_agent_renewals_survive_the_json_round_trip(desired: DesiredState, renewals: list[AgentRenewal]) -> None:
    plan = replace(build_plan(desired, actual(current(desired), enrolled()), Observations(), T0),
                   agent_renewals=tuple(renewals))  # fmt: skip
    again = plan_from_json(json.loads(plan.dumps()))
    assert again.agent_renewals == plan.agent_renewals
    assert again.change_digest == plan.change_digest
    assert again.is_empty == (not renewals)


class _Silent:
    """A target whose host does not answer, as an agent target reports it."""

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        return TargetObservation(fingerprint=None, error="connection refused", unreachable=True)


def test_refresh_passes_unreachable_through() -> None:
    observations = observe_targets([("shop", ("shop.example.com",), "web-1/edge")], {"web-1/edge": _Silent()})
    assert observations.served[("shop", "web-1/edge")] == ServedCertificate(
        None, error="connection refused", unreachable=True
    )
