"""``schemas/plan.schema.json`` describes ``Plan.to_json()`` exactly, and cannot drift from the enums."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from certreconcile.plan.plan import Action, Plan, PlanDiagnostic, ReasonCode, Severity
from certreconcile.render import render_json

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "schemas" / "plan.schema.json"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def test_schema_is_draft_2020_12(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["format_version"] == {"const": 1}


def test_rendered_plans_match_the_schema(
    sample_plan: tuple[str, Plan], validator: jsonschema.protocols.Validator
) -> None:
    _, plan = sample_plan
    errors = [error.message for error in validator.iter_errors(json.loads(render_json(plan)))]
    assert errors == []


def test_action_enum_matches_python(schema: dict[str, Any]) -> None:
    assert schema["$defs"]["action"]["enum"] == [action.value for action in Action]
    summary = schema["properties"]["summary"]
    assert summary["required"] == [action.value for action in Action]
    assert sorted(summary["properties"]) == sorted(action.value for action in Action)


def test_reason_code_enum_matches_python(schema: dict[str, Any]) -> None:
    assert schema["$defs"]["reason_code"]["enum"] == [code.value for code in ReasonCode]


def test_schema_fields_match_to_json(schema: dict[str, Any], rotate_plan: Plan) -> None:
    document = rotate_plan.to_json()
    assert sorted(schema["required"]) == sorted(document)
    assert sorted(schema["properties"]) == sorted(document)
    change_schema = schema["$defs"]["change"]
    change = document["changes"][0]
    assert sorted(change_schema["required"]) == sorted(change)
    assert sorted(change_schema["properties"]) == sorted(change)
    assert sorted(schema["$defs"]["reason"]["properties"]) == sorted(change["reasons"][0])
    diagnostic_schema = schema["$defs"]["diagnostic"]
    diagnostic = document["diagnostics"][0]
    assert sorted(diagnostic_schema["required"]) == sorted(diagnostic)
    assert sorted(diagnostic_schema["properties"]) == sorted(diagnostic)
    assert diagnostic_schema["properties"]["severity"]["enum"] == [severity.value for severity in Severity]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("format_version",), 2),
        (("changes", 0, "action"), "delete"),
        (("changes", 0, "reasons", 0, "code"), "because"),
        (("summary", "issue"), -1),
        (("change_digest",), "not-a-digest"),
        (("created_at",), "yesterday"),
        (("changes", 0, "unexpected"), True),
        (("diagnostics", 0, "severity"), "fatal"),
        (("diagnostics", 0, "code"), "Not A Code"),
    ],
    ids=lambda value: ".".join(map(str, value)) if isinstance(value, tuple) else None,
)
def test_schema_rejects_invalid_documents(
    path: tuple[str | int, ...],
    value: object,
    rotate_plan: Plan,
    validator: jsonschema.protocols.Validator,
) -> None:
    document: Any = rotate_plan.to_json()
    container = document
    for key in path[:-1]:
        container = container[key]
    container[path[-1]] = value
    assert not validator.is_valid(document)


@pytest.fixture
def rotate_plan(plan_factory: Any, change_factory: Any) -> Plan:
    plan: Plan = plan_factory(
        change_factory(
            Action.ROTATE,
            "shop",
            (ReasonCode.RENEWAL_WINDOW, "it expires in 12 days"),
            served=(("edge-nginx", "nothing"),),
            replaces="c-1",
            replaces_fingerprint="ab" * 32,
        ),
        warnings=("a warning",),
        diagnostics=(PlanDiagnostic(Severity.ERROR, "rate-limit-new-orders", "too many orders", "wait"),),
    )
    return plan
