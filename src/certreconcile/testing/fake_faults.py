"""Fault schedules for simulations: a DNS-01 provider whose updates fail at a rate, and targets
that are down during given intervals of the injected clock.

Both are deterministic for a given seed, so a simulation can be run again and give the same
story. :class:`FakeTarget` serves from memory (name -> fingerprint), so ``observe`` is cheap
enough for 10,000 certificates every simulated hour.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from datetime import timedelta

from certreconcile.clock import Clock
from certreconcile.errors import DnsError, TargetError
from certreconcile.plugins.ports import DeployBundle, DnsTxtRecord, TargetObservation
from certreconcile.testing.fake_ca import Interval, during
from certreconcile.testing.fake_dns01 import FakeDns01Provider

__all__ = ["FakeTarget", "FlakyDns01Provider"]


class FlakyDns01Provider(FakeDns01Provider):
    """The in-memory provider, failing ``failure_rate`` of its record updates (seeded)."""

    def __init__(self, *, name: str = "flaky", failure_rate: float = 0.01, seed: int = 0) -> None:
        super().__init__(name=name)
        self.failure_rate = failure_rate
        self.failures = 0
        self._rng = random.Random(seed)  # noqa: S311  a fault schedule, not a secret
        self._faults = threading.Lock()

    def present(self, record: DnsTxtRecord) -> None:
        with self._faults:
            fail = self._rng.random() < self.failure_rate
            self.failures += fail
        if fail:
            raise DnsError(
                f"adding the TXT record {record.fqdn}: the DNS provider {self.name} answered SERVFAIL",
                code="dns-update-failed",
                hint="a scheduled fault of the simulation; the next attempt may pass",
            )
        super().present(record)


_NOTHING = TargetObservation(fingerprint=None)


class FakeTarget:
    """A target serving from memory; down (deploys fail, observations err) during ``outages``."""

    def __init__(self, name: str, clock: Clock, *, outages: Iterable[Interval] = ()) -> None:
        self.name = name
        self.clock = clock
        self.outages = tuple(outages)
        self.served: dict[str, str] = {}  # certificate name -> fingerprint (written by deploy only)
        self._seen: dict[str, TargetObservation] = {}  # name -> what observe answers (one object per deploy)
        self.deploys = 0
        self.refused = 0
        self._lock = threading.Lock()

    def _down(self) -> bool:
        return bool(self.outages) and during(self.outages, self.clock.now())  # most targets never fail

    def deploy(self, bundle: DeployBundle) -> None:
        if self._down():
            with self._lock:
                self.refused += 1
            raise TargetError(
                f"deploying {bundle.name} to {self.name}: connection refused",
                code="target-unreachable",
                hint="a scheduled fault of the simulation",
            )
        with self._lock:
            self.served[bundle.name] = bundle.fingerprint
            self._seen[bundle.name] = TargetObservation(fingerprint=bundle.fingerprint)
            self.deploys += 1

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        if self._down():
            return TargetObservation(fingerprint=None, error=f"{self.name}: connection refused", unreachable=True)
        # No lock: one dict read (atomic), of an observation made once per deploy; asked 10,000 times a cycle.
        return self._seen.get(name, _NOTHING)

    def verify_timeout(self) -> timedelta:
        return timedelta(seconds=5)
