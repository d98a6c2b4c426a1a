"""The steps and states of the apply journal (``ApplyStep``): one name for each, never a bare string.

The values are stored text (``ApplyStep.step``, ``ApplyStep.state``): they must never change, or a
rerun after a crash no longer finds what an older run journalled. A per-target step is stored as
``deploy:<target>`` or ``verify:<target>``: build it with :meth:`JournalStep.for_target`, read it
back with :func:`parse_step`.
"""

from __future__ import annotations

import enum

__all__ = ["PER_TARGET_STEPS", "JournalState", "JournalStep", "parse_step"]


class JournalStep(enum.StrEnum):
    # A change as a whole: journalled ``failed`` under its action's name (``issue`` also ``started``,
    # just before the CA is asked). The values equal ``plan.Action``'s (a test holds them together).
    ISSUE = "issue"
    ROTATE = "rotate"
    REVOKE = "revoke"
    REDISTRIBUTE = "redistribute"
    RETIRE = "retire"
    # Issuance, in order. ``key-generated`` holds the sealed key (detail.key_ref) a rerun resumes with.
    KEY_GENERATED = "key-generated"
    KEY_DISCARDED = "key-discarded"  # a journalled key that can never be opened was given up
    ORDER_CREATED = "order-created"
    ORDER_FINALIZED = "order-finalized"
    CERTIFICATE_STORED = "certificate-stored"
    # Distribution: per target (``deploy:<target>``, ``verify:<target>``), then the change's verdict.
    DEPLOY = "deploy"
    VERIFY = "verify"
    DISTRIBUTION = "distribution"  # ``failed``: detail.targets lists the targets not verified
    COMPLETED = "completed"

    def for_target(self, target: str) -> str:
        """The stored step of this per-target step for ``target``: ``deploy:web``."""
        if self not in PER_TARGET_STEPS:
            raise ValueError(f"journal step {self.value!r} is not per target")
        return f"{self.value}:{target}"


#: The steps journalled once per target, as ``<step>:<target>``.
PER_TARGET_STEPS = frozenset({JournalStep.DEPLOY, JournalStep.VERIFY})


class JournalState(enum.StrEnum):
    STARTED = "started"
    DONE = "done"
    FAILED = "failed"


def parse_step(text: str) -> tuple[JournalStep, str | None]:
    """A stored step back as (step, target): ``deploy:web`` → (DEPLOY, "web"); ``completed`` → (COMPLETED, None).

    Raises ``ValueError`` for a text no version of certreconcile journals.
    """
    head, colon, target = text.partition(":")
    step = JournalStep(head)
    if bool(colon) != (step in PER_TARGET_STEPS) or (colon and not target):
        raise ValueError(f"{text!r} is not a journal step")
    return step, target if colon else None
