from __future__ import annotations

from pathlib import Path

from certreconcile.desired.schema import SCHEMA_ID, desired_state_json_schema, render_json_schema

COMMITTED = Path(__file__).resolve().parents[3] / "schemas" / "desired-state.schema.json"


def test_committed_schema_matches_the_models() -> None:
    assert COMMITTED.read_text() == render_json_schema(builtin_only=True), (
        "schemas/desired-state.schema.json is out of date: "
        "run `make schema`"
    )


def test_schema_has_identity_and_descriptions() -> None:
    schema = desired_state_json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["$id"] == SCHEMA_ID
    assert schema["title"]
    assert schema["description"]
    assert schema["$defs"]["CertificateDocument"]["properties"]["renew_before"]["description"]


def test_examples_reference_the_schema() -> None:
    examples = COMMITTED.parents[1] / "examples" / "desired-state"
    files = sorted(examples.glob("*.yaml"))
    assert len(files) >= 2
    for path in files:
        assert path.read_text().startswith(
            "# yaml-language-server: $schema=../../schemas/desired-state.schema.json\n"), path


def test_the_fleet_example_references_the_schema() -> None:
    examples = COMMITTED.parents[1] / "examples" / "fleet" / "desired-state"
    files = sorted(examples.glob("*.yaml"))
    assert files
    for path in files:
        assert path.read_text().startswith(
            "# yaml-language-server: $schema=../../../schemas/desired-state.schema.json\n"), path
