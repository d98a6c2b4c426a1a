"""Renew the agents' own certificates through the channel (design.md section 9): their keys stay on their hosts.

For each :class:`~certreconcile.plan.fleet.AgentRenewal`: ask the agent for a CSR, require its key
to be the key of the agent's current certificate, sign it with the fleet CA, push the certificate
back, then record it (compare-and-set on the old fingerprint) and audit it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from certreconcile.actual.store import StateStore
from certreconcile.audit.events import AuditAction, AuditEvent
from certreconcile.clock import Clock
from certreconcile.desired.model import DesiredState
from certreconcile.errors import CertReconcileError
from certreconcile.fleet.applier import Fleet
from certreconcile.fleet.ca import agent_row_of, leaf_certificate, public_key_der
from certreconcile.fleet.protocol import CertificateResponse, CsrResponse
from certreconcile.plan.fleet import AgentRenewal

__all__ = ["AgentRenewalResult", "renew_agents"]


@dataclass(frozen=True, slots=True)
class AgentRenewalResult:
    name: str
    ok: bool
    message: str  # one line, never a secret


def renew_agents(
    renewals: Sequence[AgentRenewal], desired: DesiredState, fleet: Fleet, store: StateStore, clock: Clock, actor: str
) -> tuple[AgentRenewalResult, ...]:
    """Renew each agent in turn; one failing never stops the others."""
    results = []
    for renewal in renewals:
        try:
            results.append(_renew(renewal.name, desired, fleet, store, clock, actor))
        except CertReconcileError as exc:
            results.append(AgentRenewalResult(renewal.name, False, exc.one_line()))
    return tuple(results)


def _failed(name: str, why: str, code: str, hint: str = "") -> CertReconcileError:
    return CertReconcileError(f"agent {name}: {why}", code=code, hint=hint)


def _renew(name: str, desired: DesiredState, fleet: Fleet, store: StateStore, clock: Clock, actor: str) -> (
    AgentRenewalResult
):
    spec = desired.agents.get(name)
    if spec is None:
        raise _failed(name, "is not declared in `agents:`", "agent-not-enrolled")
    with store.session() as session:
        current = session.agent_certificate(name)
    if current is None:
        raise _failed(name, "is not enrolled", "agent-not-enrolled",
                      f"enrol it: certreconcile agent enroll {name} --csr FILE --out CERT")  # fmt: skip
    client = fleet.client_for(spec)
    csr_pem = client.typed("csr", CsrResponse).csr_pem
    ca = fleet.identity.ca()
    try:
        csr_key = public_key_der(x509.load_pem_x509_csr(csr_pem.encode()).public_key())
    except ValueError:
        raise _failed(name, "answered a CSR that is not valid PEM", "agent-csr-invalid") from None
    if csr_key != public_key_der(leaf_certificate(current.cert_pem).public_key()):
        raise _failed(name, "answered a CSR for another key than its enrolled certificate's", "agent-csr-key-changed",
                      f"a new key means a new enrolment: certreconcile agent enroll {name} --replace")  # fmt: skip
    now = clock.now()
    cert = ca.sign_agent_csr(name, csr_pem, now)
    row = agent_row_of(name, cert)
    answer = client.typed("certificate", CertificateResponse, cert_pem=row.cert_pem, ca_pem=ca.cert_pem)
    if answer.fingerprint != row.fingerprint:
        raise _failed(name, "installed another certificate than the one sent", "agent-response-invalid")
    with store.session() as session, session.transaction():
        if not session.renew_agent(row, current.fingerprint, now):
            raise _failed(name, "was renewed or enrolled again meanwhile", "agent-renewal-conflict",
                          "run apply again")  # fmt: skip
        session.append_audit(AuditEvent(
            cert_id=None, name=name, action=AuditAction.AGENT_RENEWED, actor=actor, at=now,
            detail={"serial": row.serial, "previous_serial": current.serial, "fingerprint": row.fingerprint,
                    "not_after": row.not_after.isoformat()},
        ))  # fmt: skip
    return AgentRenewalResult(name, True, f"renewed: serial {row.serial}, valid until {row.not_after:%Y-%m-%d}")
