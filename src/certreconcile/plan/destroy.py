"""Destructive plans need explicit intent (design §5c): the destroy threshold and ``--allow-destroy N``.

A change is *destructive* when it revokes or retires a certificate. A plan that destroys more than
``max_count`` certificates, or more than ``max_percent`` % of the names the state manages (not retired)
when it is planned, is over the threshold: ``certreconcile apply`` refuses it, nothing changed, unless
``--allow-destroy N`` names exactly how many certificates it destroys; ``run --apply-changes`` leaves its
destructive changes alone and says so. ``--allow-destroy N`` must be the exact count, never "at most N":
a count that differs means the plan is not the one that was reviewed.

The threshold is the operator's setting (the environment, see ``wiring.Settings``), never the desired
state's: the declarations are what a pull request changes, so a threshold declared there could be raised
by the very pull request that removes the certificates.

Pure: names and counts in, a verdict out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from certreconcile.errors import ApplyError

if TYPE_CHECKING:
    from certreconcile.plan.plan import Plan

__all__ = [
    "DEFAULT_DESTROY_THRESHOLD",
    "DEFAULT_MAX_COUNT",
    "DEFAULT_MAX_PERCENT",
    "DestroyCheck",
    "DestroyThreshold",
    "check_destroy_intent",
    "describe_names",
]

DEFAULT_MAX_COUNT = 1
DEFAULT_MAX_PERCENT = 10
#: How many names a refusal or a warning spells out before "and N more".
NAMES_SHOWN = 5


@dataclass(frozen=True, slots=True)
class DestroyThreshold:
    """How much a plan may destroy without ``--allow-destroy``: at most ``max_count`` certificates and at
    most ``max_percent`` % of the managed names (both must hold)."""

    max_count: int = DEFAULT_MAX_COUNT
    max_percent: int = DEFAULT_MAX_PERCENT

    def exceeded_by(self, count: int, managed: int) -> bool:
        """True when destroying ``count`` certificates out of ``managed`` needs ``--allow-destroy``."""
        return count > self.max_count or count * 100 > self.max_percent * managed

    def describe(self, managed: int) -> str:
        noun = "certificate" if self.max_count == 1 else "certificates"
        return f"at most {self.max_count} {noun} and at most {self.max_percent}% of the {managed} managed"


DEFAULT_DESTROY_THRESHOLD = DestroyThreshold()


@dataclass(frozen=True, slots=True)
class DestroyCheck:
    """What a plan's destructive changes were judged against when it was planned: for display only.

    ``apply`` never trusts a saved plan's copy: it judges again with its own threshold and the state.
    """

    managed: int  # names the state managed (not retired) when planned: the denominator of max_percent
    threshold: DestroyThreshold

    def required(self, count: int) -> bool:
        return self.threshold.exceeded_by(count, self.managed)

    def to_json(self, count: int) -> dict[str, Any]:
        return {
            "count": count,
            "managed": self.managed,
            "max_count": self.threshold.max_count,
            "max_percent": self.threshold.max_percent,
            "allow_destroy_required": self.required(count),
        }

    @staticmethod
    def from_json(data: dict[str, Any] | None) -> DestroyCheck | None:
        if data is None:
            return None
        return DestroyCheck(int(data["managed"]), DestroyThreshold(int(data["max_count"]), int(data["max_percent"])))


def describe_names(names: Sequence[str], shown: int = NAMES_SHOWN) -> str:
    """``a, b, c`` or ``a, b, c, d, e and 7 more``."""
    listed = ", ".join(names[:shown])
    return f"{listed} and {len(names) - shown} more" if len(names) > shown else listed


def check_destroy_intent(plan: Plan, managed: int, threshold: DestroyThreshold, allow_destroy: int | None) -> None:
    """Raise :class:`ApplyError` unless ``plan``'s destructive changes may go ahead.

    ``allow_destroy`` given: it must equal the number of destructive changes (any other number is
    refused, also under the threshold). Not given: the plan must be within ``threshold``.
    """
    names = [change.name for change in plan.destructive]
    count = len(names)
    what = f"{count} certificate{'s' if count != 1 else ''}" + (f" ({describe_names(names)})" if names else "")
    if allow_destroy is not None:
        if allow_destroy == count:
            return
        raise ApplyError(
            f"apply refused, nothing was changed: --allow-destroy {allow_destroy} does not match this plan, "
            f"which revokes or retires {what}",
            code="allow-destroy-mismatch",
            hint=f"review the plan, then re-run with --allow-destroy {count}"
            if count
            else "this plan destroys nothing: drop --allow-destroy",
        )
    if threshold.exceeded_by(count, managed):
        raise ApplyError(
            f"apply refused, nothing was changed: this plan revokes or retires {what}, more than the "
            f"destroy threshold allows without intent ({threshold.describe(managed)})",
            code="destroy-needs-intent",
            hint=f"review the destructive changes, then re-run with --allow-destroy {count}",
        )
