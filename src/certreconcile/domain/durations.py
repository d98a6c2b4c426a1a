"""Durations as written in declarations: ``90d``, ``12h``, ``30m``, ``45s``, ``2w``, or ``33%``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

__all__ = [
    "MAX_DURATION",
    "MIN_LIFETIME",
    "SHORT_LIVED",
    "DurationTooLongError",
    "RenewBefore",
    "format_duration",
    "parse_duration",
    "parse_renew_before",
]

#: Certificates with a shorter lifetime renew at half their life by default.
SHORT_LIVED = timedelta(days=10)
#: The longest duration accepted anywhere (100 years): longer ones overflow dates (year 9999) or make no sense.
MAX_DURATION = timedelta(days=36500)
#: The shortest certificate lifetime accepted (SPIFFE's default SVID lifetime): shorter ones renew without rest.
MIN_LIFETIME = timedelta(hours=1)


class DurationTooLongError(ValueError):
    """A duration above :data:`MAX_DURATION`."""


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_duration(text: str) -> timedelta:
    """Parse ``<n><unit>`` (s, m, h, d, w). Raises ``ValueError`` with the accepted forms."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; write a whole number and a unit, e.g. 90d, 12h, 30m")
    digits = match.group(1).lstrip("0")
    if len(digits) > 12:  # checked before int(): a huge digit string is slow to convert
        raise DurationTooLongError(f"{text!r} is longer than the limit of {MAX_DURATION.days}d (100 years)")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    if seconds > MAX_DURATION.total_seconds():
        raise DurationTooLongError(f"{text!r} is longer than the limit of {MAX_DURATION.days}d (100 years)")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class RenewBefore:
    """How long before ``not_after`` renewal is due: a fixed duration or a fraction of the lifetime.

    Neither set means the default: ``min(30 days, lifetime / 3)``, and half the lifetime for
    short-lived certificates (under 10 days, such as Let's Encrypt's 6-day profile), as
    Let's Encrypt advises for them.
    """

    duration: timedelta | None = None
    fraction: float | None = None

    def for_lifetime(self, lifetime: timedelta) -> timedelta:
        if self.duration is not None:
            return min(self.duration, lifetime)
        if self.fraction is not None:
            return lifetime * self.fraction
        if lifetime < SHORT_LIVED:
            return lifetime / 2
        return min(timedelta(days=30), lifetime / 3)

    def describe(self) -> str:
        if self.duration is not None:
            return format_duration(self.duration)
        if self.fraction is not None:
            return f"{self.fraction * 100:g}%"
        return "default (min(30d, lifetime/3); lifetime/2 under 10d)"


def parse_renew_before(text: str) -> RenewBefore:
    match = _PERCENT.match(text)
    if match:
        value = float(match.group(1))
        if not 0 < value < 100:
            raise ValueError(f"{text!r}: a percentage must be between 0 and 100 (exclusive)")
        return RenewBefore(fraction=value / 100)
    return RenewBefore(duration=parse_duration(text))
