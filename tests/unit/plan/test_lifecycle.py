"""The lifecycle moves (pure): which stored statuses ``now`` made untrue, table-driven with ids.

And the two promises around them: ``expiring_soon`` falls exactly when the planner plans the renewal
(the same renewal time, ARI and jitter included), and the moves never change a plan.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from certreconcile.actual.model import ActualCertificate, ActualState, Observations, RenewalWindow, StateMeta
from certreconcile.actual.store import LapsedCertificate
from certreconcile.desired.model import DesiredState
from certreconcile.domain.keys import KeyType
from certreconcile.domain.policy import OnDelete
from certreconcile.domain.status import CertStatus, check_transition
from certreconcile.plan import ReasonCode, build_plan
from certreconcile.plan.lifecycle import MoveReason, StatusMove, status_moves
from certreconcile.plan.policies import check_renewal_window, renewal_time
from engine import T0, cert, desired_doc, load

DAY = timedelta(days=1)
SHOP_ID = "11111111-1111-1111-1111-111111111111"
OTHER_ID = "22222222-2222-2222-2222-222222222222"


@pytest.fixture(scope="module")
def desired(tmp_path_factory: pytest.TempPathFactory) -> DesiredState:
    return load(
        tmp_path_factory.mktemp("desired"),
        desired_doc([cert("shop", "shop.example.com", renew_before="30d")]),
    )


def current(name: str = "shop", **overrides: object) -> ActualCertificate:
    base = ActualCertificate(
        id=SHOP_ID if name == "shop" else OTHER_ID,
        name=name,
        domains=(f"{name}.example.com",),
        issuer="internal",
        key_type=KeyType.ECDSA_P256,
        serial_number=f"serial-{name}",
        not_before=T0,
        not_after=T0 + 90 * DAY,
        status=CertStatus.ACTIVE,
        fingerprint="f" * 64,
        on_delete=OnDelete.RETIRE,
        has_key=True,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def state(*certs: ActualCertificate) -> ActualState:
    return ActualState(meta=StateMeta(lineage="L", serial=3), certificates={c.name: c for c in certs})


def due(desired: DesiredState, cert: ActualCertificate) -> datetime:
    return renewal_time(desired.certificates["shop"], cert)


ARI = RenewalWindow(start=T0 + 40 * DAY, end=T0 + 42 * DAY)
NOT_AFTER = T0 + 90 * DAY
S = CertStatus

# (id, the current certificate's overrides (None: no current), lapsed rows, now: "due±x" or a time,
#  expected (old, new, reason) for the one move (None: no move))
CASES: list[tuple[str, dict[str, object] | None, list[LapsedCertificate], str | datetime, object]] = [
    ("active-before-window", {}, [], T0 + 30 * DAY, None),
    ("active-just-before-renewal-time", {}, [], "due-1us", None),
    ("active-at-renewal-time", {}, [], "due", (S.ACTIVE, S.EXPIRING_SOON, MoveReason.RENEWAL_WINDOW)),
    ("active-in-window", {}, [], "due+1d", (S.ACTIVE, S.EXPIRING_SOON, MoveReason.RENEWAL_WINDOW)),
    ("active-in-ari-window", {"renewal_window": ARI}, [], T0 + 42 * DAY,
     (S.ACTIVE, S.EXPIRING_SOON, MoveReason.ARI_WINDOW)),
    ("active-before-ari-window", {"renewal_window": ARI}, [], T0 + 39 * DAY, None),
    ("expiring-soon-stays-in-window", {"status": S.EXPIRING_SOON}, [], "due+1d", None),
    ("expiring-soon-before-window-is-not-undone", {"status": S.EXPIRING_SOON}, [], T0, None),
    ("active-at-not-after", {}, [], NOT_AFTER, (S.ACTIVE, S.EXPIRED, MoveReason.NOT_AFTER)),
    ("expiring-soon-past-not-after", {"status": S.EXPIRING_SOON}, [], NOT_AFTER + DAY,
     (S.EXPIRING_SOON, S.EXPIRED, MoveReason.NOT_AFTER)),
    ("rotating-in-window-is-the-applys", {"status": S.ROTATING}, [], "due+1d", None),
    ("rotating-past-not-after", {"status": S.ROTATING}, [], NOT_AFTER + DAY,
     (S.ROTATING, S.EXPIRED, MoveReason.NOT_AFTER)),
    ("issued-in-window-is-the-applys", {"status": S.ISSUED}, [], "due+1d", None),
    ("issued-past-not-after", {"status": S.ISSUED}, [], NOT_AFTER + DAY, (S.ISSUED, S.EXPIRED, MoveReason.NOT_AFTER)),
    ("revoked-stays", {"status": S.REVOKED}, [], NOT_AFTER + DAY, None),
    ("expired-stays", {"status": S.EXPIRED}, [], NOT_AFTER + DAY, None),
    ("undeclared-in-window-has-no-renewal-time", {"name": "gone"}, [], "due+1d", None),
    ("undeclared-past-not-after", {"name": "gone"}, [], NOT_AFTER, (S.ACTIVE, S.EXPIRED, MoveReason.NOT_AFTER)),
    ("lapsed-row-not-current", None, [LapsedCertificate(OTHER_ID, "gone", S.ACTIVE, NOT_AFTER)], NOT_AFTER,
     (S.ACTIVE, S.EXPIRED, MoveReason.NOT_AFTER)),
    ("lapsed-row-fresher-than-the-snapshot", {},
     [LapsedCertificate(SHOP_ID, "shop", S.EXPIRING_SOON, NOT_AFTER)], NOT_AFTER + DAY,
     (S.EXPIRING_SOON, S.EXPIRED, MoveReason.NOT_AFTER)),
    ("lapsed-row-not-yet-lapsed", None, [LapsedCertificate(OTHER_ID, "gone", S.ACTIVE, NOT_AFTER)], T0, None),
    ("lapsed-row-in-another-status", None, [LapsedCertificate(OTHER_ID, "gone", S.SUPERSEDED, NOT_AFTER)],
     NOT_AFTER + DAY, None),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "lapsed", "now", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_moves(
    desired: DesiredState,
    overrides: dict[str, object] | None,
    lapsed: list[LapsedCertificate],
    now: str | datetime,
    expected: tuple[CertStatus, CertStatus, MoveReason] | None,
) -> None:
    cert = current(**overrides) if overrides is not None else None
    offsets = {"due": timedelta(0), "due-1us": -timedelta(microseconds=1), "due+1d": DAY}
    at = now if isinstance(now, datetime) else due(desired, current()) + offsets[now]
    moves = status_moves(desired, state(*([cert] if cert else [])), at, lapsed)
    if expected is None:
        assert moves == ()
        return
    (move,) = moves
    assert (move.old, move.new, move.reason) == expected
    check_transition(move.old, move.new)  # every move is one the lifecycle allows
    if move.reason is MoveReason.NOT_AFTER:
        assert move.due_at == NOT_AFTER
    elif cert is not None:
        assert move.due_at == renewal_time(desired.certificates["shop"], cert) <= at


def test_moves_come_in_name_order_with_an_audit_detail(desired: DesiredState) -> None:
    shop = current(not_before=T0 - 80 * DAY, not_after=T0 + 10 * DAY)  # in its window
    lapsed = [LapsedCertificate(OTHER_ID, "alpha", S.EXPIRING_SOON, T0)]
    moves = status_moves(desired, state(shop), T0 + DAY, lapsed)
    assert [(m.name, m.new) for m in moves] == [("alpha", S.EXPIRED), ("shop", S.EXPIRING_SOON)]
    assert moves[0].detail == {"from": "expiring_soon", "to": "expired", "reason": "not-after",
                               "due_at": T0.isoformat()}  # fmt: skip


@pytest.mark.parametrize("window", [None, ARI], ids=["renew-before", "ari"])
def test_expiring_soon_is_exactly_when_the_planner_renews(desired: DesiredState, window: RenewalWindow | None) -> None:
    """Over a whole lifetime, hour by hour: moved to expiring_soon ⇔ the planner gives a renewal reason."""
    spec = desired.certificates["shop"]
    cert = current(renewal_window=window)
    at = T0
    seen = 0
    while at < NOT_AFTER:
        moved = [m for m in status_moves(desired, state(cert), at) if m.new is S.EXPIRING_SOON]
        renews = [r.code for r in check_renewal_window(spec, cert, at)]
        assert bool(moved) == bool(renews), at
        assert renews in ([], [ReasonCode.RENEWAL_WINDOW], [ReasonCode.ARI_WINDOW])
        seen += bool(moved)
        at += timedelta(hours=1)
    assert seen > 0


STATUSES = [S.ISSUED, S.ACTIVE, S.EXPIRING_SOON, S.ROTATING, S.REVOKED, S.EXPIRED]


@pytest.mark.parametrize("status", STATUSES, ids=[s.value for s in STATUSES])
@pytest.mark.parametrize("days", [0, 59, 61, 89, 90, 91, 200], ids=lambda d: f"day-{d}")
def test_the_moves_never_change_the_plan(desired: DesiredState, status: CertStatus, days: int) -> None:
    """Status moves are not plan changes: the plan on the moved state is the plan on the unmoved one."""
    at = T0 + days * DAY
    before = state(current(status=status), current("gone", status=status))
    moves = status_moves(desired, before, at)
    moved = {m.cert_id: m.new for m in moves}
    after = state(*(replace(c, status=moved.get(c.id, c.status)) for c in before.certificates.values()))
    assert build_plan(desired, after, Observations(), at) == build_plan(desired, before, Observations(), at)


def test_no_move_is_a_status_the_lifecycle_refuses(desired: DesiredState) -> None:
    for status in CertStatus:
        for days in (0, 61, 91):
            for move in status_moves(desired, state(current(status=status)), T0 + days * DAY):
                assert isinstance(move, StatusMove)
                check_transition(move.old, move.new)
