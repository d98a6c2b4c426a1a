"""The plan: what apply will do, and why. Plain data; it never executes itself."""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from certreconcile.plan.destroy import DestroyCheck
from certreconcile.plan.fleet import AgentRenewal

__all__ = [
    "FORMAT_VERSION",
    "Action",
    "Change",
    "Plan",
    "PlanDiagnostic",
    "Reason",
    "ReasonCode",
    "Severity",
    "Trigger",
    "plan_from_json",
    "trigger_of",
]

FORMAT_VERSION = 1


class Action(enum.StrEnum):
    ISSUE = "issue"
    ROTATE = "rotate"
    REVOKE = "revoke"
    REDISTRIBUTE = "redistribute"
    RETIRE = "retire"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]

    @property
    def verb(self) -> str:
        """Past participle for ``# name will be <verb>``."""
        return _VERBS[self]


_SYMBOLS = {
    Action.ISSUE: "+",
    Action.ROTATE: "~",
    Action.REVOKE: "-",
    Action.REDISTRIBUTE: ">",
    Action.RETIRE: "x",
}
_VERBS = {
    Action.ISSUE: "issued",
    Action.ROTATE: "rotated",
    Action.REVOKE: "revoked",
    Action.REDISTRIBUTE: "redistributed",
    Action.RETIRE: "retired",
}

#: The order changes are listed and applied in.
ACTION_ORDER = (Action.REVOKE, Action.RETIRE, Action.ROTATE, Action.ISSUE, Action.REDISTRIBUTE)

#: Actions that end a certificate's life: a plan with more of them than the destroy threshold needs
#: ``apply --allow-destroy N`` (see :mod:`certreconcile.plan.destroy`).
DESTRUCTIVE_ACTIONS = frozenset({Action.REVOKE, Action.RETIRE})


class ReasonCode(enum.StrEnum):
    """Why a change is planned. For people and the audit log only: apply never branches on it."""

    NEW_CERTIFICATE = "new-certificate"
    PREVIOUS_REVOKED = "previous-revoked"
    PREVIOUS_EXPIRED = "previous-expired"
    RENEWAL_WINDOW = "renewal-window"
    ARI_WINDOW = "ari-window"
    EXPIRED = "expired"
    DOMAINS_CHANGED = "domains-changed"
    KEY_TYPE_CHANGED = "key-type-changed"
    ISSUER_CHANGED = "issuer-changed"
    KEY_MISSING = "key-missing"
    FORCED = "forced"
    ROTATION_INCOMPLETE = "rotation-incomplete"
    REMOVED_REVOKE = "removed-revoke"
    REMOVED_RETIRE = "removed-retire"
    REVOKE_REQUESTED = "revoke-requested"
    TARGET_ADDED = "target-added"
    TARGET_REMOVED = "target-removed"
    TARGET_CHANGED = "target-changed"
    TARGET_UNVERIFIED = "target-unverified"
    TARGET_FAILED = "target-failed"
    TARGET_DRIFT = "target-drift"


class Trigger(enum.StrEnum):
    """What set a change off: the data ``run``'s scope and the review check decide on (never a reason's text).

    A change with several reasons has the strongest of their triggers (in this order): a hand request, then
    an edit of the declarations, then a retry after a failure, then drift, and ``time`` only when every
    reason is time passing.
    """

    MANUAL = "manual"  # asked for by hand: `certreconcile rotate` / `revoke`
    DECLARATION = "declaration"  # the declarations changed: a new, removed or re-declared name or target
    FAILURE_RETRY = "failure-retry"  # an earlier attempt failed or stopped half-way
    DRIFT = "drift"  # the actual state moved on its own: revoked, key lost, a target serves something else
    TIME = "time"  # time passed: the renewal window or the CA's ARI window opened, or it expired

    @property
    def strength(self) -> int:
        return _TRIGGER_ORDER.index(self)


_TRIGGER_ORDER = (Trigger.TIME, Trigger.DRIFT, Trigger.FAILURE_RETRY, Trigger.DECLARATION, Trigger.MANUAL)


@dataclass(frozen=True, slots=True)
class Reason:
    code: ReasonCode
    message: str  # one human sentence fragment, e.g. "it expires in 12 days (renew_before 30d)"

    def to_json(self) -> dict[str, str]:
        return {"code": self.code.value, "message": self.message}

    @property
    def trigger(self) -> Trigger:
        """What kind of event the reason reports (fixed per reason code, see ``REASON_TRIGGERS``)."""
        return REASON_TRIGGERS[self.code]


