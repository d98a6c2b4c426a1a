"""``plan --refresh``: ask every target what it serves. The only I/O before the pure diff."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Protocol

from certreconcile.actual.model import Observations, ServedCertificate
from certreconcile.domain.records import slot_constructor

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
Seen = tuple[str, str, ServedCertificate]  # (certificate name, target name, what it serves)
_CHUNK = 32  # probes per task at most
#: A probe faster than this (seconds) answered from memory (a cached or in-memory target): the probes go on
#: in this thread, where a pool's hand-over would cost more than the probe and a thread could not overlap it.
INLINE_BELOW = 20e-6
_served = slot_constructor(ServedCertificate)


def observe_targets(
    probes: Iterable[Probe], targets: Mapping[str, Observable], *, workers: int = 8, inline_below: float = INLINE_BELOW
) -> Observations:
    """Probe each (certificate, target) pair, in parallel unless they answer from memory; unknown targets are skipped.

    The first probe runs here and is timed: below ``inline_below`` seconds, the chunks go on here, each timed
    too, and those left go to the threads as soon as one is slower (a fleet of in-memory targets with a
    network one among them). Which thread ran a probe changes nothing in the result.
    """
    wanted = [probe for probe in probes if probe[2] in targets]
    if not wanted:
        return Observations()

    def probe_all(chunk: list[Probe]) -> list[Seen]:
        seen_all: list[Seen] = []
        for name, domains, target in chunk:
            seen = targets[target].observe(name, domains)
            if not seen.unknown:  # unknown: the target cannot tell, so no observation and no drift
                # unreachable: its host did not answer; the planner never sees drift in it
                served = _served(seen.fingerprint, seen.serial_number, seen.not_after, seen.error, seen.unreachable)
                seen_all.append((name, target, served))
        return seen_all

    # A task per chunk, not per probe: a probe of a local target costs less than handing it to a thread.
    # The chunks stay small enough (at least 8 per thread) that a slow target holds up only its own.
    size = max(1, min(_CHUNK, len(wanted) // (workers * 8)))
    chunks = [wanted[:1]] + [wanted[start : start + size] for start in range(1, len(wanted), size)]
    done: list[list[Seen]] = []
    for chunk in chunks:
        began = time.perf_counter()
        done.append(probe_all(chunk))
        if time.perf_counter() - began > inline_below * len(chunk):
            break
    if len(done) < len(chunks):
        rest = chunks[len(done) :]
        with ThreadPoolExecutor(max_workers=min(workers, len(rest))) as pool:
            done += pool.map(probe_all, rest)
    served: dict[tuple[str, str], ServedCertificate] = {}
    by_name: dict[str, dict[str, ServedCertificate]] = {}
    for seen_all in done:
        for name, target, seen in seen_all:
            served[(name, target)] = seen
            by_name.setdefault(name, {})[target] = seen
    return Observations.grouped(served, by_name)
