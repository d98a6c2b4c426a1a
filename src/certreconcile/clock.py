"""Time is injected: nothing outside this module calls ``datetime.now``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["TEST_NOW_VARIABLE", "Clock", "FixedClock", "SystemClock", "clock_from_env"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that moves only when told to: for tests and ``--now`` replays."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware datetime")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta


#: Test only: an ISO-8601 UTC time makes every CLI command run on a FixedClock starting there
#: (``run`` advances it through its sleeps instead of waiting). Never set it in production.
TEST_NOW_VARIABLE = "CERTRECONCILE_TEST_NOW"


def clock_from_env(env: Mapping[str, str]) -> Clock:
    """A :class:`FixedClock` at ``CERTRECONCILE_TEST_NOW`` when set, else the system's clock.

    Raises ValueError when the variable is set but is not an ISO-8601 time with an offset.
    """
    text = env.get(TEST_NOW_VARIABLE, "").strip()
    if not text:
        return SystemClock()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{TEST_NOW_VARIABLE}={text!r} is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{TEST_NOW_VARIABLE}={text!r} has no UTC offset")
    return FixedClock(moment)
