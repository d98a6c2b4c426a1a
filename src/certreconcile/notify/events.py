"""The notification events (pure): from an apply's results and from the stored state.

Every event has a ``key`` that two replicas seeing the same thing compute alike, so the outbox's unique
``(event_key, sink)`` sends it once: a certificate's id for issued, renewed, verification_failed and
expiring; the failure's time (the backoff row) or the change's idempotency key for failed; the time the
agent was last seen for agent_unreachable (a new outage is a new event).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from certreconcile.actual.model import ActualState
from certreconcile.apply.results import NOT_THE_NAMES_FAULT, ChangeResult
from certreconcile.desired.model import DesiredState
from certreconcile.plan.plan import Action

__all__ = ["EVENT_TYPES", "NotifyEvent", "agent_events", "apply_events", "expiring_events"]

#: The ``type`` of each event in a webhook's body (Standard Webhooks: dotted, noun first).
EVENT_TYPES: Mapping[str, str] = {
    "issued": "certificate.issued",
    "renewed": "certificate.renewed",
    "failed": "certificate.failed",
    "verification_failed": "certificate.verification_failed",
    "expiring": "certificate.expiring",
    "agent_unreachable": "agent.unreachable",
}


@dataclass(frozen=True, slots=True)
class NotifyEvent:
    event: str  # one of NOTIFY_EVENTS
    name: str  # the certificate's or the agent's
    key: str
    data: Mapping[str, str] = field(default_factory=dict)  # public: names, dates, codes, one-line messages
    cert_id: str | None = None

    def summary(self) -> str:
        """One line for a subject or a chat message."""
        what = {
            "issued": "issued", "renewed": "renewed", "failed": "failed",
            "verification_failed": "not verified on its targets", "expiring": "expiring without a renewal",
            "agent_unreachable": "unreachable",
        }[self.event]  # fmt: skip
        subject = "agent" if self.event == "agent_unreachable" else "certificate"
        return f"certreconcile: {subject} {self.name} {what}"


def apply_events(results: Iterable[ChangeResult], actual: ActualState) -> Iterator[NotifyEvent]:
    """The events of an apply's change results; ``actual`` (read after the apply) gives the backoffs."""
    for result in results:
        change = result.change
        if result.outcome == "failed" and result.failed_targets and result.cert_id is not None:
            yield _verification_failed(result)
        elif result.outcome == "failed":  # any action: an issuance, a redistribution, a revocation...
            yield _failed(result, actual)
        elif result.outcome == "done" and result.cert_id is not None and change.action in (Action.ISSUE, Action.ROTATE):
            event = "renewed" if change.action is Action.ROTATE and change.replaces else "issued"
            yield NotifyEvent(event, change.name, f"{event}:{result.cert_id}", _certificate_data(result, actual),
                              result.cert_id)  # fmt: skip


def _certificate_data(result: ChangeResult, actual: ActualState) -> dict[str, str]:
    data = {"domains": ",".join(result.change.domains), "message": result.message}
    current = actual.certificates.get(result.change.name)
    if current is not None and current.id == result.cert_id:
        data.update(not_after=current.not_after.isoformat(), serial_number=current.serial_number)
    return data


def _verification_failed(result: ChangeResult) -> NotifyEvent:
    targets = ",".join(sorted(result.failed_targets))
    return NotifyEvent(
        "verification_failed", result.change.name, f"verification_failed:{result.cert_id}:{targets}",
        {"targets": targets, "message": result.message}, result.cert_id,
    )  # fmt: skip


def _failed(result: ChangeResult, actual: ActualState) -> NotifyEvent:
    name = result.change.name
    data = {"error_code": result.error_code or "unknown", "message": result.message}
    data["action"] = result.change.action.value
    backs_off = result.change.action in (Action.ISSUE, Action.ROTATE) and result.error_code not in NOT_THE_NAMES_FAULT
    backoff = actual.backoffs.get(name) if backs_off else None
    if backoff is not None:
        data.update(next_attempt_at=backoff.until.isoformat(), failures=str(backoff.failures))
        key = f"failed:{name}:{backoff.last_failure_at.isoformat()}"
    else:  # not an issuance the name backs off from (the CA unreachable, a redistribution): the next cycle retries
        key = f"failed:{name}:{result.change.idempotency_key}"
    return NotifyEvent("failed", name, key, data)


def expiring_events(desired: DesiredState, actual: ActualState, now: datetime) -> Iterator[NotifyEvent]:
    """Declared certificates whose current certificate expires within ``notify.expiring_within``
    (a successful renewal would have replaced it): one event per certificate row."""
    if desired.notify is None:
        return
    horizon = now + desired.notify.expiring_within
    for name in desired.certificates:
        current = actual.certificates.get(name)
        if current is None or current.not_after > horizon:
            continue
        left = current.not_after - now
        data = {"not_after": current.not_after.isoformat(), "seconds_left": str(max(0, int(left.total_seconds()))),
                "status": current.status.value}  # fmt: skip
        yield NotifyEvent("expiring", name, f"expiring:{current.id}", data, current.id)


def agent_events(actual: ActualState) -> Iterator[NotifyEvent]:
    """Enrolled agents whose last contact failed: one event per outage (keyed by when it was last seen)."""
    for name, agent in actual.agents.items():
        if agent.last_error is None:
            continue
        seen = agent.last_seen_at or agent.enrolled_at
        last_seen = agent.last_seen_at.isoformat() if agent.last_seen_at is not None else ""
        data = {"error": agent.last_error, "last_seen_at": last_seen}
        yield NotifyEvent("agent_unreachable", name, f"agent_unreachable:{name}:{seen.isoformat()}", data)
