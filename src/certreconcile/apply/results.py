"""What an apply returns, and the environment it runs in."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from certreconcile.actual.store import StateStore
from certreconcile.clock import Clock
from certreconcile.plan.plan import Change
from certreconcile.plugins.ports import EncryptionContext, Issuer, Kms, Target

__all__ = [
    "NOT_THE_NAMES_FAULT",
    "AgentOutcome",
    "ApplyEnvironment",
    "ApplyResult",
    "ChangeResult",
    "Outcome",
    "WorkerReport",
    "certificate_context",
]

Outcome = Literal["done", "skipped", "failed"]

#: Failures outside the name (the state database cut or timing out, the CA or the DNS server not
#: answering, after their bounded retries): the change fails, but the name is not backed off, so the
#: next apply finishes it as soon as the fault is gone. A CA that answers and refuses still backs off.
NOT_THE_NAMES_FAULT = frozenset(
    {
        "database-unavailable",
        "database-timeout",
        "acme-unreachable",
        "acme-server-error",
        "dns-server-unreachable",
        "worker-died",  # ``apply --workers``: the process applying it ended (killed, out of memory)
        "worker-start-failed",  # ``apply --workers``: no worker process could build its environment
    }
)


def certificate_context(cert_id: str) -> EncryptionContext:
    return EncryptionContext(table="Certificate", row_id=cert_id)


@dataclass(frozen=True)
class ApplyEnvironment:
    store: StateStore
    kms: Kms
    issuers: Mapping[str, Issuer]
    targets: Mapping[str, Target]
    clock: Clock
    actor: str
    on_progress: Callable[[ChangeResult], None] | None = None
    # Pushes and verifications in flight at once, all the apply's changes together (`apply
    # --target-concurrency`); None: as many as changes run at once (`--concurrency`).
    target_concurrency: int | None = None
    # Certificate id -> leaf PEM, kept by `run` between cycles for the CAs' renewal info (a stored
    # certificate never changes): a renewal names the certificate it replaces from it, not from a read.
    leaf_pems: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ChangeResult:
    change: Change
    outcome: Outcome
    message: str
    cert_id: str | None = None
    failed_targets: tuple[str, ...] = ()
    error_code: str | None = None  # a failed change's stable error code (metrics), never parsed from message
    serial: str | None = None  # the serial number of the certificate issued or deployed (log lines), when one was


@dataclass(frozen=True, slots=True)
class AgentOutcome:
    """An agent's own certificate renewed through the channel (``plan.agent_renewals``), or not."""

    name: str
    outcome: Outcome  # done | failed
    message: str  # one line, never a secret


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """One worker process of ``apply --workers N``: what it applied and the CPU it used."""

    pid: int
    changes: int  # the changes whose results it returned
    cpu_seconds: float | None  # user + system CPU of the whole process; None when it ended without saying
    start_cpu_seconds: float | None = None  # of which before its first change (unpickling, its environment)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    run_id: int
    results: tuple[ChangeResult, ...]
    serial: int
    failures: tuple[ChangeResult, ...] = field(default=())
    agents: tuple[AgentOutcome, ...] = field(default=())  # after the certificates' changes
    workers: tuple[WorkerReport, ...] = field(default=())  # ``apply --workers N`` (N > 1): each process

    @property
    def ok(self) -> bool:
        return not self.failures and not self.agent_failures

    @property
    def agent_failures(self) -> tuple[AgentOutcome, ...]:
        return tuple(agent for agent in self.agents if agent.outcome == "failed")

    def count(self, outcome: Outcome) -> int:
        return sum(1 for result in self.results if result.outcome == outcome)
