"""deploy/prometheus: promtool accepts the configs and the rules, the rules' own unit tests pass, and every
expression selects metrics the fleet exports. promtool is required: without it these tests fail (.ci/run
installs it with Debian's prometheus package)."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import (
    K8S,
    PROMETHEUS,
    WORKER_JOB,
    load_yaml,
    load_yaml_all,
    promql_metric_names,
    promql_unknown_metrics,
)

CONFIGS = ["prometheus.yml", "prometheus-kubernetes.yml"]
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts_test.yml"
REQUIRED_ALERT_METRICS = {
    "inventory_consumer_lag_messages",
    "inventory_dlq_messages_total",
    "up",
    "inventory_backorder_oldest_age_seconds",
    "inventory_order_allocation_seconds_bucket",
    "inventory_rebalances_total",
}
# Debian builds promtool without Kubernetes service discovery (its client library is not packaged).
DEBIAN_NO_K8S_SD = "field kubernetes_sd_configs not found"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH, so the Prometheus config and alert rules are not validated. Install it: "
            "`apt-get install prometheus` (Debian's package ships promtool; .ci/run does this)."
        )
    return path


def run(promtool: str, *args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def without_kubernetes_sd(config: dict[str, Any]) -> dict[str, Any]:
    """The config with each kubernetes_sd_configs replaced by a static target, the rest untouched."""
    for job in config["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["inventory-worker-0.inventory-worker.inventory.svc:6066"]}]
    return config


@pytest.mark.parametrize("name", CONFIGS)
def test_promtool_check_config(promtool: str, name: str, tmp_path: Path) -> None:
    result = run(promtool, "check", "config", name)
    if result.returncode != 0 and DEBIAN_NO_K8S_SD in output(result):
        # Check everything else with promtool; the discovery block itself in test_kubernetes_discovery.
        warnings.warn(
            f"{name}: this promtool has no Kubernetes discovery (Debian build); checked with a static target "
            "in its place",
            stacklevel=1,
        )
        config = without_kubernetes_sd(load_yaml(PROMETHEUS / name))
        for rule_file in config.get("rule_files", []):
            shutil.copy(PROMETHEUS / rule_file, tmp_path / rule_file)
        (tmp_path / name).write_text(yaml.safe_dump(config, sort_keys=False))
        result = run(promtool, "check", "config", name, cwd=tmp_path)
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout


def test_promtool_check_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", RULES.name)
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout


def test_promtool_rule_unit_tests(promtool: str) -> None:
    result = run(promtool, "test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


def test_alerts_select_only_fleet_metrics() -> None:
    selected: set[str] = set()
    for rule in alert_rules():
        assert not promql_unknown_metrics(rule["expr"]), (rule["alert"], promql_unknown_metrics(rule["expr"]))
        selected |= promql_metric_names(rule["expr"])
    assert selected >= REQUIRED_ALERT_METRICS, REQUIRED_ALERT_METRICS - selected


def test_alerts_have_severity_and_operator_text() -> None:
    rules = alert_rules()
    assert len(rules) >= 5
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["description"]) > 100, f"{rule['alert']}: say what to do"
    tested = {case["alertname"] for test in load_yaml(RULE_TESTS)["tests"] for case in test.get("alert_rule_test", [])}
    assert tested == {rule["alert"] for rule in rules}, "every alert has a promtool unit test"


def test_worker_job_name_is_the_one_alerts_select() -> None:
    for name in CONFIGS:
        jobs = [job["job_name"] for job in load_yaml(PROMETHEUS / name)["scrape_configs"]]
        assert WORKER_JOB in jobs, name
    assert any(f'job="{WORKER_JOB}"' in rule["expr"] for rule in alert_rules())


def test_kubernetes_discovery_finds_the_statefulset_pods() -> None:
    (job,) = [j for j in load_yaml(PROMETHEUS / "prometheus-kubernetes.yml")["scrape_configs"]]
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod"
    kustomization = load_yaml(K8S / "kustomization.yaml")
    assert sd["namespaces"]["names"] == [kustomization["namespace"]]
    (sts,) = [d for d in load_yaml_all(K8S / "statefulset.yaml") if d["kind"] == "StatefulSet"]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    keeps = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert keeps, "the job keeps only the worker pods"
    for keep in keeps:
        (source,) = keep["source_labels"]
        if source.startswith("__meta_kubernetes_pod_label_"):
            label = source.removeprefix("__meta_kubernetes_pod_label_")
            values = [v for k, v in pod_labels.items() if k.replace(".", "_").replace("/", "_") == label]
            assert values == [keep["regex"]], f"{source} does not match the StatefulSet's pod labels"
        elif source == "__meta_kubernetes_pod_container_port_name":
            assert keep["regex"] in port_names
        else:
            pytest.fail(f"unexpected keep on {source}")
