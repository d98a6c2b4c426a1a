"""Wait until a target serves what was just deployed. Only the observation counts.

Shared by the applier (``certreconcile.apply``) and the agent on a server host (``certreconcile.agent``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from certreconcile.plugins.ports import Target, TargetObservation

__all__ = ["VerifyOutcome", "wait_until_served"]


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    verified: bool
    last: TargetObservation
    attempts: int


def wait_until_served(
    target: Target,
    name: str,
    domains: tuple[str, ...],
    fingerprint: str,
    *,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> VerifyOutcome:
    """Observe ``target`` with short, growing pauses until it serves ``fingerprint`` or time runs out."""
    deadline = monotonic() + target.verify_timeout().total_seconds()
    # Reloads take from milliseconds (HAProxy's runtime API) to a few hundred (nginx spawning
    # new workers): poll often, but never more than 4 times a second once it is slow.
    pause = 0.02
    attempts = 0
    while True:
        attempts += 1
        seen = target.observe(name, domains)
        if seen.fingerprint == fingerprint:
            return VerifyOutcome(True, seen, attempts)
        if seen.unknown:
            # No way to look (a webhook without `verify`): its deploy() confirmed the push itself.
            return VerifyOutcome(True, seen, attempts)
        if monotonic() + pause > deadline:
            return VerifyOutcome(False, seen, attempts)
        sleep(pause)
        pause = min(pause * 1.5, 0.25)
