"""Journal steps are an enum whose values are stored text: they must never change."""

from __future__ import annotations

import pytest

from certreconcile.actual.journal_step import JournalState, JournalStep, parse_step
from certreconcile.actual.postgres import key_refs
from certreconcile.plan.plan import Action

# What the database holds (ApplyStep.step and .state), written out: a renamed member must not change them.
STORED = {
    "ISSUE": "issue",
    "ROTATE": "rotate",
    "REVOKE": "revoke",
    "REDISTRIBUTE": "redistribute",
    "RETIRE": "retire",
    "KEY_GENERATED": "key-generated",
    "KEY_DISCARDED": "key-discarded",
    "ORDER_CREATED": "order-created",
    "ORDER_FINALIZED": "order-finalized",
    "CERTIFICATE_STORED": "certificate-stored",
    "DEPLOY": "deploy",
    "VERIFY": "verify",
    "DISTRIBUTION": "distribution",
    "COMPLETED": "completed",
}


def test_stored_values_are_byte_identical() -> None:
    assert {step.name: step.value for step in JournalStep} == STORED
    assert [state.value for state in JournalState] == ["started", "done", "failed"]


def test_every_action_is_a_step() -> None:
    """A failed change is journalled under its action's name."""
    assert {action.value for action in Action} <= {step.value for step in JournalStep}


@pytest.mark.parametrize("step", [JournalStep.DEPLOY, JournalStep.VERIFY])
def test_per_target_steps_round_trip(step: JournalStep) -> None:
    stored = step.for_target("web:eu")
    assert stored == f"{step.value}:web:eu"
    assert parse_step(stored) == (step, "web:eu")


def test_whole_change_steps_parse_without_target() -> None:
    assert parse_step("completed") == (JournalStep.COMPLETED, None)
    assert parse_step("key-generated") == (JournalStep.KEY_GENERATED, None)


@pytest.mark.parametrize("text", ["deploy", "verify:", "completed:web", "deployed:web", "nonsense"])
def test_texts_no_run_journals_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_step(text)


def test_only_per_target_steps_take_a_target() -> None:
    with pytest.raises(ValueError):
        JournalStep.COMPLETED.for_target("web")


def test_sql_reading_journalled_keys_names_the_same_step() -> None:
    sql = key_refs._SQL_KEY_REFS[key_refs.KeyRefTable.APPLY_STEP][0]
    assert f"step = '{JournalStep.KEY_GENERATED.value}'" in sql
