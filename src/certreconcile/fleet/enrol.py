"""``certreconcile agent enroll``: sign a CSR made on an agent's host, record the agent, audit it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from certreconcile.actual.store import AgentCertificateRow, StateStore
from certreconcile.audit.events import AuditAction, AuditEvent
from certreconcile.crypto.secret import Kms
from certreconcile.domain.names import CERT_NAME_PATTERN
from certreconcile.errors import CertReconcileError
from certreconcile.fleet.ca import FleetCa, agent_row_of, check_csr, fleet_ca_missing

__all__ = ["Enrolment", "enrol_agent", "fleet_ca_pem"]

_NAME = re.compile(CERT_NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class Enrolment:
    row: AgentCertificateRow  # the agent's certificate (public)
    ca_pem: str  # the fleet CA's certificate (public)
    replaced: bool


def _already_enrolled(name: str) -> CertReconcileError:
    return CertReconcileError(
        f"agent {name} is enrolled already",
        code="agent-already-enrolled",
        hint="pass --replace to enrol it again with the key of this CSR (its current certificate stops being recorded)",
    )


def enrol_agent(
    store: StateStore, kms: Kms, name: str, csr_pem: str, now: datetime, actor: str, *, replace: bool = False
) -> Enrolment:
    """Sign ``csr_pem`` for agent ``name`` (the fleet CA made on first use) and record it, audited.

    Refused, nothing written: a bad name, a bad or weak CSR, an enrolled name without ``replace``.
    """
    if not _NAME.match(name):
        raise CertReconcileError(f"{name!r} is not a valid agent name", code="usage",
                                 hint="lower-case letters, digits and '-', e.g. web-1")  # fmt: skip
    with store.session() as session:
        existing = session.agent_certificate(name)
    if existing is not None and not replace:
        raise _already_enrolled(name)
    check_csr(name, csr_pem)  # before the fleet CA is made: a refused CSR changes nothing
    ca = FleetCa.open(store, kms, now, actor, create=True)
    row = agent_row_of(name, ca.sign_agent_csr(name, csr_pem, now))
    with store.session() as session, session.transaction():
        if not session.enroll_agent(row, now, replace=replace):
            raise _already_enrolled(name)
        detail = {"serial": row.serial, "fingerprint": row.fingerprint, "not_after": row.not_after.isoformat()}
        if existing is not None:
            detail["replaced_serial"] = existing.serial
        session.append_audit(AuditEvent(cert_id=None, name=name, action=AuditAction.AGENT_ENROLLED, actor=actor,
                                        at=now, detail=detail))  # fmt: skip
    return Enrolment(row=row, ca_pem=ca.cert_pem, replaced=existing is not None)


def fleet_ca_pem(store: StateStore) -> str:
    """The fleet CA's certificate (no KMS needed); ``fleet-ca-missing`` before the first enrolment."""
    with store.session() as session:
        record = session.fleet_ca()
    if record is None:
        raise fleet_ca_missing()
    return record.cert_pem
