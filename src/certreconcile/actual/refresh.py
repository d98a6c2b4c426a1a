"""``plan --refresh``: ask every target what it serves. The only I/O before the pure diff."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Protocol

from certreconcile.actual.model import Observations, ServedCertificate

__all__ = ["observe_targets"]


class Observed(Protocol):
    """What a target reports (``plugins.ports.TargetObservation`` has this shape)."""

    @property
    def fingerprint(self) -> str | None: ...
    @property
    def serial_number(self) -> str | None: ...
    @property
    def not_after(self) -> datetime | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def unknown(self) -> bool: ...
    @property
    def unreachable(self) -> bool: ...


class Observable(Protocol):
    """The one method of ``plugins.ports.Target`` refresh calls (``actual`` sits below ``plugins``)."""

    def observe(self, name: str, domains: tuple[str, ...]) -> Observed: ...


Probe = tuple[str, tuple[str, ...], str]  # (certificate name, its domains, target name)
_CHUNK = 32  # probes per task at most


def observe_targets(probes: Iterable[Probe], targets: Mapping[str, Observable], *, workers: int = 8) -> Observations:
    """Probe each (certificate, target) pair in parallel; unknown targets are skipped."""
    wanted = [probe for probe in probes if probe[2] in targets]

    def probe(item: Probe) -> tuple[tuple[str, str], ServedCertificate | None]:
        name, domains, target = item
        seen = targets[target].observe(name, domains)
        if seen.unknown:
            return (name, target), None  # the target cannot tell: no observation, no drift
        served = ServedCertificate(
            seen.fingerprint, seen.serial_number, seen.not_after, seen.error, unreachable=seen.unreachable
        )
        return (name, target), served  # unreachable: its host did not answer; the planner never sees drift in it

    def probe_all(chunk: list[Probe]) -> list[tuple[tuple[str, str], ServedCertificate | None]]:
        return [probe(item) for item in chunk]

    if not wanted:
        return Observations()
    # A task per chunk, not per probe: a probe of a local target costs less than handing it to a thread.
    # The chunks stay small enough (at least 8 per thread) that a slow target holds up only its own.
    size = max(1, min(_CHUNK, len(wanted) // (workers * 8)))
    chunks = [wanted[start : start + size] for start in range(0, len(wanted), size)]
    with ThreadPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
        served = {key: seen for done in pool.map(probe_all, chunks) for key, seen in done if seen is not None}
    return Observations(served=served)
