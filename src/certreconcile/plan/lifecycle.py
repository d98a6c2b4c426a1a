"""Which stored statuses time has made untrue: the lifecycle moves ``run`` and ``apply`` write.

Pure, like the rest of :mod:`certreconcile.plan`: the stored state, the declarations and ``now``
in, the moves out; :mod:`certreconcile.apply.lifecycle` writes them (compare-and-set, audited).

- ``active → expiring_soon`` when the renewal falls due, at exactly the time the planner plans
  the renewal (:func:`~certreconcile.plan.policies.renewal_time`: ``renew_before``, the CA's ARI
  window, the jitter), so ``status = 'expiring_soon'`` and "due for renewal" agree. Only declared
  names have a renewal time; the move is never undone (a window that moves later, a replica whose
  clock lags, would otherwise flap).
- ``→ expired`` once ``not_after`` has passed: the current certificate of a name left unrenewed
  (``active``, ``expiring_soon``, or ``rotating`` after failed renewals: its CA failing, its renewal
  backing off, or the name no longer declared) and rows no longer current still ``active`` or
  ``expiring_soon`` (a retired name's last certificate).

Before ``not_after``, ``issued`` and ``rotating`` are an apply's work in flight and left to it; a
``rotating`` row whose replacement exists is not current and the apply supersedes it. ``superseded``
is history and stays so (see :mod:`certreconcile.domain.status`). These moves are not plan changes:
the plan reads ``not_after`` itself, so the same inputs give the same plan before and after them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from certreconcile.actual.model import ActualCertificate, ActualState
from certreconcile.actual.store import LapsedCertificate
from certreconcile.desired.model import DesiredState
from certreconcile.domain.status import CURRENT_STATUSES, CertStatus, check_transition
from certreconcile.plan.policies import earliest_renewal, renewal_time

__all__ = ["MoveReason", "StatusMove", "status_moves"]

#: The statuses of a certificate in service: past ``not_after``, any such row becomes ``expired``.
_IN_SERVICE = frozenset({CertStatus.ACTIVE, CertStatus.EXPIRING_SOON})


class MoveReason(enum.StrEnum):
    RENEWAL_WINDOW = "renewal-window"  # now >= the renewal time from renew_before (and jitter)
    ARI_WINDOW = "ari-window"  # now >= the renewal time inside the CA's suggested window
    NOT_AFTER = "not-after"  # now >= not_after


@dataclass(frozen=True, slots=True)
class StatusMove:
    cert_id: str
    name: str
    old: CertStatus
    new: CertStatus
    reason: MoveReason
    due_at: datetime  # when the move fell due: the renewal time, or not_after

    @property
    def detail(self) -> dict[str, str]:
        """The audit event's detail (no secret)."""
        return {
            "from": self.old.value,
            "to": self.new.value,
            "reason": self.reason.value,
            "due_at": self.due_at.isoformat(),
        }


def _expired(cert_id: str, name: str, old: CertStatus, not_after: datetime) -> StatusMove:
    return StatusMove(cert_id, name, old, CertStatus.EXPIRED, MoveReason.NOT_AFTER, not_after)


def _move_of_current(desired: DesiredState, current: ActualCertificate, now: datetime) -> StatusMove | None:
    if current.status not in CURRENT_STATUSES:
        return None
    if current.not_after <= now:
        return _expired(current.id, current.name, current.status, current.not_after)
    spec = desired.certificates.get(current.name)
    if current.status is not CertStatus.ACTIVE or spec is None or now < earliest_renewal(spec, current):
        return None  # earliest_renewal: never after renewal_time, and cheaper (no jitter to derive)
    due = renewal_time(spec, current)
    if now < due:
        return None
    reason = MoveReason.ARI_WINDOW if current.renewal_window is not None else MoveReason.RENEWAL_WINDOW
    return StatusMove(current.id, current.name, current.status, CertStatus.EXPIRING_SOON, reason, due)


def status_moves(
    desired: DesiredState, actual: ActualState, now: datetime, lapsed: Iterable[LapsedCertificate] = ()
) -> tuple[StatusMove, ...]:
    """The moves that make the stored statuses true at ``now``, in (name, certificate id) order.

    ``actual``: each name's current certificate; ``lapsed``: rows past ``not_after`` still in service
    as the store lists them (it may repeat current ones, and it is read later, so its status wins).
    """
    moves: dict[str, StatusMove] = {}
    for current in actual.certificates.values():
        move = _move_of_current(desired, current, now)
        if move is not None:
            moves[move.cert_id] = move
    for row in lapsed:
        if row.status in _IN_SERVICE and row.not_after <= now:
            moves[row.cert_id] = _expired(row.cert_id, row.name, row.status, row.not_after)
    ordered = tuple(sorted(moves.values(), key=lambda move: (move.name, move.cert_id)))
    for move in ordered:
        check_transition(move.old, move.new)  # the one place that says which moves exist
    return ordered
