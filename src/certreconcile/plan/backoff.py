"""Per-certificate issuance backoff, as the planner sees it. Pure.

After a failed issuance apply records ``IssuanceBackoff`` (1 h doubling to 32 h, see
:func:`certreconcile.actual.model.backoff_delay`) together with the digest of the
certificate's declaration. While the backoff runs and the declaration is unchanged, the
planner still lists the issue/rotate, as a pending change deferred until the backoff ends
(:func:`defer`: apply skips it before then), and warns; the plan is never "No changes"
while a declared certificate waits. A changed declaration resets the backoff at once, and a
forced rotation (``certreconcile rotate NAME``) ignores it. A backoff never holds back the
redistribution of a valid certificate that already exists (see ``build_plan``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime

from certreconcile.actual.model import IssuanceBackoff
from certreconcile.desired.model import DesiredState
from certreconcile.plan.plan import Action, Change, PlanDiagnostic, Severity

__all__ = ["CODE_BACKOFF", "backoff_diagnostic", "declaration_digest", "defer", "is_backed_off"]

CODE_BACKOFF = "issuance-backoff"


def declaration_digest(desired: DesiredState, name: str) -> str | None:
    """SHA-256 of what an issuance of ``name`` depends on; None when ``name`` is not declared.

    Covers the certificate's domains, issuer, key type, challenge and DNS provider, and the
    declarations of that issuer and DNS provider (fixing a broken issuer resets the backoff).
    Targets, renew_before and on_delete are left out: they do not change how issuance goes.
    """
    spec = desired.certificates.get(name)
    if spec is None:
        return None
    issuer = desired.issuers.get(spec.issuer)
    provider = desired.dns_providers.get(spec.dns_provider) if spec.dns_provider is not None else None
    payload = [
        list(spec.domains),
        spec.issuer,
        spec.key_type.value,
        spec.challenge.value if spec.challenge is not None else None,
        spec.dns_provider,
        issuer.fingerprint if issuer is not None else None,
        provider.fingerprint if provider is not None else None,
    ]
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()


def is_backed_off(change: Change, backoff: IssuanceBackoff | None, digest: str | None, now: datetime) -> bool:
    """Should ``change`` wait? Only issue/rotate, never a forced one, only under the same declaration.

    A backoff recorded without a digest (before digests were kept) counts as the same declaration.
    """
    if backoff is None or change.forced or change.action not in (Action.ISSUE, Action.ROTATE):
        return False
    if now >= backoff.until:
        return False
    return backoff.declaration_digest is None or backoff.declaration_digest == digest


def _failures(backoff: IssuanceBackoff) -> str:
    return f"{backoff.failures} failed issuance{'s' if backoff.failures != 1 else ''}"


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def defer(change: Change, backoff: IssuanceBackoff) -> Change:
    """``change`` as a pending change that waits until the backoff ends (its next attempt)."""
    reason = (
        f"last attempt failed at {_utc(backoff.last_failure_at)} ({_failures(backoff)} in a row);"
        f" see `certreconcile audit --name {change.name} --action failed`"
    )
    return replace(change, deferred_until=backoff.until, deferred_reason=reason)


def backoff_diagnostic(name: str, backoff: IssuanceBackoff) -> PlanDiagnostic:
    failures, until = _failures(backoff), _utc(backoff.until)
    return PlanDiagnostic(
        Severity.WARNING,
        CODE_BACKOFF,
        f"{name}: backing off after {failures} until {until}; change the declaration or wait",
        f"`certreconcile rotate {name}` tries again at once",
    )
