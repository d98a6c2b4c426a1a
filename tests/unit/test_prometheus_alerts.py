"""examples/prometheus/alerts.yaml: valid rules, the alerts the issue asks for, only metrics we export.

With ``promtool`` (Debian ``prometheus``) on PATH the file is also checked and unit-tested by
Prometheus itself (``promtool check rules``, ``promtool test rules``); without it, by parsing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from certreconcile.apply.metrics import METRIC_NAMES
from helpers import require_binary
from promql import exported, metric_names

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "examples" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "tests" / "data" / "prometheus" / "alerts_test.yaml"
#: Prometheus's own series the rules may read besides ours (the scrape's health).
PROMETHEUS_SERIES = frozenset({"up"})


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
    # the process gone (the rules on our own series cannot fire then), and cycles that end in error
    assert {"ReconcilerDown", "ReconcilerAbsent", "ReconcileCyclesFailing"} <= names
    by_name = {rule["alert"]: rule["expr"] for rule in rules()}
    assert "up{" in by_name["ReconcilerDown"] and "== 0" in by_name["ReconcilerDown"]
    assert by_name["ReconcilerAbsent"].startswith("absent(")
    assert 'outcome="error"' in by_name["ReconcileCyclesFailing"]


def test_the_metric_name_extractor_sees_what_it_must() -> None:
    assert metric_names('sum by (name) (rate(a_total{x="b_c"}[5m])) / on (name) b_bucket > 0.5') == {
        "a_total",
        "b_bucket",
    }
    assert metric_names("absent(up{job='x'} == 1) or time() - last > 3 * 3600") == {"up", "last"}
    assert metric_names("histogram_quantile(0.9, sum by (le) (rate(d_bucket[$__rate_interval])))") == {"d_bucket"}
    assert not exported("certreconcile_nothing_total", METRIC_NAMES)
    assert exported("certreconcile_apply_duration_seconds_bucket", METRIC_NAMES)


def test_every_expression_uses_only_exported_metrics() -> None:
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        for metric in used:
            assert exported(metric, METRIC_NAMES | PROMETHEUS_SERIES), (rule["alert"], metric)


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
