"""Bounded retries of idempotent calls (tenacity), with an injected sleep.

Only a call that is safe to repeat goes through :meth:`RetryPolicy.call`: an ACME GET or
POST-as-GET, a fresh nonce, a request the CA refused for a stale nonce (it was not
processed), a DNS update that adds or deletes one exact record. A call that creates
something (an ACME order, a finalization) is never repeated here: the apply journal
resumes it on the next run instead.

Every retry is bounded twice: by a number of attempts and by a total time (the sum of the
waits and of the time spent), and logged as one line on ``certreconcile.retry`` without
the error's text (a URL, a type, a status; never a request body or a secret). A server's
``Retry-After`` is honoured; one longer than ``max_delay`` is not waited out: the call
fails at once and the next apply tries again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity

__all__ = ["RetryPolicy", "RetryStats", "Verdict"]

log = logging.getLogger("certreconcile.retry")

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one failure allows: retry or not, the server's wait in seconds, and a safe label for the log.

    ``immediate``: retry at once, without backoff (a stale nonce: the next request carries a
    fresh one); such retries are bounded by twice the policy's attempts.
    """

    retry: bool
    retry_after: float | None = None
    reason: str = ""
    immediate: bool = False


@dataclass(slots=True)
class RetryStats:
    """How many retries a policy made (all threads), for tests and the closing figures."""

    retries: int = 0
    gave_up: int = 0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` tries at most, within ``total`` seconds; waits grow from ``first_delay`` to ``max_delay``."""

    attempts: int = 4
    total: float = 30.0
    first_delay: float = 0.1
    max_delay: float = 10.0
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    stats: RetryStats = field(default_factory=RetryStats)

    def call(self, what: str, fn: Callable[[], _T], judge: Callable[[BaseException], Verdict]) -> _T:
        """``fn()``, repeated while ``judge`` allows and the bounds hold; the last failure is raised as is."""
        started = self.monotonic()
        verdicts: dict[int, Verdict] = {}

        def allowed(state: tenacity.RetryCallState) -> bool:
            if state.outcome is None or not state.outcome.failed:
                return False
            exc = state.outcome.exception()
            assert exc is not None
            verdict = judge(exc)
            verdicts[state.attempt_number] = verdict
            return verdict.retry

        def delay(state: tenacity.RetryCallState) -> float:
            backoff = min(self.first_delay * 2.0 ** (state.attempt_number - 1), self.max_delay)
            verdict = verdicts[state.attempt_number]
            if verdict.immediate:
                backoff = 0.0
            wanted = verdict.retry_after
            return max(backoff, wanted) if wanted is not None else backoff

        def stop(state: tenacity.RetryCallState) -> bool:
            verdict = verdicts.get(state.attempt_number)
            spent = (self.monotonic() - started) + state.idle_for
            too_late = verdict is not None and verdict.retry_after is not None and verdict.retry_after > self.max_delay
            limit = self.attempts * 2 if verdict is not None and verdict.immediate else self.attempts
            over = state.attempt_number >= limit or spent + state.upcoming_sleep > self.total or too_late
            if over:
                self.stats.gave_up += 1
                reason = verdict.reason if verdict is not None else "error"
                log.warning("%s: giving up after %d attempt(s) (%s)", what, state.attempt_number, reason)
            return over

        def before_sleep(state: tenacity.RetryCallState) -> None:
            self.stats.retries += 1
            reason = verdicts[state.attempt_number].reason
            wait = state.upcoming_sleep
            log.warning("%s: %s; retrying in %.1fs (attempt %d)", what, reason, wait, state.attempt_number + 1)

        retrying = tenacity.Retrying(
            sleep=self.sleep,
            stop=stop,
            wait=delay,
            retry=allowed,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn)
