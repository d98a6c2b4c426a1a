"""Per-certificate issuance backoff, as the planner sees it. Pure.

After a failed issuance apply records ``IssuanceBackoff`` (1 h doubling to 32 h, see
:func:`certreconcile.actual.model.backoff_delay`) together with the digest of the
certificate's declaration. While the backoff runs and the declaration is unchanged, the
planner still lists the issue/rotate, as a pending change deferred until the backoff ends
(:func:`defer`: apply skips it before then), and warns; the plan is never "No changes"
while a declared certificate waits. A changed declaration resets the backoff at once, and a
forced rotation (``certreconcile rotate NAME``) ignores it. A backoff never holds back the
redistribution of a valid certificate that already exists (see ``build_plan``).

A renewal's backoff is also capped by the certificate's remaining lifetime (:func:`capped`): it
never waits more than a quarter of what the certificate had left at the last failure (at least
the first step, 1 h), so retries quicken as expiry nears. Without the cap, a 6-day certificate
whose renewals fail for two days by its own fault (say its DNS provider refuses updates) waits
32 h after its sixth failure and expires many hours after the fault is gone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from certreconcile.actual.model import BACKOFF_INITIAL, IssuanceBackoff
from certreconcile.desired.model import DesiredState
from certreconcile.plan.plan import Action, Change, PlanDiagnostic, Severity

__all__ = ["CODE_BACKOFF", "LIFETIME_SHARE", "backoff_diagnostic", "capped", "declaration_digest", "defer",
           "is_backed_off"]  # fmt: skip

CODE_BACKOFF = "issuance-backoff"
#: A renewal waits at most this share of the lifetime its certificate had left at the last failure.
LIFETIME_SHARE = 0.25


def capped(backoff: IssuanceBackoff, not_after: datetime) -> IssuanceBackoff:
    """``backoff`` ending no later than :data:`LIFETIME_SHARE` of the lifetime left at its last failure
    (``not_after``: the current certificate's), and never sooner than the first step (1 h) after it.
    A certificate already expired at the failure keeps the doubling backoff (a broken CA is not hammered)."""
    left = not_after - backoff.last_failure_at
    if left <= timedelta(0):
        return backoff  # already expired at the failure: nothing left to save, the doubling stands
    until = min(backoff.until, backoff.last_failure_at + max(BACKOFF_INITIAL, left * LIFETIME_SHARE))
    return backoff if until == backoff.until else replace(backoff, until=until)


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
