"""The ``agent/target`` target: a local target of an agent, reached through the agent (design.md section 9).

``deploy`` sends the bundle (the key decrypted in memory, on the TLS socket only) and requires the
agent's proof that the target serves it; ``observe`` asks what the target serves, and answers
``unreachable`` (never drift) when the agent does not answer.

The agent's answer to a deploy IS a verification (its own handshake or read-back, just made), so the
first ``observe`` of that name right after a verified deploy returns that proof instead of asking
again (one mutual-TLS round trip and two handshakes less per target). Only that one observation:
every later one, and every ``plan --refresh``, asks the agent.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from certreconcile.desired.model import AgentTargetRef
from certreconcile.errors import CertReconcileError, TargetError
from certreconcile.fleet.client import AgentClient, AgentUnreachable
from certreconcile.fleet.protocol import DeployResponse, ObserveResponse
from certreconcile.plugins.ports import DeployBundle, TargetObservation

if TYPE_CHECKING:
    from certreconcile.fleet.applier import Fleet

__all__ = ["AgentTarget"]

#: How long a deploy's proof answers the next observation of the same name (the executor observes at once).
PROOF_TTL_SECONDS = 5.0


class AgentTarget:
    """Implements :class:`certreconcile.plugins.ports.Target` for ``<agent>/<target>``."""

    def __init__(self, ref: AgentTargetRef, client: AgentClient, fleet: Fleet | None = None) -> None:
        self.name = f"{ref.agent}/{ref.target}"
        self.fleet = fleet  # the identity and contact log it shares with the other agent targets
        self.agent = ref.agent
        self.local_target = ref.target
        self.client = client
        self._timeout = timedelta(seconds=ref.timeout_seconds)
        self._proofs: dict[str, tuple[str, float]] = {}  # name -> (fingerprint the agent proved, monotonic time)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AgentTarget({self.name})"

    def deploy(self, bundle: DeployBundle) -> None:
        answer = self.client.typed(
            "deploy",
            DeployResponse,
            target=self.local_target,
            name=bundle.name,
            domains=bundle.domains,
            cert_pem=bundle.cert_pem,
            chain_pem=bundle.chain_pem,
            key_pem=bundle.key_pem.reveal().decode("ascii"),
            fingerprint=bundle.fingerprint,
        )
        if not answer.verified or answer.fingerprint != bundle.fingerprint:
            served = answer.fingerprint[:16] if answer.fingerprint else "nothing"
            raise TargetError(
                f"agent {self.agent} did not verify {bundle.name} on its target {self.local_target}: it serves"
                f" {served} instead of {bundle.fingerprint[:16]}" + (f" ({answer.error})" if answer.error else ""),
                code="agent-not-verified",
                hint="check the target on the agent's host (its log says why); the next apply tries again",
            )
        with self._lock:
            self._proofs[bundle.name] = (answer.fingerprint, time.monotonic())

    def _fresh_proof(self, name: str) -> str | None:
        with self._lock:
            proof = self._proofs.pop(name, None)
        if proof is None or time.monotonic() - proof[1] > PROOF_TTL_SECONDS:
            return None
        return proof[0]

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        proved = self._fresh_proof(name)
        if proved is not None:
            return TargetObservation(fingerprint=proved)
        try:
            answer = self.client.typed("observe", ObserveResponse, target=self.local_target, name=name,
                                       domains=domains)  # fmt: skip
        except AgentUnreachable as exc:
            return TargetObservation(fingerprint=None, error=exc.message, unreachable=True)
        except CertReconcileError as exc:
            return TargetObservation(fingerprint=None, error=exc.one_line())
        return TargetObservation(
            fingerprint=answer.fingerprint,
            serial_number=answer.serial_number,
            not_after=answer.not_after,
            error=answer.error,
            unknown=answer.unknown,
        )

    def verify_timeout(self) -> timedelta:
        return self._timeout
