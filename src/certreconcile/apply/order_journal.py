"""The ACME order journal of one change: an interrupted order is resumed, not placed again."""

from __future__ import annotations

from certreconcile.actual.journal_step import JournalState, JournalStep
from certreconcile.actual.store import AcmeOrderRecord
from certreconcile.apply.runner_base import RunnerBase
from certreconcile.plan.plan import Change

__all__ = ["ChangeOrderJournal"]


class ChangeOrderJournal:
    """The OrderJournal of one change: ``AcmeOrder`` rows keyed by the change's idempotency key.

    An order is resumed only with the key it was placed for (``cert_id``): a change that
    needs a new key (its earlier certificate was stored) places a new order. ``new_key``: the key
    was made by this run (not resumed from the journal), so no order can have been placed for it
    and none is looked up.
    """

    def __init__(self, runner: RunnerBase, change: Change, cert_id: str, *, new_key: bool = False) -> None:
        self._runner = runner
        self._change = change
        self._cert_id = cert_id
        self._new_key = new_key

    def saved_order_url(self) -> str | None:
        if self._new_key:
            return None
        record = self._runner.session.acme_order(self._change.idempotency_key)
        if record is None or record.cert_id != self._cert_id:
            return None
        return record.order_url

    def record_order(self, order_url: str, state: str, directory_url: str) -> None:
        runner, change = self._runner, self._change
        previous = runner.session.save_acme_order(
            AcmeOrderRecord(
                idempotency_key=change.idempotency_key,
                name=change.name,
                order_url=order_url,
                state=state,
                directory_url=directory_url,
                cert_id=self._cert_id,
            ),
            runner.env.clock.now(),
        )
        if previous is None or previous.order_url != order_url:
            runner.journal(
                change, JournalStep.ORDER_CREATED, JournalState.DONE, order_url=order_url, cert_id=self._cert_id
            )
        elif state == "valid" and previous.state != "valid":
            runner.journal(change, JournalStep.ORDER_FINALIZED, JournalState.DONE, order_url=order_url)
