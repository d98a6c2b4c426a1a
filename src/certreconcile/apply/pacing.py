"""``run`` paces the orders that count against Let's Encrypt's rate limits, where ``apply`` refuses.

``apply`` refuses a plan over a budget for a person to split; ``run`` has nobody to ask, and
refusing every cycle would stop the renewals within budget too: it takes what fits, most urgent
first (``plan.budget.within_budget``), and leaves the rest to later cycles, as the budget's window
moves. Replicas take turns: the changes drawing on a budget are applied under one lock, on the
history read after taking it; a replica that finds the lock taken leaves them to its next cycle
(the changes drawing on no budget, ARI renewals among them, go ahead everywhere).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime

from certreconcile.actual.model import ActualState
from certreconcile.actual.store import StateStore
from certreconcile.desired.model import DesiredState
from certreconcile.plan.budget import draws_on_budgets, within_budget
from certreconcile.plan.destroy import describe_names
from certreconcile.plan.plan import Plan
from certreconcile.plan.scope import is_declaration_change, subplan

__all__ = ["BUDGET_LOCK", "paced"]

log = logging.getLogger("certreconcile.run")

#: The lock under which one replica at a time applies the changes that draw on a Let's Encrypt
#: budget (a space: no certificate name can take it).
BUDGET_LOCK = "rate limits"


@contextmanager
def paced(
    plan: Plan,
    desired: DesiredState,
    actual: ActualState,
    store: StateStore,
    now: datetime,
    *,
    apply_declarations: bool,
) -> Iterator[tuple[Plan, tuple[str, ...]]]:
    """``plan`` less the changes past a Let's Encrypt budget, and why (a warning line), while the
    budget lock is held (when the plan draws on a budget). Apply the plan inside the block.

    ``apply_declarations``: the declaration changes are applied too (``run --apply-changes``);
    else only the upkeep ones count.
    """
    applied = [c for c in plan.changes if apply_declarations or not is_declaration_change(c)]
    if not draws_on_budgets(desired, actual, applied, now):
        yield plan, ()
        return
    with store.session() as session, session.try_lock_name(BUDGET_LOCK) as taken:
        if taken:
            fresh = replace(actual, issuance_history=session.issuance_history(now))
            _kept, held = within_budget(desired, fresh, applied, now)
            reason = "Let's Encrypt's rate limits would refuse them now (the most urgent were kept)"
        else:
            held = draws_on_budgets(desired, actual, applied, now)
            reason = "another replica is placing orders that count against Let's Encrypt's rate limits"
        if not held:
            yield plan, ()
            return
        names = {change.name for change in held}
        line = (
            f"{len(held)} change{'s' if len(held) != 1 else ''} ({describe_names(sorted(names))})"
            f" held back for a later cycle: {reason}"
        )
        log.warning("not applied: %s", line)
        kept = [change for change in plan.changes if change.name not in names]
        yield subplan(plan, kept, desired, actual, now), (line,)
