"""Pure checks, cert-manager style: each takes the inputs and returns the reasons it finds.

Nothing here reads the clock, the environment or any store: ``now`` is an argument,
and renewal jitter is derived from the name and serial number, never from ``random``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from functools import lru_cache

from certreconcile.actual.model import ActualCertificate, AgentRecord, ServedCertificate
from certreconcile.desired.model import CertificateSpec, DesiredState, TargetSpec
from certreconcile.domain.durations import RenewBefore, format_duration
from certreconcile.domain.status import CertStatus
from certreconcile.plan.agents import agent_of, describe_unreachable
from certreconcile.plan.plan import Reason, ReasonCode

__all__ = [
    "ROTATION_CHECKS",
    "earliest_renewal",
    "is_servable",
    "needs_nothing",
    "renewal_time",
    "rotation_reasons",
    "target_reasons",
]

#: Largest share of the renewal window that jitter may move renewal earlier by.
JITTER_SHARE = 0.1
_ZERO = timedelta(0)


@lru_cache(maxsize=1 << 17)  # a fleet's names and serials: asked by the planner and the lifecycle every cycle
def _jitter_fraction(name: str, serial_number: str) -> float:
    digest = hashlib.sha256(f"{name}\x00{serial_number}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def renew_before_for(renew_before: RenewBefore, lifetime: timedelta) -> timedelta:
    """The renewal lead time for a lifetime; never the whole lifetime (that would renew forever)."""
    lead = renew_before.for_lifetime(lifetime)
    if lead >= lifetime:
        lead = RenewBefore().for_lifetime(lifetime)
    return lead


def renewal_time(spec: CertificateSpec, current: ActualCertificate) -> datetime:
    """When ``current`` falls due: ``not_after - renew_before``, moved earlier by a stable jitter.

    The jitter spreads renewals of certificates issued together; it is at most a tenth of
    the shorter of the renewal window and the time before it, so it can never move the
    renewal before ``not_before``.

    When the CA suggested a window (ARI, RFC 9773), it wins: renewal falls at a point inside
    it derived from the name and serial (never from ``random``: a random point chosen anew
    at every plan could skip the window altogether).
    """
    window = current.renewal_window
    if window is not None:
        return window.start + (window.end - window.start) * _jitter_fraction(current.name, current.serial_number)
    lifetime = current.not_after - current.not_before
    lead = renew_before_for(spec.renew_before, lifetime)
    room = min(lead, lifetime - lead)
    jitter = room * (JITTER_SHARE * _jitter_fraction(current.name, current.serial_number))
    return current.not_after - lead - jitter


def earliest_renewal(spec: CertificateSpec, current: ActualCertificate) -> datetime:
    """A time :func:`renewal_time` is never before: the jitter left out at its largest.

    The jitter is ``room * (JITTER_SHARE * f)`` with ``0 <= f <= 1`` (an ARI window's point: ``start + span * f``),
    and multiplying a timedelta by a float is monotonic, so it is at most ``room * JITTER_SHARE`` (none when
    ``room`` is negative, for a stored lifetime that is: the window's end when it ends before it starts).
    """
    window = current.renewal_window
    if window is not None:
        return min(window.start, window.end)
    lifetime = current.not_after - current.not_before
    lead = renew_before_for(spec.renew_before, lifetime)
    return current.not_after - lead - max(min(lead, lifetime - lead), _ZERO) * JITTER_SHARE


def _days(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if abs(seconds) >= 86400:
        return f"{seconds / 86400:.0f} days"
    if abs(seconds) >= 3600:
        return f"{seconds / 3600:.0f} hours"
    return f"{max(seconds, 0) / 60:.0f} minutes"


def check_status(spec: CertificateSpec, current: ActualCertificate, now: datetime) -> list[Reason]:
    if current.status is CertStatus.REVOKED:
        return [Reason(ReasonCode.PREVIOUS_REVOKED, "its certificate was revoked")]
    if current.status is CertStatus.EXPIRED or current.not_after <= now:
        return [Reason(ReasonCode.EXPIRED, f"its certificate expired {_days(now - current.not_after)} ago")]
    if current.status is CertStatus.ROTATING:
        # The current row is still the old one: the replacement was never stored.
        return [Reason(ReasonCode.ROTATION_INCOMPLETE, "its last rotation stopped before a new certificate was stored")]
    return []


def check_key(spec: CertificateSpec, current: ActualCertificate, now: datetime) -> list[Reason]:
    if not current.has_key:
        return [Reason(ReasonCode.KEY_MISSING, "its private key is missing from the store")]
    return []


def check_declaration(spec: CertificateSpec, current: ActualCertificate, now: datetime) -> list[Reason]:
    reasons = []
    if tuple(spec.domains) != tuple(current.domains):
        added = [d for d in spec.domains if d not in current.domains]
        removed = [d for d in current.domains if d not in spec.domains]
        parts = []
        if added:
            parts.append("added " + ", ".join(added))
        if removed:
            parts.append("removed " + ", ".join(removed))
        if not parts:
            parts.append("the primary name changed")
        reasons.append(Reason(ReasonCode.DOMAINS_CHANGED, "its domains changed (" + "; ".join(parts) + ")"))
    if spec.key_type is not current.key_type:
        reasons.append(
            Reason(
                ReasonCode.KEY_TYPE_CHANGED,
                f"its key type changed from {current.key_type.value} to {spec.key_type.value}",
            )
        )
    if spec.issuer != current.issuer:
        reasons.append(Reason(ReasonCode.ISSUER_CHANGED, f"its issuer changed from {current.issuer} to {spec.issuer}"))
    return reasons


def check_renewal_window(spec: CertificateSpec, current: ActualCertificate, now: datetime) -> list[Reason]:
    if current.not_after <= now or current.status in (CertStatus.REVOKED, CertStatus.EXPIRED):
        return []  # check_status reports it
    if now < earliest_renewal(spec, current):
        return []  # not due, whatever the jitter: no digest to compute (most certificates, most days)
    due = renewal_time(spec, current)
    if now < due:
        return []
    window = current.renewal_window
    if window is not None:
        return [
            Reason(
                ReasonCode.ARI_WINDOW,
                f"the CA's suggested renewal window (ARI) opened {_days(now - window.start)} ago"
                + (f" and closes in {_days(window.end - now)}" if window.end > now else " and has closed"),
            )
        ]
    lifetime = current.not_after - current.not_before
    lead = renew_before_for(spec.renew_before, lifetime)
    return [
        Reason(
            ReasonCode.RENEWAL_WINDOW,
            f"it expires in {_days(current.not_after - now)} (renew_before {format_duration(lead)})",
        )
    ]


def is_servable(current: ActualCertificate, now: datetime) -> bool:
    """May ``current`` be pushed to targets as it is: not revoked, not expired, its key stored.

    A certificate due for renewal (or whose rotation is backing off) still is: while its
    replacement waits, the targets that lack it get it.
    """
    return (
        current.status not in (CertStatus.REVOKED, CertStatus.EXPIRED) and now < current.not_after and current.has_key
    )


RotationCheck = Callable[[CertificateSpec, ActualCertificate, datetime], list[Reason]]

#: Every check that can make a certificate need a new one, in reporting order.
ROTATION_CHECKS: tuple[RotationCheck, ...] = (check_status, check_key, check_declaration, check_renewal_window)


def rotation_reasons(spec: CertificateSpec, current: ActualCertificate, now: datetime) -> list[Reason]:
    reasons: list[Reason] = []
    for check in ROTATION_CHECKS:
        reasons.extend(check(spec, current, now))
    return reasons


def target_reasons(
    desired: DesiredState,
    spec: CertificateSpec,
    current: ActualCertificate,
    served: Mapping[str, ServedCertificate],
    agents: Mapping[str, AgentRecord] | None = None,
) -> tuple[dict[str, Reason], list[str]]:
    """Which targets need the current certificate pushed (with why), and which were removed.

    A target whose host (an agent) did not answer is never drift: nothing is known of what it serves.
    What it is owed all the same (never received, older, failed, unverified) stays, saying since when
    its agent is unreachable (``agents``: the enrolled agents, for their last contact).
    """
    needs: dict[str, Reason] = {}
    for target in spec.targets:
        observed = served.get(target)
        reason = _target_reason(desired, target, current, observed)
        if reason is None:
            continue
        if observed is not None and observed.unreachable:
            agent = agent_of(desired, target)
            record = (agents or {}).get(agent) if agent is not None else None
            reason = Reason(reason.code, f"{reason.message}; {describe_unreachable(agent, record)}")
        needs[target] = reason
    removed = sorted(current.distributions.keys() - spec.targets)
    return needs, removed


def _target_reason(  # noqa: PLR0911  one return per reason, in the order they are checked
    desired: DesiredState, target: str, current: ActualCertificate, observed: ServedCertificate | None
) -> Reason | None:
    distribution = current.distributions.get(target)
    if distribution is None:
        return Reason(ReasonCode.TARGET_ADDED, f"{target} has not received it yet")
    if distribution.fingerprint != current.fingerprint:
        return Reason(ReasonCode.TARGET_UNVERIFIED, f"{target} holds an older certificate")
    target_spec = desired.targets.get(target) if distribution.target_fingerprint is not None else None
    if target_spec is not None and distribution.target_fingerprint not in (None, target_spec.fingerprint):
        return Reason(ReasonCode.TARGET_CHANGED, f"the declaration of {target} changed")
    if distribution.verified_at is None:
        if distribution.last_error:
            return Reason(ReasonCode.TARGET_FAILED, f"{target} failed last time")
        return Reason(ReasonCode.TARGET_UNVERIFIED, f"{target} was never verified")
    if observed is not None and not observed.unreachable and observed.fingerprint != current.fingerprint:
        what = f"{observed.fingerprint[:16]}" if observed.fingerprint else "nothing"
        return Reason(ReasonCode.TARGET_DRIFT, f"{target} serves {what} instead")
    return None


def needs_nothing(
    declared_targets: Mapping[str, TargetSpec],
    spec: CertificateSpec,
    current: ActualCertificate,
    served: Mapping[str, ServedCertificate],
    now: datetime,
) -> bool:
    """True only when the checks above find nothing for a name: no rotation reason, no target to push to or
    remove, and nothing to finish. The planner's shortcut for the usual name of a large plan (everything in
    order, one pass instead of a dozen calls); False says nothing, and the checks run.

    Each condition is the negation of one check: ``check_status``, ``check_key``, ``check_declaration``,
    ``check_renewal_window`` (through :func:`earliest_renewal`), ``_target_reason`` for each declared target,
    the removed targets of :func:`target_reasons`, and the rotation to finish (``ISSUED``). An observation
    passes only when it is the stored certificate, served without an error by a reachable declared target
    (``run`` probes every target each cycle; anything else takes the checks, drift among them).
    """
    if (
        current.status is not CertStatus.ACTIVE
        or not current.has_key
        or current.not_after <= now
        or tuple(spec.domains) != tuple(current.domains)
        or spec.key_type is not current.key_type
        or spec.issuer != current.issuer
        or now >= earliest_renewal(spec, current)
    ):
        return False
    distributions = current.distributions
    targets = spec.targets
    if len(distributions) != len(targets) or (len(targets) > 1 and len(set(targets)) != len(targets)):
        return False  # a target removed (or one listed twice: let the checks count)
    fingerprint = current.fingerprint
    for target, seen in served.items():  # what a probe saw: the stored certificate, cleanly, on a declared target
        if seen.fingerprint != fingerprint or seen.unreachable or seen.error is not None or target not in targets:
            return False
    for target in targets:
        distribution = distributions.get(target)
        if distribution is None or distribution.fingerprint != fingerprint or distribution.verified_at is None:
            return False
        declared = distribution.target_fingerprint
        target_spec = declared_targets.get(target) if declared is not None else None
        if target_spec is not None and declared != target_spec.fingerprint:
            return False
    return True
