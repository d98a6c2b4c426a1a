"""The shared core of one change's steps: the session, the journal, the audit, key access."""

from __future__ import annotations

from concurrent.futures import Executor

from certreconcile.actual.journal_step import JournalState
from certreconcile.actual.store import JournalEntry, StateSession
from certreconcile.apply.journalled_key import live_key_error
from certreconcile.apply.results import ApplyEnvironment, certificate_context
from certreconcile.audit.events import AuditAction, AuditEvent
from certreconcile.crypto.envelope import open_envelope
from certreconcile.desired.model import DesiredState
from certreconcile.domain.keys import KeyRef
from certreconcile.domain.policy import Origin
from certreconcile.domain.status import CertStatus, allowed_transitions
from certreconcile.errors import KmsError
from certreconcile.plan.plan import Change
from certreconcile.plugins.ports import SecretBytes

__all__ = ["RunnerBase"]


class RunnerBase:
    """What every step of a change uses; the steps themselves live in the mixins of ``ChangeRunner``."""

    def __init__(
        self,
        session: StateSession,
        desired: DesiredState,
        env: ApplyEnvironment,
        run_id: int,
        target_pool: Executor | None = None,
        *,
        origin: Origin = Origin.GIT,
    ) -> None:
        self.session = session
        self.origin = origin  # the owner of the certificates it issues for new names (the facade: API)
        self.desired = desired
        self.env = env
        self.run_id = run_id
        # Shared by the changes of one apply: bounds the deployments in flight to --concurrency.
        self.target_pool = target_pool

    # --- the public steps other modules may run (the facade, revoke_now, the order journal) ---
    def journal(self, change: Change, step: str, state: JournalState, **detail: str) -> None:
        """Record one journal step of ``change`` (the ACME order journal records its order steps here)."""
        self._journal(change, step, state, **detail)

    # --- bookkeeping --------------------------------------------------------------
    def _journal(self, change: Change, step: str, state: JournalState, **detail: str) -> None:
        """Journal ``step`` (a :class:`JournalStep`, or ``JournalStep.X.for_target(name)``)."""
        self.session.journal(
            JournalEntry(
                run_id=self.run_id,
                idempotency_key=change.idempotency_key,
                name=change.name,
                step=step,
                state=state,
                detail=detail,
                at=self.env.clock.now(),
            )
        )

    def _audit(self, change: Change, cert_id: str | None, action: str, **detail: str) -> None:
        detail.setdefault("reasons", ",".join(reason.code.value for reason in change.reasons))
        self.session.append_audit(
            AuditEvent(
                cert_id=cert_id,
                name=change.name,
                action=action,
                actor=self.env.actor,
                at=self.env.clock.now(),
                detail=detail,
            )
        )

    def _open_key(
        self, change: Change, cert_id: str, key_ref: KeyRef, purpose: str, *, stored: bool = True
    ) -> SecretBytes:
        """Decrypt a private key; every access is audited (Lemur records key views too).

        ``stored=False``: a journalled key whose certificate row does not exist yet (resumed issuance).
        """
        try:
            key_pem = open_envelope(self.env.kms, key_ref, certificate_context(cert_id))
        except KmsError as exc:
            if not stored:
                raise
            error = live_key_error(change.name, cert_id, exc)  # the live key: never discarded
            if error is exc:
                raise
            raise error from exc
        self._audit(
            change,
            cert_id if stored else None,
            AuditAction.KEY_ACCESSED,
            purpose=purpose,
            key_of=cert_id,
            kms=key_ref.kms,
            key_id=key_ref.key_id,
        )
        return key_pem

    def _move(self, cert_id: str, current: CertStatus, new: CertStatus) -> None:
        if new in allowed_transitions(current):
            self.session.set_status(cert_id, new)
