"""Let's Encrypt budgets end to end: `plan` shows them, `apply` refuses a plan past a limit.

No CA is reachable here, on purpose: apply must refuse before it contacts one. Every proxy
variable points at a closed local port, so a stray request would fail (and leave orders behind).
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import psycopg
import pytest
import yaml

from e2e.conftest import Runner

ROOT = Path(__file__).resolve().parents[2]
NOWHERE = "http://127.0.0.1:9"


def write_desired(directory: Path, count: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "kms": {"local": {}},
        "issuers": {"letsencrypt": {"acme": {"directory": "letsencrypt", "email": "ops@example.com"}}},
        "targets": {"deploy": {"files": {"dir": str(directory.parent / "out")}}},
        "certificates": [
            {"name": f"site{i}", "domains": [f"site{i}.example.com"], "issuer": "letsencrypt", "targets": ["deploy"]}
            for i in range(count)
        ],
    }
    (directory / "certificates.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory


@pytest.fixture
def offline_env(cli_env: dict[str, str]) -> dict[str, str]:
    proxies = dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"), NOWHERE)
    return {**{k: v for k, v in cli_env.items() if k.upper() != "NO_PROXY"}, **proxies}


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        tables = ("Certificate", "AcmeOrder", "AcmeAccount", "ApplyRun", "ApplyStep", "CertAudit")
        found = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone() for table in tables}
        serial = conn.execute("SELECT serial FROM StateMeta").fetchone()
    result = {table: row[0] for table, row in found.items() if row is not None}
    result["serial"] = serial[0] if serial is not None else -1
    return result


def test_plan_shows_the_budget_error_and_apply_refuses(
    run_cli: Runner, offline_env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    d = str(write_desired(tmp_path / "desired", 51))
    run_cli("db", "upgrade", "--dir", d, env=offline_env, check_code=0)
    before = counts(database_url)

    text = run_cli("plan", "--dir", d, env=offline_env, check_code=1)
    assert "Plan: 51 to issue" in text.stdout
    assert (
        "Error: Let's Encrypt rate limit: this plan would make 51 new certificates for example.com within 7 days"
        in text.stdout
    )
    assert "the limit is 50 per registered domain per week" in text.stdout
    assert "apply refuses this plan; nothing will change." in text.stdout
    assert "error[rate-limit-registered-domain]:" in text.stderr

    as_json = run_cli("plan", "--dir", d, "--format", "json", env=offline_env, check_code=1)
    document = json.loads(as_json.stdout)
    jsonschema.validate(document, json.loads((ROOT / "schemas" / "plan.schema.json").read_text()))
    assert [(x["severity"], x["code"]) for x in document["diagnostics"]] == [("error", "rate-limit-registered-domain")]
    markdown = run_cli("plan", "--dir", d, "--format", "markdown", env=offline_env, check_code=1)
    assert "> [!CAUTION]" in markdown.stdout and "51 new certificates for example.com" in markdown.stdout

    refused = run_cli("apply", "--dir", d, "--auto-approve", env=offline_env, check_code=1)
    assert "error[rate-limit-registered-domain]: apply refused, nothing was changed:" in refused.stderr
    assert "51 new certificates for example.com" in refused.stderr
    assert "split the change over several weeks" in refused.stderr
    assert "letsencrypt-staging" in refused.stderr
    assert "Traceback" not in refused.stderr

    saved = tmp_path / "plan.json"
    run_cli("plan", "--dir", d, "--out", str(saved), env=offline_env, check_code=1)
    refused_saved = run_cli("apply", str(saved), "--dir", d, env=offline_env, check_code=1)
    assert "error[rate-limit-registered-domain]: apply refused" in refused_saved.stderr

    after = counts(database_url)
    assert after == before
    assert (after["Certificate"], after["AcmeOrder"], after["AcmeAccount"], after["ApplyRun"]) == (0, 0, 0, 0)


def test_a_plan_near_the_budget_warns_and_is_not_refused(
    run_cli: Runner, offline_env: dict[str, str], tmp_path: Path
) -> None:
    d = str(write_desired(tmp_path / "desired", 41))
    text = run_cli("plan", "--dir", d, "--detailed-exitcode", env=offline_env, check_code=2)
    assert "Plan: 41 to issue" in text.stdout
    assert (
        "Warning: Let's Encrypt rate limit: this plan would bring example.com to 41 of 50 new certificates"
        " per registered domain per week (0 in the last 7 days + 41 planned: site0, site1, site10, site11, site12"
        " and 36 more)"
    ) in text.stdout
    assert "Error:" not in text.stdout
    markdown = run_cli("plan", "--dir", d, "--format", "markdown", env=offline_env, check_code=0)
    assert "> [!WARNING]" in markdown.stdout and "41 of 50" in markdown.stdout
    assert "[!CAUTION]" not in markdown.stdout
    as_json = json.loads(run_cli("plan", "--dir", d, "--format", "json", env=offline_env, check_code=0).stdout)
    assert [(x["severity"], x["code"]) for x in as_json["diagnostics"]] == [("warning", "rate-limit-registered-domain")]
