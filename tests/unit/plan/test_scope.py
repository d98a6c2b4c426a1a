"""Which changes `run` applies on its own (upkeep) and which wait for --apply-changes."""

from __future__ import annotations

import pytest

from certreconcile.plan.plan import Action, Change, Reason, ReasonCode, trigger_of
from certreconcile.plan.scope import is_declaration_change


def change(action: Action, *codes: ReasonCode) -> Change:
    return Change(
        action=action,
        name="shop",
        reasons=tuple(Reason(code, code.value) for code in codes),
        trigger=trigger_of(Reason(code, code.value) for code in codes),
        domains=("shop.example.test",),
        issuer="ca",
        key_type="ecdsa-p256",
        targets=("web",),
    )


@pytest.mark.parametrize(
    ("action", "codes", "declaration"),
    [
        (Action.ROTATE, (ReasonCode.RENEWAL_WINDOW,), False),
        (Action.ROTATE, (ReasonCode.ARI_WINDOW,), False),
        (Action.ROTATE, (ReasonCode.EXPIRED,), False),
        (Action.ROTATE, (ReasonCode.PREVIOUS_REVOKED,), False),
        (Action.ROTATE, (ReasonCode.KEY_MISSING,), False),
        (Action.ROTATE, (ReasonCode.ROTATION_INCOMPLETE,), False),
        (Action.ROTATE, (ReasonCode.DOMAINS_CHANGED,), True),
        (Action.ROTATE, (ReasonCode.KEY_TYPE_CHANGED,), True),
        (Action.ROTATE, (ReasonCode.ISSUER_CHANGED,), True),
        (Action.ROTATE, (ReasonCode.DOMAINS_CHANGED, ReasonCode.RENEWAL_WINDOW), True),
        (Action.REDISTRIBUTE, (ReasonCode.TARGET_DRIFT,), False),
        (Action.REDISTRIBUTE, (ReasonCode.TARGET_FAILED,), False),
        (Action.REDISTRIBUTE, (ReasonCode.TARGET_UNVERIFIED,), False),
        (Action.REDISTRIBUTE, (ReasonCode.ROTATION_INCOMPLETE,), False),
        (Action.REDISTRIBUTE, (ReasonCode.TARGET_ADDED,), True),
        (Action.REDISTRIBUTE, (ReasonCode.TARGET_REMOVED,), True),
        (Action.REDISTRIBUTE, (ReasonCode.TARGET_CHANGED,), True),
        (Action.REDISTRIBUTE, (ReasonCode.TARGET_DRIFT, ReasonCode.TARGET_ADDED), True),
        (Action.ISSUE, (ReasonCode.NEW_CERTIFICATE,), True),
        (Action.REVOKE, (ReasonCode.REMOVED_REVOKE,), True),
        (Action.RETIRE, (ReasonCode.REMOVED_RETIRE,), True),
    ],
    ids=lambda value: value.value if isinstance(value, Action) else str(value),
)
def test_declaration_changes_are_told_from_upkeep(
    action: Action, codes: tuple[ReasonCode, ...], declaration: bool
) -> None:
    assert is_declaration_change(change(action, *codes)) is declaration
