"""Apply: the only stage with external effects.

Per change: lock the name (PostgreSQL advisory lock) → check the precondition again under
the lock → run idempotent steps, each journalled → audit. One failing change never stops
the others: the executor's one broad ``except`` records it and moves on.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from certreconcile.actual.journal_step import JournalState, JournalStep
from certreconcile.actual.model import ActualCertificate, Observations
from certreconcile.actual.store import AcmeOrderRecord, CertificateRow, JournalEntry, StateSession, StateStore
from certreconcile.apply.journalled_key import (
    JournalledKey,
    discardable,
    journalled_key,
    live_key_error,
    odd_kms_error,
)
from certreconcile.apply.verify import wait_until_served
from certreconcile.audit.events import AuditAction, AuditEvent
from certreconcile.clock import Clock
from certreconcile.crypto.envelope import key_ref_from_json, open_envelope, seal, unopenable
from certreconcile.crypto.keys import (
    build_csr,
    generate_private_key,
    load_private_key,
    private_key_pem,
    public_key_matches,
)
from certreconcile.desired.model import DesiredState, OnDelete
from certreconcile.domain.certs import read_cert_facts
from certreconcile.domain.keys import KeyRef, KeyType
from certreconcile.domain.policy import Origin
from certreconcile.domain.status import CertStatus, allowed_transitions
from certreconcile.errors import ApplyError, CertReconcileError, IssuerError, KmsError, StalePlanError, TargetError
from certreconcile.plan.backoff import declaration_digest
from certreconcile.plan.diff import change_for_name
from certreconcile.plan.plan import Action, Change, Plan
from certreconcile.plan.policies import is_servable, renewal_time
from certreconcile.plugins.ports import (
    DeployBundle,
    EncryptionContext,
    Issuer,
    IssueRequest,
    Kms,
    SecretBytes,
    Target,
)

__all__ = [
    "ApplyEnvironment",
    "ApplyResult",
    "ChangeResult",
    "ChangeRunner",
    "apply_plan",
    "certificate_context",
    "check_fresh",
    "refuse_plan_errors",
    "revoke_now",
    "serving_targets",
]

Outcome = Literal["done", "skipped", "failed"]

#: Failures outside the name (the state database cut or timing out, the CA or the DNS server not
#: answering, after their bounded retries): the change fails, but the name is not backed off, so the
#: next apply finishes it as soon as the fault is gone. A CA that answers and refuses still backs off.
NOT_THE_NAMES_FAULT = frozenset(
    {"database-unavailable", "database-timeout", "acme-unreachable", "acme-server-error", "dns-server-unreachable"}
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


@dataclass(frozen=True, slots=True)
class ChangeResult:
    change: Change
    outcome: Outcome
    message: str
    cert_id: str | None = None
    failed_targets: tuple[str, ...] = ()
    error_code: str | None = None  # a failed change's stable error code (metrics), never parsed from message


@dataclass(frozen=True, slots=True)
class ApplyResult:
    run_id: int
    results: tuple[ChangeResult, ...]
    serial: int
    failures: tuple[ChangeResult, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.failures

    def count(self, outcome: Outcome) -> int:
        return sum(1 for result in self.results if result.outcome == outcome)


def check_fresh(plan: Plan, desired: DesiredState, session: StateSession) -> None:
    """Refuse a saved plan built on another state or another desired state (Terraform's stale plan)."""
    meta = session.meta()
    if plan.lineage != meta.lineage:
        raise StalePlanError(
            "the saved plan was made for another state database (lineage differs)",
            hint="run `certreconcile plan --out FILE` against this database",
        )
    if plan.serial != meta.serial:
        raise StalePlanError(
            f"the saved plan is stale: the state moved from serial {plan.serial} to {meta.serial} since it was made",
            hint="run `certreconcile plan --out FILE` again and apply the new plan",
        )
    if plan.desired_digest != desired.digest:
        raise StalePlanError(
            "the saved plan is stale: the desired state changed since it was made",
            hint="run `certreconcile plan --out FILE` again and apply the new plan",
        )


def apply_plan(
    plan: Plan,
    desired: DesiredState,
    env: ApplyEnvironment,
    *,
    concurrency: int = 4,
    saved: bool = False,
    plan_observations: Observations | None = None,
) -> ApplyResult:
    """Run every change of ``plan``. With ``saved``, first refuse a stale plan (nothing changes).

    A plan with error diagnostics (a Let's Encrypt budget exceeded) is refused before anything
    happens: no run is recorded, no CA is contacted.
    """
    refuse_plan_errors(plan)
    with env.store.session() as session:
        if saved:
            check_fresh(plan, desired, session)
        run_id = session.start_run(desired.git_commit, plan.change_digest, env.clock.now())
    results = _run_all(plan.changes, desired, env, run_id, max(1, concurrency))
    failures = tuple(result for result in results if result.outcome == "failed")
    with env.store.session() as session:
        serial = session.meta().serial
        if any(result.outcome != "skipped" for result in results):
            serial = session.bump_serial()
        outcome = "noop" if not results else ("success" if not failures else "partial")
        if failures and len(failures) == len(results):
            outcome = "failed"
        session.finish_run(run_id, outcome, env.clock.now())
    return ApplyResult(run_id=run_id, results=results, serial=serial, failures=failures)


def refuse_plan_errors(plan: Plan) -> None:
    """Raise :class:`ApplyError` naming the plan's first error diagnostic (and how many more there are)."""
    errors = plan.errors
    if not errors:
        return
    first = errors[0]
    more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''} in the plan)" if len(errors) > 1 else ""
    raise ApplyError(f"apply refused, nothing was changed: {first.summary}{more}", code=first.code, hint=first.hint)


