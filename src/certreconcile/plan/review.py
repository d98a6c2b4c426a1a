"""Binding apply to the reviewed plan: compare the change set planned now with the one a reviewer approved.

Pure: two sequences of changes in, a verdict out. The comparison is semantic, not textual: a change is
identified by (action, name) and compared on what apply would do (domains, issuer, key type, targets,
forced); reason messages, certificate ids and idempotency keys are left out, because they move on their
own between review and merge ("expires in 12 days" becomes "11 days", a renewal in between replaces
another certificate) without changing what was approved.

The one tolerated difference: ``rotate`` changes that fell due since the review, or were done since
(by ``certreconcile run``), that time alone set off (``Change.trigger`` is ``time``: the renewal window
or the ARI window opened, or the certificate expired). Anything else makes the verdict refuse.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from certreconcile.plan.plan import Action, Change, Trigger

__all__ = ["ReviewComparison", "compare_with_review", "is_renewal"]

# Compared fields of a change matched by (action, name), with the word used in messages.
_FIELDS: tuple[tuple[str, str], ...] = (
    ("domains", "domains"),
    ("issuer", "issuer"),
    ("key_type", "key type"),
    ("targets", "targets"),
    ("removed_targets", "removed targets"),
    ("forced", "forced rotation"),
)


@dataclass(frozen=True, slots=True)
class ReviewComparison:
    """The difference between the reviewed change set and the current one, in display lines.

    ``renewals`` are tolerated (``+ rotate x (renewal due since review)``); ``differences`` are not.
    """

    differences: tuple[str, ...]
    renewals: tuple[str, ...]

    @property
    def equal(self) -> bool:
        return not self.differences and not self.renewals

    @property
    def acceptable(self) -> bool:
        return not self.differences


def is_renewal(change: Change) -> bool:
    """A rotation that time alone made due (not forced, not a changed declaration)."""
    return change.action is Action.ROTATE and not change.forced and change.trigger is Trigger.TIME


def _keyed(changes: Iterable[Change]) -> dict[tuple[str, str], Change]:
    return {(change.action.value, change.name): change for change in changes}


def compare_with_review(reviewed: Sequence[Change], current: Sequence[Change]) -> ReviewComparison:
    """What differs between ``reviewed`` (approved) and ``current`` (planned now), sorted by name."""
    before, after = _keyed(reviewed), _keyed(current)
    differences: list[tuple[str, str]] = []
    renewals: list[tuple[str, str]] = []
    for key in sorted(after.keys() - before.keys(), key=lambda k: (k[1], k[0])):
        change = after[key]
        if is_renewal(change):
            renewals.append((change.name, f"+ rotate {change.name} (renewal due since the review)"))
        else:
            differences.append((change.name, f"+ {change.action.value} {change.name} (new since the review)"))
    for key in sorted(before.keys() - after.keys(), key=lambda k: (k[1], k[0])):
        change = before[key]
        if is_renewal(change):
            renewals.append((change.name, f"- rotate {change.name} (reviewed renewal, no longer due)"))
        else:
            differences.append((change.name, f"- {change.action.value} {change.name} (reviewed, no longer planned)"))
    for key in sorted(before.keys() & after.keys(), key=lambda k: (k[1], k[0])):
        old, new = before[key], after[key]
        changed = [word for field, word in _FIELDS if getattr(old, field) != getattr(new, field)]
        if changed:
            differences.append((new.name, f"~ {new.action.value} {new.name}: {', '.join(changed)} changed"))
    return ReviewComparison(
        differences=tuple(line for _, line in sorted(differences)),
        renewals=tuple(line for _, line in sorted(renewals)),
    )