#: The trigger each reason reports. The planner's checks choose the reason; the change carries the trigger.
REASON_TRIGGERS: dict[ReasonCode, Trigger] = {
    ReasonCode.NEW_CERTIFICATE: Trigger.DECLARATION,
    ReasonCode.PREVIOUS_REVOKED: Trigger.DRIFT,
    ReasonCode.PREVIOUS_EXPIRED: Trigger.TIME,
    ReasonCode.RENEWAL_WINDOW: Trigger.TIME,
    ReasonCode.ARI_WINDOW: Trigger.TIME,
    ReasonCode.EXPIRED: Trigger.TIME,
    ReasonCode.DOMAINS_CHANGED: Trigger.DECLARATION,
    ReasonCode.KEY_TYPE_CHANGED: Trigger.DECLARATION,
    ReasonCode.ISSUER_CHANGED: Trigger.DECLARATION,
    ReasonCode.KEY_MISSING: Trigger.DRIFT,
    ReasonCode.FORCED: Trigger.MANUAL,
    ReasonCode.ROTATION_INCOMPLETE: Trigger.FAILURE_RETRY,
    ReasonCode.REMOVED_REVOKE: Trigger.DECLARATION,
    ReasonCode.REMOVED_RETIRE: Trigger.DECLARATION,
    ReasonCode.REVOKE_REQUESTED: Trigger.MANUAL,
    ReasonCode.TARGET_ADDED: Trigger.DECLARATION,
    ReasonCode.TARGET_REMOVED: Trigger.DECLARATION,
    ReasonCode.TARGET_CHANGED: Trigger.DECLARATION,
    ReasonCode.TARGET_UNVERIFIED: Trigger.DRIFT,
    ReasonCode.TARGET_FAILED: Trigger.FAILURE_RETRY,
    ReasonCode.TARGET_DRIFT: Trigger.DRIFT,
}


def trigger_of(reasons: Iterable[Reason]) -> Trigger:
    """The strongest trigger of ``reasons``; ``drift`` for none (nothing declared or timed asked for it)."""
    return max((reason.trigger for reason in reasons), key=lambda trigger: trigger.strength, default=Trigger.DRIFT)


@dataclass(frozen=True, slots=True)
class Change:
    action: Action
    name: str
    reasons: tuple[Reason, ...]
    domains: tuple[str, ...]
    issuer: str | None
    key_type: str | None
    targets: tuple[str, ...]  # the targets this change deploys to (all of them for issue/rotate)
    removed_targets: tuple[str, ...] = ()
    replaces: str | None = None  # id of the certificate this change supersedes, revokes or retires
    replaces_fingerprint: str | None = None
    served: tuple[tuple[str, str], ...] = ()  # (target, what it serves) seen by --refresh, for display
    idempotency_key: str = ""
    forced: bool = False  # requested by hand (`certreconcile rotate`): apply re-checks with the same request
    # Pending, not due yet: a backoff after failed attempts. Apply skips the change before this time.
    deferred_until: datetime | None = None
    deferred_reason: str | None = None  # why it waits, for people (never parsed)
    # What set it off (scope and review decide on it). The planner sets it with ``trigger_of(reasons)``;
    # a change made without one counts as a declaration change: reviewed, never applied by ``run`` alone.
    trigger: Trigger = Trigger.DECLARATION

    def waits(self, now: datetime) -> bool:
        """Is this change deferred past ``now``? Apply decides on this field alone, never on a reason."""
        return self.deferred_until is not None and now < self.deferred_until

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "name": self.name,
            "reasons": [reason.to_json() for reason in self.reasons],
            "domains": list(self.domains),
            "issuer": self.issuer,
            "key_type": self.key_type,
            "targets": list(self.targets),
            "removed_targets": list(self.removed_targets),
            "replaces": self.replaces,
            "replaces_fingerprint": self.replaces_fingerprint,
            "served": [{"target": target, "serves": serves} for target, serves in self.served],
            "idempotency_key": self.idempotency_key,
            "forced": self.forced,
            "deferred_until": self.deferred_until.isoformat() if self.deferred_until is not None else None,
            "deferred_reason": self.deferred_reason,
            "trigger": self.trigger.value,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Change:
        reasons = tuple(Reason(ReasonCode(r["code"]), r["message"]) for r in data["reasons"])
        return Change(
            action=Action(data["action"]),
            name=data["name"],
            reasons=reasons,
            domains=tuple(data["domains"]),
            issuer=data["issuer"],
            key_type=data["key_type"],
            targets=tuple(data["targets"]),
            removed_targets=tuple(data.get("removed_targets", ())),
            replaces=data.get("replaces"),
            replaces_fingerprint=data.get("replaces_fingerprint"),
            served=tuple((s["target"], s["serves"]) for s in data.get("served", ())),
            idempotency_key=data["idempotency_key"],
            forced=bool(data.get("forced", False)),
            deferred_until=datetime.fromisoformat(data["deferred_until"]) if data.get("deferred_until") else None,
            deferred_reason=data.get("deferred_reason"),
            # A plan saved before triggers were recorded: the same trigger the planner gives these reasons.
            trigger=Trigger(data["trigger"]) if "trigger" in data else trigger_of(reasons),
        )


