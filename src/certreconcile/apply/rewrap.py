"""``kms rewrap``: move every stored data key to another KMS or master key.

Only the wrapped DEK of each envelope changes: it is unwrapped by the KMS that wrapped it
(named in the envelope) under its row's context and wrapped again by the target KMS under the
same context. The private key's ciphertext and nonce stay, so no private key is ever decrypted.

Each row is written in its own small transaction, with a compare-and-set on the old envelope
(a concurrent rewrap or apply never loses an update) and a ``key_rewrapped`` audit event.
Rows already under the target KMS and master key are skipped, so an interrupted rewrap
resumes by simply running it again; at every moment each row opens with the old or the new KMS.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, assert_never

from certreconcile.actual.store import KeyRefTable, StateSession, StateStore, StoredKeyRef, fleet_ca_context
from certreconcile.apply.executor import certificate_context
from certreconcile.audit.events import AuditAction, AuditEvent
from certreconcile.clock import Clock
from certreconcile.crypto.envelope import rewrap_envelope
from certreconcile.errors import KmsError
from certreconcile.plugins.issuers.acme import acme_account_context
from certreconcile.plugins.issuers.local_ca import ca_key_context
from certreconcile.plugins.ports import EncryptionContext, Kms, SecretBytes

__all__ = [
    "DEFAULT_BATCH",
    "RewrapFailure",
    "RewrapResult",
    "acme_account_context",
    "key_context",
    "rewrap_keys",
]

DEFAULT_BATCH = 100

RowOutcome = Literal["rewrapped", "skipped", "failed", "conflict"]


def key_context(stored: StoredKeyRef) -> EncryptionContext:
    """The context a stored key was sealed under, derived from its row (never from the envelope)."""
    match stored.table:
        case KeyRefTable.CERTIFICATE | KeyRefTable.APPLY_STEP:
            if not stored.cert_id:
                raise KmsError(
                    f"{stored.table.value} {stored.row_id} names no certificate", code="kms-envelope-invalid"
                )
            return certificate_context(stored.cert_id)
        case KeyRefTable.LOCAL_CA:
            return ca_key_context(stored.row_id)
        case KeyRefTable.ACME_ACCOUNT:
            return acme_account_context(stored.name)
        case KeyRefTable.FLEET_CA:
            return fleet_ca_context()
        case _:
            assert_never(stored.table)


@dataclass(frozen=True, slots=True)
class RewrapFailure:
    table: KeyRefTable
    row_id: str
    name: str
    message: str  # one line, never a secret


@dataclass(frozen=True, slots=True)
class RewrapResult:
    target_kms: str
    target_key_id: str
    rewrapped: int = 0
    skipped: int = 0  # already under the target KMS and master key
    conflicts: int = 0  # changed by someone else meanwhile: run again to check them
    failures: tuple[RewrapFailure, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.failures and not self.conflicts


def _target_key_id(target: Kms) -> str:
    """The master key id the target records in envelopes, learnt by wrapping a throwaway key.

    This also checks, before any row is touched, that the target KMS answers and lets us wrap.
    """
    probe = EncryptionContext(table="rewrap-probe", row_id="probe", purpose="probe")
    return target.wrap_data_key(SecretBytes(os.urandom(32)), probe).key_id


class _Rewrapper:
    def __init__(
        self, session: StateSession, target: Kms, target_key_id: str, sources: Sequence[Kms], actor: str, clock: Clock
    ) -> None:
        self.session = session
        self.target = target
        self.target_key_id = target_key_id
        self.sources = sources
        self.actor = actor
        self.clock = clock
        self.failures: list[RewrapFailure] = []

    def row(self, stored: StoredKeyRef) -> RowOutcome:
        old = stored.key_ref
        if (old.kms, old.key_id) == (self.target.name, self.target_key_id):
            return "skipped"
        candidates = [kms for kms in self.sources if kms.name == old.kms]
        if not candidates:
            self._fail(stored, f"sealed by the {old.kms} KMS, which is not configured (pass --from FILE.yaml)")
            return "failed"
        errors: list[KmsError] = []
        for source in candidates:
            try:
                new = rewrap_envelope(old, source, self.target, key_context(stored))
                break
            except KmsError as exc:
                errors.append(exc)
        else:
            self._fail(stored, errors[0].one_line())
            return "failed"
        with self.session.transaction():
            if not self.session.replace_key_ref(stored.table, stored.row_id, old, new):
                return "conflict"
            detail = {
                "table": stored.table.value,
                "row_id": stored.row_id,
                "from_kms": old.kms,
                "from_key_id": old.key_id,
                "to_kms": new.kms,
                "to_key_id": new.key_id,
            }
            if stored.cert_id:
                detail["key_of"] = stored.cert_id
            self.session.append_audit(
                AuditEvent(
                    cert_id=stored.cert_id if stored.table is KeyRefTable.CERTIFICATE else None,
                    name=stored.name,
                    action=AuditAction.KEY_REWRAPPED,
                    actor=self.actor,
                    at=self.clock.now(),
                    detail=detail,
                )
            )
        return "rewrapped"

    def _fail(self, stored: StoredKeyRef, message: str) -> None:
        self.failures.append(RewrapFailure(stored.table, stored.row_id, stored.name, message.replace("\n", " ")))


def rewrap_keys(
    store: StateStore,
    target: Kms,
    sources: Sequence[Kms],
    *,
    actor: str,
    clock: Clock,
    batch: int = DEFAULT_BATCH,
    on_progress: Callable[[StoredKeyRef, RowOutcome], None] | None = None,
) -> RewrapResult:
    """Rewrap every stored data key under ``target``; ``sources`` unwrap them (tried in order).

    A row whose source KMS fails is counted as failed and the others go on; any other error
    (the database) stops the run, leaving every row under its old or its new KMS.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    target_key_id = _target_key_id(target)
    counts: dict[RowOutcome, int] = {"rewrapped": 0, "skipped": 0, "failed": 0, "conflict": 0}
    with store.session() as session:
        rewrapper = _Rewrapper(session, target, target_key_id, sources, actor, clock)
        for table in KeyRefTable:
            after: str | None = None
            while page := session.list_key_refs(table, after, batch):
                for stored in page:
                    outcome = rewrapper.row(stored)
                    counts[outcome] += 1
                    if on_progress is not None:
                        on_progress(stored, outcome)
                after = page[-1].row_id
    return RewrapResult(
        target_kms=target.name,
        target_key_id=target_key_id,
        rewrapped=counts["rewrapped"],
        skipped=counts["skipped"],
        conflicts=counts["conflict"],
        failures=tuple(rewrapper.failures),
    )
