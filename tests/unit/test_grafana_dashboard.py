"""examples/prometheus/grafana-dashboard.json: every query names a metric the program exports.

The exported names come from a scrape of a real :class:`ReconcilerMetrics` registry (every metric
observed once), not from a list kept by hand; with ``promtool`` every query's syntax is checked too.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from certreconcile.apply.metrics import METRIC_NAMES, ReconcilerMetrics
from helpers import require_binary
from promql import exported, metric_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "examples" / "prometheus" / "grafana-dashboard.json"
PROMETHEUS_SERIES = frozenset({"up"})  # Prometheus's own, per scrape target


def scraped_families() -> set[str]:
    """The metric family names a real registry serves (a counter as its ``_total`` series)."""
    metrics = ReconcilerMetrics()
    metrics.observe_acme_request("newOrder", 201, 0.3)
    metrics.observe_cycle("success", 1.0, 0)
    metrics.issuance.labels(issuer="le", reason="renewal-window").inc()
    metrics.issuance_failures.labels(issuer="le", reason="acme-unreachable").inc()
    metrics.apply_duration.observe(1.0)
    families = text_string_to_metric_families(generate_latest(metrics.registry).decode())
    return {f.name + ("_total" if f.type == "counter" else "") for f in families if not f.name.endswith("_created")}


def queries(node: Any) -> Iterator[str]:
    """Every PromQL expression of the dashboard: panel targets' ``expr`` and query variables' ``query``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            elif key == "query" and node.get("type") == "query":
                text = value["query"] if isinstance(value, dict) else value
                found = re.fullmatch(r"label_values\((\w+)(\{[^}]*\})?,\s*\w+\)", text)
                assert found, text  # a variable's query: label_values(metric, label)
                yield found.group(1)
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_every_query_names_only_exported_metrics() -> None:
    families = scraped_families()
    assert families == METRIC_NAMES  # the documented list is what a scrape shows
    exprs = list(queries(dashboard()))
    assert len(exprs) >= 20
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        unknown = {name for name in names if not exported(name, families | PROMETHEUS_SERIES)}
        assert not unknown, (expr, unknown)
        used |= names
    # ... and every certreconcile metric has a panel
    ours = {name for name in families if name.startswith("certreconcile_")}
    shown = {name for name in ours if any(exported(u, {name}) for u in used)}
    assert shown == ours, ours - shown


def test_the_checker_refuses_a_metric_that_is_not_exported() -> None:
    families = scraped_families()
    names = metric_names('sum(rate(certreconcile_certificates_renewed_total{job=~"$job"}[$__rate_interval]))')
    assert names == {"certreconcile_certificates_renewed_total"}
    assert not exported("certreconcile_certificates_renewed_total", families)


def test_panels_use_the_datasource_variable_and_unique_ids() -> None:
    board = dashboard()
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    promtool = require_binary("promtool")  # Debian package prometheus; fails on CI when missing
    exprs = [expr.replace("$__rate_interval", "5m").replace("$job", ".*") for expr in queries(dashboard())]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{index}", "expr": expr} for index, expr in enumerate(exprs)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