def _run_all(
    changes: tuple[Change, ...], desired: DesiredState, env: ApplyEnvironment, run_id: int, concurrency: int
) -> tuple[ChangeResult, ...]:
    if not changes:
        return ()
    work: queue.Queue[tuple[int, Change]] = queue.Queue()
    for index, change in enumerate(changes):
        work.put((index, change))
    results: list[ChangeResult | None] = [None] * len(changes)

    def worker() -> None:
        with env.store.session() as session:
            runner = ChangeRunner(session, desired, env, run_id, target_pool)
            while True:
                try:
                    index, change = work.get_nowait()
                except queue.Empty:
                    return
                result = runner.run(change)
                results[index] = result
                if env.on_progress is not None:
                    env.on_progress(result)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="deploy") as target_pool:
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(concurrency, len(changes)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return tuple(result for result in results if result is not None)


@dataclass(frozen=True, slots=True)
class _PushOutcome:
    target: str
    pushed_at: datetime | None  # None: the push itself failed
    verified_at: datetime | None
    error: str | None  # one line, never a secret
    attempts: int
    served: Mapping[str, str] = field(default_factory=dict)  # what the target served instead, for the audit


class ChangeRunner:
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

    # --- one change ---------------------------------------------------------------
    def run(self, change: Change) -> ChangeResult:
        if change.waits(self.env.clock.now()):  # a backoff after failed attempts: not before its time
            assert change.deferred_until is not None
            until = change.deferred_until.isoformat()
            return ChangeResult(change, "skipped", f"waiting until {until} (backing off after a failed attempt)")
        try:
            with self.session.lock_name(change.name):
                current = self.session.current_certificate(change.name)
                now = self.env.clock.now()
                fresh = change_for_name(
                    self.desired, change.name, current, Observations(), now, force_rotate=change.forced
                )
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
        except Exception as exc:  # noqa: BLE001  the one broad except: record this change's failure, carry on
            message = exc.one_line() if isinstance(exc, CertReconcileError) else f"{type(exc).__name__}: {exc}"[:300]
            try:
                cert_id = change.replaces
                self._audit(change, cert_id, AuditAction.FAILED, error=message)
                self._journal(change, JournalStep(change.action.value), JournalState.FAILED, error=message)
                code = exc.code if isinstance(exc, CertReconcileError) else "internal-error"
                if change.action in (Action.ISSUE, Action.ROTATE) and code not in NOT_THE_NAMES_FAULT:
                    # The planner defers the name until the backoff ends or its declaration changes.
                    digest = declaration_digest(self.desired, change.name)
                    self.session.record_failure(change.name, self.env.clock.now(), digest)
            except Exception as record_exc:  # noqa: BLE001  the store itself is failing: report both
                message += f" (and recording the failure failed: {type(record_exc).__name__})"
            code = exc.code if isinstance(exc, CertReconcileError) else "internal-error"
            return ChangeResult(change, "failed", message, error_code=code)

    def _issue(self, change: Change, current: ActualCertificate | None) -> ChangeResult:
        spec = self.desired.certificates[change.name]
        issuer = self.env.issuers[spec.issuer]
        now = self.env.clock.now()
        rotation_id: int | None = None
        if change.action is Action.ROTATE and current is not None:
            if current.open_rotation is not None and current.open_rotation.new_cert_id is None:
                rotation_id = current.open_rotation.rotation_id
            else:
                rotation_id = self.session.open_rotation(current.id, now)
            status = current.status
            if status is CertStatus.ACTIVE and now >= renewal_time(spec, current):
                self._move(current.id, status, CertStatus.EXPIRING_SOON)
                status = CertStatus.EXPIRING_SOON
            self._move(current.id, status, CertStatus.ROTATING)

        cert_id, key_ref, key_pem = self._key_for(change, spec.key_type, current)
        key = load_private_key(key_pem)
        self._journal(change, JournalStep.ISSUE, JournalState.STARTED, issuer=spec.issuer)
        replaces_pem: str | None = None
        if current is not None and change.action is Action.ROTATE and current.issuer == spec.issuer:
            replaces_pem = self.session.certificate_pems(current.id)[0]
        issued = issuer.issue(
            IssueRequest(
                name=change.name,
                domains=spec.domains,
                key_type=spec.key_type,
                csr_pem=build_csr(key, spec.domains),
                now=now,
                challenge=spec.challenge.value if spec.challenge is not None else None,
                dns_provider=spec.dns_provider,
                replaces_cert_pem=replaces_pem,
                journal=_ChangeOrderJournal(self, change, cert_id),
            )
        )
        facts = read_cert_facts(issued.cert_pem)
        if set(facts.domains) != set(spec.domains):
            raise IssuerError(
                f"the CA issued a certificate for {', '.join(facts.domains)} instead of {', '.join(spec.domains)}",
                code="issuer-wrong-names",
            )
        if not public_key_matches(issued.cert_pem, key):
            raise IssuerError("the CA issued a certificate for another key", code="issuer-wrong-key")
        with self.session.transaction():
            self.session.insert_certificate(
                CertificateRow(
                    id=cert_id,
                    name=change.name,
                    domains=spec.domains,
                    issuer=spec.issuer,
                    key_type=spec.key_type,
                    serial_number=facts.serial_number,
                    not_before=facts.not_before,
                    not_after=facts.not_after,
                    status=CertStatus.ISSUED,
                    fingerprint=facts.fingerprint,
                    key_ref=key_ref,
                    cert_pem=issued.cert_pem,
                    chain_pem=issued.chain_pem,
                    on_delete=spec.on_delete,
                    issuer_fingerprint=self.desired.issuers[spec.issuer].fingerprint,
                    created_at=now,
                    ari_replaces=issued.ari_replaces,
                    origin=origin_of(self.origin, current),
                )
            )
            if rotation_id is not None:
                self.session.attach_rotation(rotation_id, cert_id)
            if current is not None:
                for removed in sorted(set(current.distributions) - set(spec.targets)):
                    self.session.remove_distribution(change.name, removed)
            action = AuditAction.RENEWED if change.action is Action.ROTATE else AuditAction.ISSUED
            self._audit(
                change,
                cert_id,
                action,
                serial=facts.serial_number,
                fingerprint=facts.fingerprint,
                not_after=facts.not_after.isoformat(),
            )
            self._journal(change, JournalStep.CERTIFICATE_STORED, JournalState.DONE, cert_id=cert_id)
            self.session.clear_failures(change.name)
        bundle = DeployBundle(
            name=change.name,
            domains=spec.domains,
            cert_pem=issued.cert_pem,
            chain_pem=issued.chain_pem,
            key_pem=key_pem,
            fingerprint=facts.fingerprint,
        )
        failed = self._deploy(change, cert_id, bundle, spec.targets)
        return self._finish(change, cert_id, failed, f"{change.action.verb} serial {facts.serial_number}")

    def _key_for(
        self, change: Change, key_type: KeyType, current: ActualCertificate | None
    ) -> tuple[str, KeyRef, SecretBytes]:
        """The key for this change: resumed from the journal after a crash, else a new one."""
        journalled = journalled_key(self.session.journal_entries(change.idempotency_key))
        if journalled is not None:
            resumed = self._resume_key(change, journalled, current)
            if resumed is not None:
                return resumed
        cert_id = str(uuid.uuid4())
        key_pem = private_key_pem(generate_private_key(key_type))
        key_ref = seal(self.env.kms, key_pem, certificate_context(cert_id))
        self._journal(
            change, JournalStep.KEY_GENERATED, JournalState.DONE, cert_id=cert_id, key_ref=key_ref.envelope_json
        )
        return cert_id, key_ref, key_pem

    def _resume_key(
        self, change: Change, journalled: JournalledKey, current: ActualCertificate | None
    ) -> tuple[str, KeyRef, SecretBytes] | None:
        """The journalled key, opened; None when it can never be opened (it is then discarded).

        A passing KMS failure fails the change and keeps the journal (see ``apply.journalled_key``).
        """
        cert_id, key_ref = journalled.cert_id, None
        try:
            key_ref = key_ref_from_json(journalled.envelope_json)
            return cert_id, key_ref, self._open_key(change, cert_id, key_ref, "resume-issuance", stored=False)
        except KmsError as exc:
            live = self.session.key_ref(current.id) if current is not None and unopenable(exc) else None
            if not discardable(exc, key_ref, live):
                if key_ref is not None and unopenable(exc):
                    raise odd_kms_error(change.name, key_ref, exc) from exc
                raise
            where = {"kms": key_ref.kms, "key_id": key_ref.key_id} if key_ref is not None else {}
            with self.session.transaction():
                discarded = JournalStep.KEY_DISCARDED
                self._journal(change, discarded, JournalState.DONE, cert_id=cert_id, error_code=exc.code)
                self._audit(change, None, AuditAction.KEY_DISCARDED, key_of=cert_id, error_code=exc.code,
                            cause=exc.one_line()[:500], **where)  # fmt: skip
            return None

    def _deploy(self, change: Change, cert_id: str, bundle: DeployBundle, targets: tuple[str, ...]) -> dict[str, str]:
        """Deploy and verify on each target, in parallel; returns the failed targets with their error.

        Only the push and the verification run in the pool (network and reloads); every row is
        written here, on this change's own session (a connection is used by one thread at a time).
        """
        for target_name in targets:
            self._journal(change, JournalStep.DEPLOY.for_target(target_name), JournalState.STARTED, cert_id=cert_id)
        if self.target_pool is not None and len(targets) > 1:
            outcomes = list(self.target_pool.map(lambda name: self._push(name, bundle), targets))
        else:
            outcomes = [self._push(name, bundle) for name in targets]
        failed: dict[str, str] = {}
        for outcome in outcomes:
            target_name = outcome.target
            target_fingerprint = self.desired.targets[target_name].fingerprint
            if outcome.pushed_at is not None:
                self._journal(change, JournalStep.DEPLOY.for_target(target_name), JournalState.DONE, cert_id=cert_id)
                self._audit(change, cert_id, AuditAction.DISTRIBUTED, target=target_name)
            if outcome.error is None:
                self.session.record_distribution(
                    cert_id,
                    target_name,
                    bundle.fingerprint,
                    pushed_at=outcome.pushed_at,
                    verified_at=outcome.verified_at,
                    last_error=None,
                    target_fingerprint=target_fingerprint,
                )
                self._audit(change, cert_id, AuditAction.VERIFIED, target=target_name, fingerprint=bundle.fingerprint)
                verified = JournalStep.VERIFY.for_target(target_name)
                self._journal(change, verified, JournalState.DONE, attempts=str(outcome.attempts))
                continue
            failed[target_name] = outcome.error
            self._journal(
                change, JournalStep.DEPLOY.for_target(target_name), JournalState.FAILED, error=outcome.error[:500]
            )
            self.session.record_distribution(
                cert_id,
                target_name,
                bundle.fingerprint,
                pushed_at=outcome.pushed_at,
                verified_at=None,
                last_error=outcome.error[:500],
                target_fingerprint=target_fingerprint,
            )
            self._audit(change, cert_id, AuditAction.FAILED, target=target_name, error=outcome.error[:500],
                        **outcome.served)  # fmt: skip
        return failed

    def _push(self, target_name: str, bundle: DeployBundle) -> _PushOutcome:
        """Push to one target and wait until it serves the bundle. No database access (runs in the pool)."""
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

    def _finish(self, change: Change, cert_id: str, failed: dict[str, str], what: str) -> ChangeResult:
        """Activate the certificate and close its rotation once every declared target is verified."""
        if failed:
            self._journal(change, JournalStep.DISTRIBUTION, JournalState.FAILED, targets=",".join(failed))
            return ChangeResult(
                change,
                "failed",
                f"{what}; not verified on " + "; ".join(f"{t}: {e}" for t, e in sorted(failed.items())),
                cert_id=cert_id,
                failed_targets=tuple(failed),
            )
        current = self.session.current_certificate(change.name)
        spec = self.desired.certificates.get(change.name)
        if current is None or current.id != cert_id or spec is None:
            return ChangeResult(change, "done", what, cert_id=cert_id)
        unverified = [
            t
            for t in spec.targets
            if (d := current.distributions.get(t)) is None
            or d.verified_at is None
            or d.fingerprint != current.fingerprint
        ]
        if unverified:
            return ChangeResult(
                change,
                "failed",
                f"{what}; not verified on {', '.join(unverified)}",
                cert_id=cert_id,
                failed_targets=tuple(unverified),
            )
        with self.session.transaction():
            if current.status is CertStatus.ISSUED:
                self.session.set_status(cert_id, CertStatus.ACTIVE)
            rotation = self.session.rotation_replacing(cert_id)
            if rotation is not None and rotation.new_cert_id == cert_id:
                self.session.complete_rotation(rotation.rotation_id, self.env.clock.now())
                old_status = self.session.certificate_status(rotation.old_cert_id)
                self._move(rotation.old_cert_id, old_status, CertStatus.SUPERSEDED)
            self._journal(change, JournalStep.COMPLETED, JournalState.DONE, cert_id=cert_id)
        return ChangeResult(change, "done", what, cert_id=cert_id)

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
        return self._finish(change, current.id, failed, f"redistributed to {', '.join(targets) or 'no target'}")

    def _revoke(self, change: Change, current: ActualCertificate, *, reason: str) -> ChangeResult:
        issuer = self.env.issuers.get(current.issuer)
        if issuer is None:
            raise IssuerError(
                f"cannot revoke {change.name}: its issuer {current.issuer!r} is no longer declared",
                code="issuer-undeclared",
                hint="keep the issuer declared until its certificates are revoked",
            )
        cert_pem, _ = self.session.certificate_pems(current.id)
        issuer.revoke(cert_pem, reason)
        with self.session.transaction():
            self.session.set_status(current.id, CertStatus.REVOKED)
            self._audit(change, current.id, AuditAction.REVOKED, reason=reason, serial=current.serial_number)
            if change.name not in self.desired.certificates:
                self._forget_targets(change.name, current)
                self.session.retire(current.id, self.env.clock.now())
                self._audit(change, current.id, AuditAction.RETIRED)
        return ChangeResult(change, "done", f"revoked serial {current.serial_number}", cert_id=current.id)

    def _forget_targets(self, name: str, current: ActualCertificate) -> None:
        """A name no longer managed keeps no distribution rows (the deployed files stay where they are)."""
        for target in sorted(current.distributions):
            self.session.remove_distribution(name, target)

    def _retire(self, change: Change, current: ActualCertificate) -> ChangeResult:
        with self.session.transaction():
            self._forget_targets(change.name, current)
            self.session.retire(current.id, self.env.clock.now())
            self._audit(change, current.id, AuditAction.RETIRED, on_delete=OnDelete.RETIRE.value)
        return ChangeResult(change, "done", "no longer managed (history kept)", cert_id=current.id)


class _ChangeOrderJournal:
    """The OrderJournal of one change: ``AcmeOrder`` rows keyed by the change's idempotency key.

    An order is resumed only with the key it was placed for (``cert_id``): a change that
    needs a new key (its earlier certificate was stored) places a new order.
    """

    def __init__(self, runner: ChangeRunner, change: Change, cert_id: str) -> None:
        self._runner = runner
        self._change = change
        self._cert_id = cert_id

    def saved_order_url(self) -> str | None:
        record = self._runner.session.acme_order(self._change.idempotency_key)
        if record is None or record.cert_id != self._cert_id:
            return None
        return record.order_url

    def record_order(self, order_url: str, state: str, directory_url: str) -> None:
        runner, change = self._runner, self._change
        previous = runner.session.acme_order(change.idempotency_key)
        runner.session.save_acme_order(
            AcmeOrderRecord(
                idempotency_key=change.idempotency_key,
                name=change.name,
                order_url=order_url,
                state=state,
                directory_url=directory_url,
                cert_id=self._cert_id,
            ),
            runner.env.clock.now(),
        )
        if previous is None or previous.order_url != order_url:
            runner.journal(
                change, JournalStep.ORDER_CREATED, JournalState.DONE, order_url=order_url, cert_id=self._cert_id
            )
        elif state == "valid" and previous.state != "valid":
            runner.journal(change, JournalStep.ORDER_FINALIZED, JournalState.DONE, order_url=order_url)


def origin_of(runner_origin: Origin, current: ActualCertificate | None) -> Origin:
    """Who owns the certificate a runner issues: a new name is the runner's (the facade's runner says API);
    a rotation through the facade keeps the owner; one by the declarations makes the name Git's (adopted)."""
    if current is None:
        return runner_origin
    return current.origin if runner_origin is Origin.API else Origin.GIT


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


def serving_targets(current: ActualCertificate, targets: Mapping[str, Target]) -> tuple[str, ...]:
    """The targets that serve ``current`` right now (asked live: handshake or read-back)."""
    serving = []
    for target_name in sorted(current.distributions):
        target = targets.get(target_name)
        if target is None:
            continue
        if target.observe(current.name, current.domains).fingerprint == current.fingerprint:
            serving.append(target_name)
    return tuple(serving)


def revoke_now(
    name: str, desired: DesiredState, env: ApplyEnvironment, reason: str, now: datetime, *, force: bool = False
) -> ChangeResult:
    """``certreconcile revoke NAME``: revoke the current certificate of a name at once.

    Refused while a target still serves it (clients would fail at once), unless ``force``.
    """
    from certreconcile.plan.plan import Reason, ReasonCode, Trigger

    with env.store.session() as session:
        current = session.current_certificate(name)
        if current is None:
            raise CertReconcileError(
                f"no managed certificate is named {name!r}",
                code="name-unknown",
                hint="see `certreconcile status` for the names",
            )
        if current.status is CertStatus.REVOKED:
            raise CertReconcileError(f"{name} is already revoked", code="already-revoked")
        if not force:
            serving = serving_targets(current, env.targets)
            if serving:
                raise CertReconcileError(
                    f"{name} is still served by {', '.join(serving)}: revoking it would break their clients",
                    code="revoke-still-served",
                    hint=f"deploy a replacement first (`certreconcile rotate {name}`), or pass --force "
                    "(e.g. after a key compromise)",
                )
        change = Change(
            action=Action.REVOKE,
            name=name,
            reasons=(Reason(ReasonCode.REVOKE_REQUESTED, f"revocation was requested ({reason})"),),
            trigger=Trigger.MANUAL,
            domains=current.domains,
            issuer=current.issuer,
            key_type=current.key_type.value,
            targets=(),
            replaces=current.id,
            replaces_fingerprint=current.fingerprint,
            idempotency_key=f"revoke-{current.id}",
        )
        run_id = session.start_run(desired.git_commit, f"revoke:{name}", now)
        runner = ChangeRunner(session, desired, env, run_id)
        outcome = "failed"
        try:
            with session.lock_name(name):
                fresh = session.current_certificate(name)
                if fresh is None or fresh.id != current.id or fresh.status is CertStatus.REVOKED:
                    outcome = "noop"
                    raise CertReconcileError(
                        f"{name} changed while revoking (another apply ran); nothing was revoked",
                        code="revoke-raced",
                        hint="check `certreconcile status` and try again",
                    )
                result = runner.revoke(change, fresh, reason=reason)
            session.bump_serial()
            outcome = "success"
            return result
        finally:
            session.finish_run(run_id, outcome, env.clock.now())
