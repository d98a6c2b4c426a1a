"""Write the lifecycle moves time has made due (:mod:`certreconcile.plan.lifecycle`), each one audited.

``run`` calls it once per cycle (actor ``automation:renewal``), ``apply`` before its changes (the
apply's actor); ``plan`` never: it writes nothing. So ``SELECT ... WHERE status = 'expiring_soon'``
lists the certificates due for renewal, and ``status = 'expired'`` those that lapsed unreplaced.

Each batch of moves is one transaction of two statements: the compare-and-set UPDATE of the batch
first (``WHERE id = .. AND status = ..``: a row another apply or replica moved meanwhile is left
alone, not audited), then the audit events of the moves made, last, as the audit chain asks (its
head row is locked until commit). A move to ``expired`` holds the name's advisory lock, as an apply
does for its changes: a rotation in flight on another replica finishes first, and its own status
moves never find a row changed under them. Moves are not plan changes: the state serial stays, so a
saved plan stays fresh.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime

from certreconcile.actual.model import ActualState
from certreconcile.actual.store import StateSession, StateStore
from certreconcile.audit.events import AuditAction, AuditEvent
from certreconcile.desired.model import DesiredState
from certreconcile.domain.status import CertStatus
from certreconcile.plan.lifecycle import StatusMove, status_moves

__all__ = ["LIFECYCLE_BATCH", "LifecycleResult", "advance_lifecycle"]

#: Moves per transaction (and lapsed rows read per query).
LIFECYCLE_BATCH = 200

_AUDIT_ACTION = {CertStatus.EXPIRING_SOON: AuditAction.EXPIRING_SOON, CertStatus.EXPIRED: AuditAction.EXPIRED}

log = logging.getLogger("certreconcile.lifecycle")


@dataclass(frozen=True, slots=True)
class LifecycleResult:
    moved: tuple[StatusMove, ...] = ()  # written and audited
    lost: int = 0  # found in another status by the compare-and-set (another writer was first): left alone


def advance_lifecycle(
    desired: DesiredState,
    store: StateStore,
    now: datetime,
    actor: str,
    *,
    actual: ActualState | None = None,
    batch: int = LIFECYCLE_BATCH,
) -> LifecycleResult:
    """Move every certificate whose status ``now`` made untrue; ``actual``: the state just gathered, if any."""
    batch = max(1, batch)
    moved: list[StatusMove] = []
    lost = 0
    with store.session() as session:
        if actual is None:
            actual = session.load_actual()
        lapsed = session.lapsed_certificates(now, batch)
        pending = status_moves(desired, actual, now, lapsed)
        while pending:
            made = 0
            for start in range(0, len(pending), batch):
                chunk = pending[start : start + batch]
                done = _write(session, chunk, actor, now)
                moved += done
                made += len(done)
                lost += len(chunk) - len(done)
            if len(lapsed) < batch or made == 0:
                break  # every lapsed row was read (or none could be moved: never loop on them)
            lapsed = session.lapsed_certificates(now, batch)  # the next rows: the moved ones left the index
            pending = status_moves(desired, ActualState.empty(actual.meta.lineage), now, lapsed)
    return LifecycleResult(tuple(moved), lost)


def _write(session: StateSession, moves: Sequence[StatusMove], actor: str, now: datetime) -> list[StatusMove]:
    """One transaction: the compare-and-set moves, then their audit events; the moves made."""
    with ExitStack() as locks:
        for name in sorted({move.name for move in moves if move.new is CertStatus.EXPIRED}):
            locks.enter_context(session.lock_name(name))  # sorted: two replicas never lock in opposite orders
        with session.transaction():  # two statements for the batch: the moves, then their audit events
            made = session.compare_and_set_statuses([(move.cert_id, move.old, move.new) for move in moves])
            done = [move for move in moves if move.cert_id in made]
            session.append_audit_many(
                [AuditEvent(move.cert_id, move.name, _AUDIT_ACTION[move.new], actor, now, move.detail) for move in done]
            )
    for move in done:
        log.info(
            "%s: %s → %s (%s since %s) [%s]",
            move.name,
            move.old.value,
            move.new.value,
            move.reason.value,
            move.due_at.isoformat(),
            actor,
            extra={"certificate": move.name, "step": "status", "outcome": move.new.value, "actor": actor},
        )
    return done
