"""A target kind from another package: registered by an entry point, with no change to certreconcile.

``tests/plugins/certreconcile-example-target`` is its own distribution (its own pyproject.toml),
installed into the test environment by ``make venv``. Its kind ``example_bundle`` must validate,
appear in ``certreconcile schema``, plan and apply like a built-in kind.
"""

from __future__ import annotations

import json
import stat
from importlib.metadata import distribution
from pathlib import Path

import jsonschema
import yaml

from e2e.conftest import Runner

DESIRED = """\
issuers:
  ca:
    local_ca: {common_name: plugin test CA}
targets:
  bundles:
    example_bundle: {dir: out, settle: 2s}
certificates:
  - name: shop
    domains: [shop.example.com]
    issuer: ca
    targets: [bundles]
"""


def _desired(tmp_path: Path, text: str = DESIRED) -> Path:
    directory = tmp_path / "desired"
    directory.mkdir(parents=True)
    (directory / "certs.yaml").write_text(text)
    return directory


def test_the_example_kind_comes_from_another_distribution() -> None:
    """The kind is not part of certreconcile: it is registered by the test package alone."""
    own = {entry.name for entry in distribution("certreconcile").entry_points}
    assert "example_bundle" not in own
    theirs = distribution("certreconcile-example-target").entry_points
    assert [(e.group, e.name) for e in theirs] == [("certreconcile.targets", "example_bundle")]


def test_a_third_party_target_validates_is_in_the_schema_plans_and_applies(
    run_cli: Runner, tmp_path: Path
) -> None:
    directory = _desired(tmp_path)
    d = str(directory)
    assert run_cli("validate", "--dir", d, check_code=0).stdout.startswith("Valid: 1 certificate")

    schema = json.loads(run_cli("schema", check_code=0).stdout)
    kind = schema["$defs"]["TargetEntry"]["properties"]["example_bundle"]
    assert kind["description"].startswith("One PEM bundle per certificate")
    jsonschema.validate(yaml.safe_load(DESIRED), schema)
    unknown_key = yaml.safe_load(DESIRED.replace("settle: 2s", "colour: blue"))
    assert not jsonschema.Draft202012Validator(schema).is_valid(unknown_key)

    planned = run_cli("plan", "--dir", d, "--detailed-exitcode", check_code=2)
    assert "Plan: 1 to issue" in planned.stdout
    assert "bundles" in planned.stdout

    applied = run_cli("apply", "--dir", d, "--auto-approve", check_code=0)
    assert "Apply complete: 1 done, 0 skipped, 0 failed." in applied.stdout
    bundle = directory / "out" / "shop.bundle.pem"
    content = bundle.read_text()
    assert content.startswith("-----BEGIN PRIVATE KEY-----") and "-----BEGIN CERTIFICATE-----" in content
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600

    # verified through the kind's own read-back: the next plan is empty
    again = run_cli("plan", "--dir", d, "--detailed-exitcode", check_code=0)
    assert "No changes." in again.stdout


def test_a_third_party_config_is_validated_with_positions(run_cli: Runner, tmp_path: Path) -> None:
    """Its Config forbids unknown keys and its durations get the same checks as the built-in ones."""
    unknown = _desired(tmp_path / "unknown", DESIRED.replace("settle: 2s", "colour: blue"))
    result = run_cli("validate", "--dir", str(unknown), check_code=1)
    assert result.stderr.startswith(
        "certs.yaml:6:32: error[schema-unknown-field]: unknown key `colour` in targets.bundles.example_bundle"
    ), result.stderr
    zero = _desired(tmp_path / "zero", DESIRED.replace("settle: 2s", "settle: 0s"))
    result = run_cli("validate", "--dir", str(zero), check_code=1)
    expected = "certs.yaml:6:40: error[invalid-duration]: targets.bundles.example_bundle.settle"
    assert result.stderr.startswith(expected), result.stderr
