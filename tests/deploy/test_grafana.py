"""deploy/grafana: the dashboard is valid JSON, charts every metric of agents/metrics.py and its queries
select only metrics a worker's /metrics serves (agents/metrics.py and prometheus_client's default process_*
and python_* collectors); promtool parses every query."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.support import (
    GRAFANA,
    allowed_metric_names,
    fleet_metrics,
    load_yaml,
    promql_metric_names,
    promql_unknown_metrics,
)

DASHBOARD = GRAFANA / "dashboards" / "inventory-fleet.json"
REQUIRED_PANELS = [
    "consumer lag per topic-partition",
    "events processed per second by topic and outcome",
    "processing latency by agent",
    "order allocation latency",
    "dead letters by topic and error",
    "backorder queue depth and oldest age",
    "reserved units by kind",
    "rebalances",
    "hop latency by topic",
    "http latency by route",
]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(items: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard()["panels"] if items is None else items:
        found.append(panel)
        found.extend(panels(panel.get("panels", [])))
    return found


def expressions() -> list[tuple[str, str]]:
    exprs = [(p["title"], t["expr"]) for p in panels() for t in p.get("targets", []) if t.get("expr")]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            match = re.fullmatch(r"label_values\((.*),\s*\w+\)", text)
            exprs.append((f"variable {variable['name']}", match[1] if match else text))
    return exprs


def test_valid_dashboard_json() -> None:
    data = dashboard()
    assert data["uid"] and data["title"]
    assert 36 <= data["schemaVersion"] <= 41
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_required_panels() -> None:
    titles = [p["title"].lower() for p in panels()]
    for wanted in REQUIRED_PANELS:
        assert any(title.startswith(wanted) for title in titles), f"no panel '{wanted}'"
    timeseries = {p["title"].lower() for p in panels() if p["type"] == "timeseries"}
    assert "consumer lag per topic-partition" in timeseries


def test_queries_select_only_exported_metrics() -> None:
    exprs = expressions()
    assert len(exprs) > 10
    for title, expr in exprs:
        names = promql_metric_names(expr)
        assert names, f"{title}: no metric found in {expr!r}"
        assert not promql_unknown_metrics(expr), f"{title}: unknown metrics {promql_unknown_metrics(expr)}"


def test_every_fleet_metric_is_charted() -> None:
    selected = set().union(*(promql_metric_names(expr) for _, expr in expressions()))
    missing = [base for base, samples in fleet_metrics().items() if not samples & selected]
    assert not missing, f"metrics of agents/metrics.py without a panel: {missing}"


def test_metric_name_reader() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (agent, le) (rate(inventory_processing_seconds_bucket{instance=~"$instance"}'
        "[$__rate_interval]))) > on (agent) group_left sum without (le) (foo_bar offset 5m) and bool up"
    )
    assert promql_metric_names(expr) == {"inventory_processing_seconds_bucket", "foo_bar", "up"}
    assert promql_unknown_metrics(expr) == {"foo_bar"}
    assert "inventory_events_processed_total" in allowed_metric_names()
    assert "inventory_events_processed" not in allowed_metric_names(), "counters are exported with _total"
    assert "inventory_rebalances_total" in allowed_metric_names()
    assert "inventory_hop_seconds_bucket" in allowed_metric_names()
    assert "process_start_time_seconds" in allowed_metric_names(), "the default collectors are served too"
    assert "faust_total_rebalances" not in allowed_metric_names(), "faust's sensor is gone with faust"


def test_fleet_metrics_are_served_from_the_default_registry() -> None:
    """/metrics serves prometheus_client's default REGISTRY: a collector of agents/metrics.py registered
    anywhere else would never be scraped."""
    from prometheus_client import REGISTRY

    registered = set(REGISTRY._names_to_collectors)
    for base, samples in fleet_metrics().items():
        assert samples & registered, f"{base} is not in prometheus_client.REGISTRY"


def test_no_faust_left() -> None:
    assert "faust" not in DASHBOARD.read_text().lower(), "the fleet runs on Quix Streams: no faust metric or tag"


def test_hop_latency_panel_is_per_topic() -> None:
    (panel,) = [p for p in panels() if p["title"].lower().startswith("hop latency by topic")]
    assert panel["type"] == "timeseries"
    for target in panel["targets"]:
        assert "inventory_hop_seconds_bucket" in promql_metric_names(target["expr"])
        assert re.search(r"by \(topic, le\)", target["expr"]), target["expr"]
        assert "{{topic}}" in target["legendFormat"]


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    from tests.support.promtool import promtool as matching_promtool

    promtool = matching_promtool()  # the version docker-compose.yml's Prometheus runs
    rules = []
    for index, (_, expr) in enumerate(expressions()):
        concrete = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$instance", ".*")
        rules.append({"record": f"dashboard:query_{index}", "expr": concrete})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_files() -> None:
    datasources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    assert datasources["apiVersion"] == 1
    assert [d["type"] for d in datasources["datasources"]] == ["prometheus"]
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "inventory-fleet.yml")
    assert providers["apiVersion"] == 1
    assert [p["type"] for p in providers["providers"]] == ["file"]
