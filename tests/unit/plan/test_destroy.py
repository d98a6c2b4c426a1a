"""The destroy threshold and `apply --allow-destroy N` (design §5c): pure verdicts, table-driven."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest

from certreconcile.actual.model import ActualCertificate, ActualState, Observations, StateMeta
from certreconcile.desired.model import DesiredState
from certreconcile.domain.keys import KeyType
from certreconcile.domain.policy import OnDelete
from certreconcile.domain.status import CertStatus
from certreconcile.errors import ApplyError
from certreconcile.plan import Action, build_plan, plan_from_json
from certreconcile.plan.destroy import DestroyCheck, DestroyThreshold, check_destroy_intent
from engine import T0, cert, desired_doc, load


@pytest.mark.parametrize(
    ("count", "managed", "threshold", "exceeded"),
    [
        (0, 0, DestroyThreshold(), False),
        (1, 10, DestroyThreshold(), False),  # exactly 10%: not more
        (1, 100, DestroyThreshold(), False),
        (1, 9, DestroyThreshold(), True),  # 11%
        (1, 1, DestroyThreshold(), True),
        (2, 1000, DestroyThreshold(), True),  # more than 1 certificate
        (2, 1000, DestroyThreshold(max_count=5), False),
        (6, 1000, DestroyThreshold(max_count=5), True),
        (5, 20, DestroyThreshold(max_count=5, max_percent=25), False),
        (5, 19, DestroyThreshold(max_count=5, max_percent=25), True),
        (1, 1000, DestroyThreshold(max_count=0), True),  # 0: every removal needs intent
        (1, 1000, DestroyThreshold(max_percent=0), True),
    ],
    ids=lambda value: repr(value) if isinstance(value, DestroyThreshold) else str(value),
)
def test_threshold(count: int, managed: int, threshold: DestroyThreshold, exceeded: bool) -> None:
    assert threshold.exceeded_by(count, managed) is exceeded


@pytest.fixture(scope="module")
def desired(tmp_path_factory: pytest.TempPathFactory) -> DesiredState:
    doc = desired_doc([cert("shop", "shop.example.com")], targets={"deploy": {"files": {"dir": "out"}}})
    return load(tmp_path_factory.mktemp("desired"), doc)


def managed(name: str, on_delete: OnDelete = OnDelete.RETIRE) -> ActualCertificate:
    return ActualCertificate(
        id=hashlib.md5(name.encode()).hexdigest(),  # noqa: S324  an id, not a secret
        name=name,
        domains=(f"{name}.example.com",),
        issuer="internal",
        key_type=KeyType.ECDSA_P256,
        serial_number="abc",
        not_before=T0 - timedelta(days=10),
        not_after=T0 + timedelta(days=80),
        status=CertStatus.ACTIVE,
        fingerprint="f" * 64,
        on_delete=on_delete,
        has_key=True,
    )


def state(*names: str, revoke: tuple[str, ...] = ()) -> ActualState:
    certs = {n: managed(n, OnDelete.REVOKE if n in revoke else OnDelete.RETIRE) for n in names}
    return ActualState(meta=StateMeta(lineage="L", serial=7), certificates=certs)


def test_the_plan_records_the_denominator_and_the_threshold(desired: DesiredState) -> None:
    actual = state("shop", "gone", "old", "legacy", revoke=("legacy",))
    threshold = DestroyThreshold(max_count=3, max_percent=50)
    plan = build_plan(desired, actual, Observations(), T0, destroy_threshold=threshold)
    assert [(c.action, c.name) for c in plan.destructive] == [
        (Action.REVOKE, "legacy"),
        (Action.RETIRE, "gone"),
        (Action.RETIRE, "old"),
    ]
    assert plan.destroy == DestroyCheck(managed=4, threshold=threshold)
    assert plan.to_json()["destroy"] == {
        "count": 3,
        "managed": 4,
        "max_count": 3,
        "max_percent": 50,
        "allow_destroy_required": True,  # 75% of the managed names
    }
    assert plan_from_json(json.loads(plan.dumps())) == plan
    assert build_plan(desired, actual, Observations(), T0).destroy == DestroyCheck(4, DestroyThreshold())


def test_over_the_threshold_apply_needs_the_exact_count(desired: DesiredState) -> None:
    plan = build_plan(desired, state("shop", "a", "b", "c", "d", "e", "f", "g"), Observations(), T0)
    with pytest.raises(ApplyError) as refused:
        check_destroy_intent(plan, 8, DestroyThreshold(), None)
    assert refused.value.code == "destroy-needs-intent"
    assert "revokes or retires 7 certificates (a, b, c, d, e and 2 more)" in refused.value.message
    assert "at most 1 certificate and at most 10% of the 8 managed" in refused.value.message
    assert refused.value.hint == "review the destructive changes, then re-run with --allow-destroy 7"
    for wrong in (0, 6, 8, 100):
        with pytest.raises(ApplyError) as mismatch:
            check_destroy_intent(plan, 8, DestroyThreshold(), wrong)
        assert mismatch.value.code == "allow-destroy-mismatch"
        assert f"--allow-destroy {wrong} does not match" in mismatch.value.message
        assert mismatch.value.hint == "review the plan, then re-run with --allow-destroy 7"
    check_destroy_intent(plan, 8, DestroyThreshold(), 7)
    check_destroy_intent(plan, 8, DestroyThreshold(max_count=7, max_percent=100), None)


def test_within_the_threshold_no_flag_is_needed_but_a_wrong_one_is_refused(desired: DesiredState) -> None:
    narrow = build_plan(desired, state("shop", "gone"), Observations(), T0)
    assert [c.name for c in narrow.destructive] == ["gone"]
    check_destroy_intent(narrow, 20, DestroyThreshold(), None)  # 1 of 20
    check_destroy_intent(narrow, 20, DestroyThreshold(), 1)
    with pytest.raises(ApplyError, match="--allow-destroy 2 does not match"):
        check_destroy_intent(narrow, 20, DestroyThreshold(), 2)
    nothing = build_plan(desired, state("shop"), Observations(), T0)
    check_destroy_intent(nothing, 1, DestroyThreshold(), None)
    with pytest.raises(ApplyError) as refused:
        check_destroy_intent(nothing, 1, DestroyThreshold(), 1)
    assert refused.value.hint == "this plan destroys nothing: drop --allow-destroy"
