"""``certreconcile revoke NAME``: revoke a name's current certificate now, outside a plan."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from certreconcile.actual.model import ActualCertificate
from certreconcile.apply.results import ApplyEnvironment, ChangeResult
from certreconcile.apply.runner import ChangeRunner
from certreconcile.desired.model import DesiredState
from certreconcile.domain.status import CertStatus
from certreconcile.errors import CertReconcileError
from certreconcile.plan.plan import Action, Change
from certreconcile.plugins.ports import Target

__all__ = ["revoke_now", "serving_targets"]


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
