"""ChangeRunner: one change, under its name's lock, from the precondition check to the audit.

One failing change never stops the others: ``run``'s one broad ``except`` records it and moves on.
The steps live in mixins by concern: ``issuance`` (issue, rotate), ``distribution`` (deploy,
verify, activate), ``revocation`` (revoke, retire); ``runner_base`` holds the journal and audit.
"""

from __future__ import annotations

from datetime import datetime

from certreconcile.actual.journal_step import JournalState, JournalStep
from certreconcile.actual.model import ActualCertificate, Observations
from certreconcile.apply.issuance import IssuanceSteps
from certreconcile.apply.results import NOT_THE_NAMES_FAULT, ChangeResult
from certreconcile.apply.revocation import RevocationSteps
from certreconcile.audit.events import AuditAction
from certreconcile.errors import CertReconcileError
from certreconcile.logcontext import log_context
from certreconcile.plan.backoff import declaration_digest
from certreconcile.plan.diff import change_for_name
from certreconcile.plan.plan import Action, Change
from certreconcile.plan.policies import is_servable

__all__ = ["ChangeRunner"]


class ChangeRunner(IssuanceSteps, RevocationSteps):
    """Runs changes on one session; the public steps are ``run``, ``redistribute``, ``revoke`` and ``journal``."""

    def redistribute(self, change: Change) -> ChangeResult:
        """Push the current certificate of ``change.name`` to ``change.targets``, under the name's lock."""
        with self.session.lock_name(change.name):
            current = self.session.current_certificate(change.name)
            if current is None:
                raise CertReconcileError(f"no certificate named {change.name!r}", code="name-unknown")
            return self._redistribute(change, current)

    def revoke(self, change: Change, current: ActualCertificate, *, reason: str) -> ChangeResult:
        """Revoke ``current`` at its CA now (the caller holds the name's lock); a failure is audited, then raised."""
        try:
            return self._revoke(change, current, reason=reason)
        except CertReconcileError as exc:
            self._audit(change, current.id, AuditAction.FAILED, error=exc.one_line()[:500])
            raise

    def run(self, change: Change) -> ChangeResult:
        if change.waits(self.env.clock.now()):  # a backoff after failed attempts: not before its time
            assert change.deferred_until is not None
            until = change.deferred_until.isoformat()
            return ChangeResult(change, "skipped", f"waiting until {until} (backing off after a failed attempt)")
        with log_context(certificate=change.name, issuer=change.issuer, step=change.action.value):
            try:
                return self._run_locked(change)
            except Exception as exc:  # noqa: BLE001  the one broad except: record this change's failure, carry on
                return self._failed(change, exc)

    def _run_locked(self, change: Change) -> ChangeResult:
        with self.session.lock_name(change.name):
            current = self.session.current_certificate(change.name)
            now = self.env.clock.now()
            fresh = change_for_name(self.desired, change.name, current, Observations(), now, force_rotate=change.forced)
            if not _still_needed(change, fresh, current, now):
                return ChangeResult(change, "skipped", "already done, or changed since the plan (re-plan to see)")
            match change.action:
                case Action.ISSUE | Action.ROTATE:
                    return self._issue(change, current)
                case Action.REDISTRIBUTE:
                    assert current is not None
                    return self._redistribute(change, current)
                case Action.REVOKE:
                    assert current is not None
                    return self._revoke(change, current, reason="cessationOfOperation")
                case Action.RETIRE:
                    assert current is not None
                    return self._retire(change, current)

    def _failed(self, change: Change, exc: Exception) -> ChangeResult:
        """Audit and journal a failed change; an issuance failing by the name's fault backs the name off."""
        message = exc.one_line() if isinstance(exc, CertReconcileError) else f"{type(exc).__name__}: {exc}"[:300]
        code = exc.code if isinstance(exc, CertReconcileError) else "internal-error"
        try:
            cert_id = change.replaces
            self._audit(change, cert_id, AuditAction.FAILED, error=message)
            self._journal(change, JournalStep(change.action.value), JournalState.FAILED, error=message)
            if change.action in (Action.ISSUE, Action.ROTATE) and code not in NOT_THE_NAMES_FAULT:
                # The planner defers the name until the backoff ends or its declaration changes.
                digest = declaration_digest(self.desired, change.name)
                self.session.record_failure(change.name, self.env.clock.now(), digest)
        except Exception as record_exc:  # noqa: BLE001  the store itself is failing: report both
            message += f" (and recording the failure failed: {type(record_exc).__name__})"
        return ChangeResult(change, "failed", message, error_code=code)


def _still_needed(planned: Change, fresh: Change | None, current: ActualCertificate | None, now: datetime) -> bool:
    """Under the lock: is the planned change still what this name needs?"""
    if fresh is None:
        # Nothing is needed any more: another apply did it. A redistribution is harmless to repeat.
        return planned.action is Action.REDISTRIBUTE
    if planned.action is Action.REDISTRIBUTE:
        # A due rotation (perhaps backing off) never holds back pushing the valid certificate planned.
        same = current is not None and current.id == planned.replaces and is_servable(current, now)
        return fresh.action is Action.REDISTRIBUTE or same
    return fresh.action is planned.action and fresh.replaces == planned.replaces
