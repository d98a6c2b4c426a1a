"""examples/prometheus/alerts.yaml: valid rules, the alerts the issue asks for, only metrics we export.

With ``promtool`` (Debian ``prometheus``) on PATH the file is also checked and unit-tested by
Prometheus itself (``promtool check rules``, ``promtool test rules``); without it, by parsing.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from certreconcile.apply.metrics import METRIC_NAMES
from helpers import require_binary

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "examples" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "tests" / "data" / "prometheus" / "alerts_test.yaml"
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_required_alerts_are_there() -> None:
    names = {rule["alert"] for rule in rules()}
    assert {"CertificateExpiringSoon", "CertificateNotReady", "RenewalFailing", "TargetMismatch"} <= names
    target_mismatch = next(rule for rule in rules() if rule["alert"] == "TargetMismatch")
    assert target_mismatch["for"] == "15m"
    assert "certreconcile_target_verified_status == 0" in target_mismatch["expr"]
    renewal_failing = next(rule for rule in rules() if rule["alert"] == "RenewalFailing")
    assert "certreconcile_issuance_failures_total" in renewal_failing["expr"]


def test_every_expression_uses_only_exported_metrics() -> None:
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        used = set(re.findall(r"\bcertreconcile_[a-z_]+", rule["expr"]))
        assert used, rule["alert"]
        for metric in used:
            base = next((metric.removesuffix(s) for s in HISTOGRAM_SUFFIXES if metric.endswith(s)), metric)
            assert metric in METRIC_NAMES or base in METRIC_NAMES, (rule["alert"], metric)


def test_promtool_accepts_and_fires_the_rules() -> None:
    promtool = require_binary("promtool")  # Debian package prometheus; fails on CI when missing
    checked = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