class Severity(enum.StrEnum):
    WARNING = "warning"  # shown; apply goes ahead
    ERROR = "error"  # shown; apply refuses the whole plan, nothing changes


@dataclass(frozen=True, slots=True)
class PlanDiagnostic:
    """Something the planner found about the plan as a whole (Terraform's diagnostics).

    ``code`` is stable kebab-case (``rate-limit-registered-domain``, ``issuance-backoff`` ...);
    ``summary`` says what, with the numbers; ``hint`` says what to do about it.
    """

    severity: Severity
    code: str
    summary: str
    hint: str = ""

    def to_json(self) -> dict[str, str]:
        return {"severity": self.severity.value, "code": self.code, "summary": self.summary, "hint": self.hint}

    @staticmethod
    def from_json(data: dict[str, Any]) -> PlanDiagnostic:
        return PlanDiagnostic(Severity(data["severity"]), data["code"], data["summary"], data.get("hint", ""))

    def one_line(self) -> str:
        return f"{self.summary} ({self.hint})" if self.hint else self.summary


@dataclass(frozen=True, slots=True)
class Plan:
    changes: tuple[Change, ...]
    created_at: datetime
    desired_digest: str
    lineage: str
    serial: int
    git_commit: str | None = None
    warnings: tuple[str, ...] = ()
    diagnostics: tuple[PlanDiagnostic, ...] = ()  # rate-limit budgets, backoffs: errors make apply refuse
    destroy: DestroyCheck | None = None  # the destroy threshold as planned; for display, apply judges again
    agent_renewals: tuple[AgentRenewal, ...] = ()  # agents whose own certificate is due (pending changes too)
    format_version: int = field(default=FORMAT_VERSION)

    @property
    def is_empty(self) -> bool:
        """No change at all. A deferred change counts: something declared is not served yet; so does an
        agent's certificate to renew."""
        return not self.changes and not self.agent_renewals

    @property
    def errors(self) -> tuple[PlanDiagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity is Severity.ERROR)

    def count(self, action: Action) -> int:
        return sum(1 for change in self.changes if change.action is action)

    @property
    def destructive(self) -> tuple[Change, ...]:
        """The changes that revoke or retire a certificate (``apply --allow-destroy N`` counts these)."""
        return tuple(change for change in self.changes if change.action in DESTRUCTIVE_ACTIONS)

    @property
    def deferred(self) -> tuple[Change, ...]:
        """The pending changes that wait for a backoff (still changes: the plan is not empty)."""
        return tuple(change for change in self.changes if change.deferred_until is not None)

    def canonical_change_set(self) -> bytes:
        """The canonical JSON of the change set: the list of changes, or, when agents' certificates are due
        too, ``{"changes": [...], "agent_renewals": [...]}`` (so plans without agents keep their digest)."""
        changes = [change.to_json() for change in self.changes]
        body: object = changes
        if self.agent_renewals:
            body = {"changes": changes, "agent_renewals": [renewal.to_json() for renewal in self.agent_renewals]}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @property
    def change_digest(self) -> str:
        """SHA-256 of the change set alone (names, actions, domains, targets, agents' renewals): what a
        reviewer approved."""
        return hashlib.sha256(self.canonical_change_set()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "created_at": self.created_at.isoformat(),
            "git_commit": self.git_commit,
            "desired_digest": self.desired_digest,
            "lineage": self.lineage,
            "serial": self.serial,
            "change_digest": self.change_digest,
            "summary": {action.value: self.count(action) for action in Action},
            "destroy": self.destroy.to_json(len(self.destructive)) if self.destroy is not None else None,
            "warnings": list(self.warnings),
            "diagnostics": [diagnostic.to_json() for diagnostic in self.diagnostics],
            "changes": [change.to_json() for change in self.changes],
            "agent_renewals": [renewal.to_json() for renewal in self.agent_renewals],
        }

    def dumps(self) -> str:
        """The canonical, byte-deterministic JSON form (saved plans, ``--format json``)."""
        return json.dumps(self.to_json(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def plan_from_json(data: dict[str, Any]) -> Plan:
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"plan format_version {data.get('format_version')!r} is not supported (expected {FORMAT_VERSION})"
        )
    return Plan(
        changes=tuple(Change.from_json(c) for c in data["changes"]),
        created_at=datetime.fromisoformat(data["created_at"]),
        desired_digest=data["desired_digest"],
        lineage=data["lineage"],
        serial=int(data["serial"]),
        git_commit=data.get("git_commit"),
        warnings=tuple(data.get("warnings", ())),
        diagnostics=tuple(PlanDiagnostic.from_json(d) for d in data.get("diagnostics", ())),
        destroy=DestroyCheck.from_json(data.get("destroy")),
        agent_renewals=tuple(AgentRenewal.from_json(r) for r in data.get("agent_renewals", ())),
    )
