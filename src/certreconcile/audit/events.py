"""The audit vocabulary: the events apply records and the rows the hash chain covers.

Written through an :class:`certreconcile.audit.recorder.AuditRecorder` (the state store), read back
by ``audit`` queries and by :mod:`certreconcile.audit.verify`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["AuditAction", "AuditChainHead", "AuditChainRow", "AuditEvent"]


class AuditAction:
    """The audit vocabulary (plain strings in ``CertAudit.action``)."""

    ISSUED = "issued"
    RENEWED = "renewed"
    REVOKED = "revoked"
    DISTRIBUTED = "distributed"
    VERIFIED = "verified"
    RETIRED = "retired"
    FAILED = "failed"
    KEY_ACCESSED = "key_accessed"  # a private key was decrypted (which certificate, which actor, why)
    KEY_REWRAPPED = "key_rewrapped"  # `kms rewrap` moved a data key to another KMS or master key
    KEY_DISCARDED = "key_discarded"  # apply gave up a journalled key that can never be opened (and made a new one)
    EXPIRING_SOON = "expiring_soon"  # the certificate's renewal fell due: active → expiring_soon (apply/lifecycle.py)
    EXPIRED = "expired"  # it passed not_after unreplaced: active/expiring_soon → expired
    FLEET_CA_CREATED = "fleet_ca_created"  # the fleet CA was made (name: FLEET_CA_AUDIT_NAME)
    AGENT_ENROLLED = "agent_enrolled"  # `agent enroll` signed an agent's CSR (name: the agent's)
    AGENT_RENEWED = "agent_renewed"  # apply renewed an agent's own certificate through the channel
    NOTIFIED = "notified"  # a notification was sent to a sink, or given up (detail: event, sink, outcome)
    IMPORTED = "imported"  # `certreconcile import` adopted a certificate issued elsewhere (its key sealed by the KMS)
    ALL = (ISSUED, RENEWED, REVOKED, DISTRIBUTED, VERIFIED, RETIRED, FAILED, KEY_ACCESSED, KEY_REWRAPPED, KEY_DISCARDED,
           EXPIRING_SOON, EXPIRED, FLEET_CA_CREATED, AGENT_ENROLLED, AGENT_RENEWED, NOTIFIED, IMPORTED)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditEvent:
    cert_id: str | None  # None only before the certificate exists (a failure, a journalled key)
    name: str
    action: str  # one of AuditAction.ALL
    actor: str  # git:<sha> <email> | user:<login> | automation:renewal
    at: datetime
    detail: Mapping[str, str] = field(default_factory=dict)  # never a secret
    id: int | None = None  # assigned by the store


@dataclass(frozen=True, slots=True)
class AuditChainRow:
    """One CertAudit row as the hash chain covers it (migration 0007 documents the encoding).

    ``detail`` is the jsonb text form (``detail::text``), the exact text that was hashed;
    ``cert_id`` the canonical UUID text. Read by ``certreconcile.audit``, never written.
    """

    seq: int  # position in the chain: 1, 2, 3, ... (also the commit order)
    id: int
    cert_id: str | None
    name: str
    action: str
    actor: str
    at: datetime
    detail: str
    prev_hash: str  # row_hash of the row at seq - 1; 64 zeros for seq 1
    row_hash: str


@dataclass(frozen=True, slots=True)
class AuditChainHead:
    """The end of the chain: the last row's seq and hash (seq 0 and 64 zeros when empty)."""

    seq: int
    row_hash: str
