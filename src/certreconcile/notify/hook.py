"""The notifications of one apply or ``run`` cycle: queue its events, then deliver what is due.

Called after the changes (``run`` each cycle, ``apply`` once). Never fails the caller: a problem is
logged (one line) and the notifications wait in the outbox for the next cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from certreconcile.actual.store import StateStore
from certreconcile.apply.results import ChangeResult
from certreconcile.clock import Clock
from certreconcile.desired.model import DesiredState
from certreconcile.errors import CertReconcileError
from certreconcile.notify.events import agent_events, apply_events, expiring_events
from certreconcile.notify.outbox import Delivered, deliver_due, enqueue
from certreconcile.notify.senders import SenderFactory, sender_for

__all__ = ["notify_after"]

log = logging.getLogger("certreconcile.notify")


def notify_after(
    desired: DesiredState,
    store: StateStore,
    results: Iterable[ChangeResult],
    clock: Clock,
    actor: str,
    environ: Mapping[str, str],
    *,
    senders: SenderFactory = sender_for,
) -> Delivered | None:
    """Queue the events of ``results`` and of the stored state, then deliver the due ones (None: no ``notify:``)."""
    if desired.notify is None:
        return None
    try:
        now = clock.now()
        with store.session() as session:
            actual = session.load_actual()
        events = [*apply_events(results, actual), *expiring_events(desired, actual, now), *agent_events(actual)]
        queued = enqueue(store, desired.notify, events, now)
        delivered = deliver_due(store, desired.notify, clock, actor, environ, senders=senders)
    except CertReconcileError as exc:
        log.error("notifications not processed: %s", exc.one_line())  # noqa: TRY400  one line: no traceback
        return None
    return Delivered(queued, delivered.sent, delivered.retried, delivered.abandoned)
