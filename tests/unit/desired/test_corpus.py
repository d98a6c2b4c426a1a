"""The bad-input corpus: each case directory yields exactly the diagnostics in its expected.txt."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml_rs

from certreconcile.desired import desired_state_json_schema, validate_directory

ROOT = Path(__file__).resolve().parents[2]
INVALID = ROOT / "data" / "invalid"
VALID = ROOT / "data" / "valid"
EXAMPLES = ROOT.parent / "examples" / "desired-state"
FLEET_EXAMPLE = ROOT.parent / "examples" / "fleet" / "desired-state"

CASES = sorted(path for path in INVALID.iterdir() if path.is_dir())
VALID_DIRS = [*sorted(path for path in VALID.iterdir() if path.is_dir()), EXAMPLES, FLEET_EXAMPLE]


def expected_lines(case: Path) -> list[str]:
    return [line for line in (case / "expected.txt").read_text().splitlines() if line.strip()]


def yaml_files(directory: Path) -> list[Path]:
    return sorted(
        path for path in directory.rglob("*")
        if path.suffix in (".yaml", ".yml")
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 200


@pytest.mark.parametrize("case", CASES, ids=lambda path: path.name)
def test_invalid_case_yields_expected_diagnostics(case: Path) -> None:
    diagnostics = validate_directory(case)
    got = [f"{d.location}: error[{d.code}]" for d in diagnostics]
    assert got == expected_lines(case)
    for diagnostic in diagnostics:
        assert str(diagnostic).startswith(f"{diagnostic.location}: error[{diagnostic.code}]: ")
        assert diagnostic.message


@pytest.mark.parametrize("directory", VALID_DIRS, ids=lambda path: path.parent.name + "/" + path.name)
def test_valid_directory_has_no_diagnostics(directory: Path) -> None:
    assert validate_directory(directory) == []


# Refused by the models' validators, which JSON Schema cannot express (header names and values, URL ports).
VALIDATOR_ONLY = {"shell-header-crlf-injection", "shell-header-name-colon", "shell-header-reserved",
                  "webhook-port-too-big", "webhook-port-zero"}
SCHEMA_CASES = [case for case in CASES if case.name not in VALIDATOR_ONLY
                and all("error[schema-" in line for line in expected_lines(case))]


def test_some_cases_are_pure_schema_errors() -> None:
    assert len(SCHEMA_CASES) >= 15


@pytest.mark.parametrize("case", SCHEMA_CASES, ids=lambda path: path.name)
def test_json_schema_rejects_pure_schema_errors(case: Path) -> None:
    validator = jsonschema.Draft202012Validator(desired_state_json_schema())
    failing = {path.relative_to(case).as_posix() for path in yaml_files(case)
               if list(validator.iter_errors(yaml_rs.loads(path.read_text(), parse_datetime=False) or {}))}
    expected_files = {line.split(":", 1)[0] for line in expected_lines(case)}
    assert failing == expected_files


@pytest.mark.parametrize("directory", VALID_DIRS, ids=lambda path: path.parent.name + "/" + path.name)
def test_json_schema_accepts_valid_files(directory: Path) -> None:
    validator = jsonschema.Draft202012Validator(desired_state_json_schema())
    for path in yaml_files(directory):
        errors = list(validator.iter_errors(yaml_rs.loads(path.read_text(), parse_datetime=False) or {}))
        assert errors == [], path


def test_json_schema_is_a_valid_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(desired_state_json_schema())
