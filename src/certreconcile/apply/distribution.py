"""Distribution: deploy a certificate to its targets, verify they serve it, then activate it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from certreconcile.actual.journal_step import JournalState, JournalStep
from certreconcile.actual.model import ActualCertificate, OpenRotation
from certreconcile.actual.store import DistributionRecord, JournalEntry
from certreconcile.apply.results import ChangeResult
from certreconcile.apply.runner_base import RunnerBase
from certreconcile.apply.verify import wait_until_served
from certreconcile.audit.events import AuditAction, AuditEvent
from certreconcile.domain.status import CertStatus
from certreconcile.errors import CertReconcileError, TargetError
from certreconcile.logcontext import in_log_context, log_context
from certreconcile.plan.plan import Change
from certreconcile.plugins.ports import DeployBundle

__all__ = ["DistributionSteps"]

log = logging.getLogger("certreconcile.apply")


@dataclass(frozen=True, slots=True)
class _PushOutcome:
    target: str
    pushed_at: datetime | None  # None: the push itself failed
    verified_at: datetime | None
    error: str | None  # one line, never a secret
    attempts: int
    served: Mapping[str, str] = field(default_factory=dict)  # what the target served instead, for the audit


class DistributionSteps(RunnerBase):
    """The deploy, verify and activate steps of a change."""

    def _deploy(
        self,
        change: Change,
        cert_id: str,
        bundle: DeployBundle,
        targets: tuple[str, ...],
        *,
        started_journalled: bool = False,
        activation: tuple[CertStatus, OpenRotation | None] | None = None,
    ) -> dict[str, str]:
        """Deploy and verify on each target, in parallel; returns the failed targets with their error.

        Only the push and the verification run in the pool (network and reloads); every row is
        written here, on this change's own session (a connection is used by one thread at a time),
        in batches whatever the number of targets: the ``started`` step of every target in one
        statement, committed before the first push (``started_journalled``: the caller committed
        them, with the certificate they deploy); then, once every target has answered, their journal
        steps, distribution rows and audit events in one transaction (three statements).
        ``activation``: the certificate's status and the rotation it replaces, as :meth:`_activate`
        takes them, known by the caller: when every target verified, the activation is written in
        that same transaction (one commit for both).
        """
        if not started_journalled:
            self.session.journal_many(self._deploy_started(change, cert_id, targets))
        push = in_log_context(self._push)  # the pool's threads log with this change's fields
        if self.target_pool is not None and len(targets) > 1:
            outcomes = list(self.target_pool.map(lambda name: push(name, bundle), targets))
        else:
            outcomes = [push(name, bundle) for name in targets]
        return self._record_outcomes(change, cert_id, bundle, outcomes, activation)

    def _record_outcomes(
        self,
        change: Change,
        cert_id: str,
        bundle: DeployBundle,
        outcomes: list[_PushOutcome],
        activation: tuple[CertStatus, OpenRotation | None] | None = None,
    ) -> dict[str, str]:
        """The rows of every target's outcome, in one transaction (a batch); the failed targets with their error.

        The rows, their content and their order in each table are those written one at a time
        before (per target: ``deploy`` done, distributed, then verified and ``verify`` done, or
        ``deploy`` failed and failed); the audit events go last, so the chain's head is locked
        only for the end of the transaction.
        """
        journal: list[JournalEntry] = []
        audit: list[AuditEvent] = []
        rows: list[DistributionRecord] = []
        failed: dict[str, str] = {}
        for outcome in outcomes:
            target = outcome.target
            deploy = JournalStep.DEPLOY.for_target(target)
            if outcome.pushed_at is not None:
                journal.append(self._journal_entry(change, deploy, JournalState.DONE, cert_id=cert_id))
                audit.append(self._audit_event(change, cert_id, AuditAction.DISTRIBUTED, target=target))
            error = None if outcome.error is None else outcome.error[:500]
            verified_at = outcome.verified_at if error is None else None
            rows.append(DistributionRecord(cert_id, target, bundle.fingerprint, outcome.pushed_at, verified_at, error,
                                           self.desired.targets[target].fingerprint))  # fmt: skip
            if error is None:
                audit.append(self._audit_event(change, cert_id, AuditAction.VERIFIED, target=target,
                                               fingerprint=bundle.fingerprint))  # fmt: skip
                verify = JournalStep.VERIFY.for_target(target)
                journal.append(self._journal_entry(change, verify, JournalState.DONE, attempts=str(outcome.attempts)))
                continue
            assert outcome.error is not None
            failed[target] = outcome.error
            journal.append(self._journal_entry(change, deploy, JournalState.FAILED, error=error))
            audit.append(self._audit_event(change, cert_id, AuditAction.FAILED, target=target, error=error,
                                           **outcome.served))  # fmt: skip
        # Two round trips (the distributions' answer: a missing certificate; the commit), and the activation's.
        with self.session.batch():
            self.session.record_distributions(rows)
            if activation is not None and not failed:
                self._activation_moves(cert_id, *activation)
                journal.append(self._journal_entry(change, JournalStep.COMPLETED, JournalState.DONE, cert_id=cert_id))
            self.session.journal_many(journal)
            self.session.append_audit_many(audit)
        return failed

    def _deploy_started(self, change: Change, cert_id: str, targets: tuple[str, ...]) -> list[JournalEntry]:
        """The ``started`` step of deploying ``cert_id`` on each target, journalled before the first push."""
        started = JournalState.STARTED
        return [self._journal_entry(change, JournalStep.DEPLOY.for_target(name), started, cert_id=cert_id)
                for name in targets]  # fmt: skip

    def _journal_entry(self, change: Change, step: str, state: JournalState, **detail: str) -> JournalEntry:
        """The row ``_journal`` writes, for a batch."""
        return JournalEntry(run_id=self.run_id, idempotency_key=change.idempotency_key, name=change.name, step=step,
                            state=state, detail=detail, at=self.env.clock.now())  # fmt: skip

    def _audit_event(self, change: Change, cert_id: str, action: str, **detail: str) -> AuditEvent:
        """The event ``_audit`` appends, for a batch."""
        detail.setdefault("reasons", ",".join(reason.code.value for reason in change.reasons))
        return AuditEvent(cert_id=cert_id, name=change.name, action=action, actor=self.env.actor,
                          at=self.env.clock.now(), detail=detail)  # fmt: skip

    def _push(self, target_name: str, bundle: DeployBundle) -> _PushOutcome:
        """Push to one target and wait until it serves the bundle. No database access (runs in the pool)."""
        with log_context(target=target_name, step="deploy"):
            outcome = self._push_and_verify(target_name, bundle)
            # INFO either way: the change's result line reports a failure (and `apply` shows no INFO lines)
            log.info("%s: %s on %s", bundle.name, "verified" if outcome.error is None else "not verified",
                     target_name, extra={"step": "verify"})  # fmt: skip
            return outcome

    def _push_and_verify(self, target_name: str, bundle: DeployBundle) -> _PushOutcome:
        target = self.env.targets[target_name]
        pushed_at: datetime | None = None
        try:
            target.deploy(bundle)
            pushed_at = self.env.clock.now()
            outcome = wait_until_served(target, bundle.name, bundle.domains, bundle.fingerprint)
            if outcome.verified:
                return _PushOutcome(target_name, pushed_at, self.env.clock.now(), None, outcome.attempts)
            seen = outcome.last
            served = {"served_fingerprint": seen.fingerprint or "", "served_serial": seen.serial_number or ""}
            if seen.not_after is not None:
                served["served_not_after"] = seen.not_after.isoformat()
            error = TargetError(
                f"target {target_name} serves {seen.fingerprint[:16] if seen.fingerprint else 'nothing'}"
                f" instead of {bundle.fingerprint[:16]}" + (f" ({seen.error})" if seen.error else ""),
                code="target-not-serving",
                hint="the reload did not take effect; check the target, then apply again",
            )
            return _PushOutcome(target_name, pushed_at, None, error.one_line(), outcome.attempts, served)
        except CertReconcileError as exc:
            return _PushOutcome(target_name, pushed_at, None, exc.one_line(), 0)
        except Exception as exc:  # noqa: BLE001 - a plug-in bug fails this target only, never the others
            return _PushOutcome(target_name, pushed_at, None, f"target {target_name}: {type(exc).__name__}", 0)

    def _finish(
        self, change: Change, cert_id: str, failed: dict[str, str], what: str, *, serial: str | None = None
    ) -> ChangeResult:
        """Activate the certificate and close its rotation once every declared target is verified."""
        if failed:
            self._journal(change, JournalStep.DISTRIBUTION, JournalState.FAILED, targets=",".join(failed))
            return _not_verified(change, cert_id, what, serial, failed)
        current = self.session.current_certificate(change.name)
        spec = self.desired.certificates.get(change.name)
        if current is None or current.id != cert_id or spec is None:
            return ChangeResult(change, "done", what, cert_id=cert_id, serial=serial)
        unverified = [
            t
            for t in spec.targets
            if (d := current.distributions.get(t)) is None
            or d.verified_at is None
            or d.fingerprint != current.fingerprint
        ]
        if unverified:
            return ChangeResult(change, "failed", f"{what}; not verified on {', '.join(unverified)}",
                                cert_id=cert_id, serial=serial, failed_targets=tuple(unverified))  # fmt: skip
        self._activate(change, cert_id, current.status, current.open_rotation)
        return ChangeResult(change, "done", what, cert_id=cert_id, serial=serial)

    def _finish_issued(
        self, change: Change, cert_id: str, failed: dict[str, str], what: str, serial: str
    ) -> ChangeResult:
        """:meth:`_finish` for a certificate the caller has just stored (status ``issued``) and deployed under the
        name's lock with its ``activation`` (the state known without reading it again): already active when no
        target ``failed``."""
        if failed:
            return self._finish(change, cert_id, failed, what, serial=serial)
        return ChangeResult(change, "done", what, cert_id=cert_id, serial=serial)

    def _activate(self, change: Change, cert_id: str, status: CertStatus, rotation: OpenRotation | None) -> None:
        """Move ``cert_id`` (now ``status``) to active, and close the rotation it replaces, in one batch.

        ``rotation``: the name's open rotation as read under its lock: the one this certificate replaces
        when it names it; none open: none replaced. Else ask (an older one?).
        """
        with self.session.batch():
            self._activation_moves(cert_id, status, rotation)
            self._journal(change, JournalStep.COMPLETED, JournalState.DONE, cert_id=cert_id)

    def _activation_moves(self, cert_id: str, status: CertStatus, rotation: OpenRotation | None) -> None:
        """:meth:`_activate`'s writes but its journal step, in the caller's transaction."""
        if status is CertStatus.ISSUED and not self.session.compare_and_set_status(
            cert_id, CertStatus.ISSUED, CertStatus.ACTIVE
        ):
            self.session.set_status(cert_id, CertStatus.ACTIVE)  # moved meanwhile: checked as it is now
        if rotation is not None and rotation.new_cert_id != cert_id:
            rotation = self.session.rotation_replacing(cert_id)
        if rotation is not None and rotation.new_cert_id == cert_id:
            self.session.complete_rotation(rotation.rotation_id, self.env.clock.now())
            self.session.set_status_if_allowed(rotation.old_cert_id, CertStatus.SUPERSEDED)

    def _redistribute(self, change: Change, current: ActualCertificate) -> ChangeResult:
        spec = self.desired.certificates[change.name]
        targets = tuple(sorted(set(change.targets) & set(spec.targets)))
        for removed in change.removed_targets:
            self.session.remove_distribution(change.name, removed)
        failed: dict[str, str] = {}
        if targets:
            cert_pem, chain_pem = self.session.certificate_pems(current.id)
            key_pem = self._open_key(change, current.id, self.session.key_ref(current.id), "redistribute")
            bundle = DeployBundle(
                name=change.name,
                domains=current.domains,
                cert_pem=cert_pem,
                chain_pem=chain_pem,
                key_pem=key_pem,
                fingerprint=current.fingerprint,
            )
            failed = self._deploy(change, current.id, bundle, targets)
        what = f"redistributed to {', '.join(targets) or 'no target'}"
        return self._finish(change, current.id, failed, what, serial=current.serial_number)


def _not_verified(
    change: Change, cert_id: str, what: str, serial: str | None, failed: Mapping[str, str]
) -> ChangeResult:
    """The change's result when some targets failed (``failed``: their errors)."""
    errors = "; ".join(f"{t}: {e}" for t, e in sorted(failed.items()))
    message = f"{what}; not verified on {errors}"
    return ChangeResult(change, "failed", message, cert_id=cert_id, serial=serial, failed_targets=tuple(failed))
