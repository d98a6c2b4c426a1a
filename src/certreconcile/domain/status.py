"""The certificate lifecycle of the seed, enforced in one place.

    issued → active → expiring_soon → rotating → (new certificate) active
                │           │             ├─→ old one: superseded
                └───────────┴─────────────┴─→ expired (not_after passed, never replaced)

``active → expiring_soon`` happens when the renewal falls due (``run`` and ``apply`` write it,
audited, with the planner's own renewal time) and is never undone; a certificate still in
service past ``not_after`` (no replacement took over) becomes ``expired``. ``superseded`` is
history and stays so: a replaced certificate never becomes ``expired`` (the current-row index
leaves superseded rows out, so history stays out of every plan's read; ``not_after`` says
whether it is still valid). ``revoked`` is terminal and ``expired`` only goes on to ``revoked``.
Every status change in the code base goes through :func:`check_transition`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

__all__ = ["CURRENT_STATUSES", "CertStatus", "IllegalTransitionError", "check_moves", "check_transition"]


class CertStatus(enum.StrEnum):
    ISSUED = "issued"
    ACTIVE = "active"
    EXPIRING_SOON = "expiring_soon"
    ROTATING = "rotating"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"
    REVOKED = "revoked"


#: Statuses of a certificate that is (or is about to be) the one a name serves.
CURRENT_STATUSES = frozenset({CertStatus.ISSUED, CertStatus.ACTIVE, CertStatus.EXPIRING_SOON, CertStatus.ROTATING})

_ALLOWED: dict[CertStatus, frozenset[CertStatus]] = {
    CertStatus.ISSUED: frozenset({CertStatus.ACTIVE, CertStatus.SUPERSEDED, CertStatus.REVOKED, CertStatus.EXPIRED}),
    CertStatus.ACTIVE: frozenset(
        {CertStatus.EXPIRING_SOON, CertStatus.ROTATING, CertStatus.REVOKED, CertStatus.EXPIRED}
    ),
    CertStatus.EXPIRING_SOON: frozenset({CertStatus.ROTATING, CertStatus.REVOKED, CertStatus.EXPIRED}),
    # A rotation that was abandoned (the replacement failed for good) may fall back to active.
    CertStatus.ROTATING: frozenset({CertStatus.SUPERSEDED, CertStatus.ACTIVE, CertStatus.REVOKED, CertStatus.EXPIRED}),
    CertStatus.SUPERSEDED: frozenset({CertStatus.REVOKED}),  # history: never `expired` (see above)
    CertStatus.EXPIRED: frozenset({CertStatus.REVOKED}),
    CertStatus.REVOKED: frozenset(),
}


class IllegalTransitionError(ValueError):
    def __init__(self, old: CertStatus, new: CertStatus) -> None:
        super().__init__(f"a certificate cannot go from {old.value} to {new.value}")
        self.old = old
        self.new = new


def check_transition(old: CertStatus, new: CertStatus) -> None:
    """Raise :class:`IllegalTransitionError` unless ``old → new`` is allowed (or a no-op)."""
    if old == new:
        return
    if new not in _ALLOWED[old]:
        raise IllegalTransitionError(old, new)


def check_moves(moves: Sequence[tuple[str, CertStatus, CertStatus]]) -> None:
    """A batch of (certificate id, expected, new) moves, checked before any is written: every transition
    allowed (else :class:`IllegalTransitionError`), no id twice (else ValueError)."""
    for _, expected, new in moves:
        check_transition(expected, new)
    if len({cert_id for cert_id, _, _ in moves}) != len(moves):
        raise ValueError("a batch of status moves names a certificate twice")


def allowed_transitions(old: CertStatus) -> frozenset[CertStatus]:
    return _ALLOWED[old]
