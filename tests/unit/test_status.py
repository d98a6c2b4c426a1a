"""``certreconcile status``: flags for what an operator should look at, table and JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from certreconcile.actual.model import DistributionState, OpenRotation
from certreconcile.cli.status import render_status_json, render_status_table, status_flags
from certreconcile.desired.model import DesiredState
from certreconcile.domain.policy import Origin
from certreconcile.domain.status import CertStatus
from certreconcile.plan.policies import renewal_time
from engine import T0
from unit.plan.test_build_plan import DAY, actual_for, desired, state

__all__ = ["desired"]  # the module-scoped fixture, shared


@pytest.mark.parametrize(
    ("overrides", "now_offset", "labels"),
    [
        pytest.param({}, 0, (), id="fine"),
        pytest.param({}, 55 * DAY, ("expiring-soon",), id="renewal-due"),
        pytest.param({}, 81 * DAY, ("expired",), id="expired"),
        pytest.param({"distributions": {}}, 0, ("unverified:deploy,edge",), id="never-pushed"),
        pytest.param(
            {"open_rotation": OpenRotation(1, "11111111-1111-1111-1111-111111111111", None, T0)},
            0,
            ("rotation-open",),
            id="rotation-open",
        ),
    ],
)
def test_flags(
    desired: DesiredState, overrides: dict[str, object], now_offset: timedelta | int, labels: tuple[str, ...]
) -> None:
    cert = actual_for(desired, **overrides)
    now = T0 + (now_offset if isinstance(now_offset, timedelta) else timedelta(0))
    flags = status_flags(cert, desired.certificates["shop"], now, declared=True)
    assert flags.labels == labels
    assert flags.renewal_due_at == renewal_time(desired.certificates["shop"], cert)


def test_a_target_holding_an_older_certificate_is_unverified(desired: DesiredState) -> None:
    cert = actual_for(desired)
    stale = replace(cert.distributions["edge"], fingerprint="0" * 64)
    cert = replace(cert, distributions={**cert.distributions, "edge": stale})
    assert status_flags(cert, desired.certificates["shop"], T0, declared=True).labels == ("unverified:edge",)
    pending = DistributionState("deploy", cert.fingerprint, T0, None)
    cert = replace(cert, distributions={**cert.distributions, "deploy": pending})
    assert status_flags(cert, desired.certificates["shop"], T0, declared=True).unverified_targets == ("deploy", "edge")


def test_without_declarations_renewal_is_estimated_and_undeclared_names_are_flagged(desired: DesiredState) -> None:
    cert = actual_for(desired)
    assert status_flags(cert, None, T0, declared=False).labels == ("not-declared",)
    soon = status_flags(cert, None, cert.not_after - 3 * DAY, declared=None)
    assert soon.expiring_soon
    assert soon.renewal_due_at is None


def test_table_and_json(desired: DesiredState) -> None:
    fine = actual_for(desired)
    rotating = replace(
        actual_for(desired, distributions={}),
        name="api",
        open_rotation=OpenRotation(1, "x", None, T0),
    )
    actual = state(fine, rotating)
    table = render_status_table(actual, T0, color=False, specs=desired.certificates)
    lines = table.splitlines()
    assert lines[0].split()[-1] == "FLAGS"
    assert "not-declared" in next(line for line in lines if line.startswith("api"))
    assert next(line for line in lines if line.startswith("shop")).rstrip().endswith("-")
    assert lines[-1] == "Attention: 1 with an open rotation."  # api is not declared: no targets expected
    assert "\x1b" not in table
    document = json.loads(render_status_json(actual, T0, desired.certificates))
    by_name = {row["name"]: row for row in document["certificates"]}
    assert by_name["shop"]["flags"] == []
    assert by_name["api"]["flags"] == ["rotation-open", "not-declared"]
    assert by_name["api"]["open_rotation_since"] == T0.isoformat()


def test_pending_changes_and_names_never_issued_are_flagged(desired: DesiredState) -> None:
    """A failed first issuance (no certificate at all) and a deferred rotation are flagged, never "fine"."""
    from certreconcile.actual.model import IssuanceBackoff, Observations
    from certreconcile.plan import build_plan
    from certreconcile.plan.backoff import declaration_digest

    until = T0 + timedelta(hours=2)
    backoff = IssuanceBackoff(1, T0 - timedelta(hours=1), until, declaration_digest(desired, "shop"))
    never_issued = replace(state(), backoffs={"shop": backoff})
    plan = build_plan(desired, never_issued, Observations(), T0)
    table = render_status_table(never_issued, T0, color=True, specs=desired.certificates, plan=plan)
    (row,) = [line for line in table.splitlines() if line.startswith("shop")]
    assert row.split()[:4] == ["shop", "shop.example.com", "(+1)", "internal"]
    assert "not-issued" in row and "pending" in row and "next-attempt:2026-01-01T14:00Z" in row
    assert table.splitlines()[-1] == (
        "Attention: 1 with unverified targets, 1 with pending changes, 1 waiting for a retry."
    )
    (shop,) = json.loads(render_status_json(never_issued, T0, desired.certificates, plan))["certificates"]
    assert shop["status"] == "not-issued" and shop["not_after"] is None
    assert shop["flags"] == ["unverified:deploy,edge", "pending", "next-attempt:2026-01-01T14:00Z"]
    assert (shop["pending"], shop["next_attempt_at"]) == (["issue"], until.isoformat())

    rotating = replace(state(actual_for(desired, status=CertStatus.ROTATING)), backoffs={"shop": backoff})
    plan = build_plan(desired, rotating, Observations(), T0)
    (shop,) = json.loads(render_status_json(rotating, T0, desired.certificates, plan))["certificates"]
    assert shop["status"] == "rotating"
    assert shop["flags"] == ["pending", "next-attempt:2026-01-01T14:00Z"]
    assert shop["pending"] == ["rotate"]


def test_status_shows_the_owner_of_api_issued_certificates(desired: DesiredState) -> None:
    git = actual_for(desired, name="git")
    api = actual_for(desired, name="api", id="a" * 32, origin=Origin.API)
    actual = state(git, api)
    rows = {row["name"]: row for row in json.loads(render_status_json(actual, T0, specs={}))["certificates"]}
    assert (rows["api"]["owner"], rows["api"]["flags"]) == ("api", ["owner:api"])
    assert (rows["git"]["owner"], rows["git"]["flags"]) == ("git", ["not-declared"])
    table = render_status_table(actual, T0, color=False, specs={})
    assert [line.split()[-1] for line in table.splitlines()[1:3]] == ["owner:api", "not-declared"]
