"""deploy/prometheus: promtool accepts the configs and the rules, the rules' own unit tests pass, and every
expression selects metrics the fleet exports. The promtool is the one of the Prometheus docker-compose.yml
runs (tests/support/promtool.py finds it, or builds it with Go from the module proxy, cached in .tools/);
without it these tests fail."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import (
    COMPOSE_FILE,
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


@pytest.fixture(scope="module")
def promtool() -> str:
    from tests.support.promtool import PromtoolUnavailable
    from tests.support.promtool import promtool as matching_promtool

    try:
        return matching_promtool()
    except PromtoolUnavailable as exc:
        pytest.fail(f"no promtool of the compose image's version, so nothing here is validated: {exc}")


def run(promtool: str, *args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def test_promtool_is_the_version_compose_runs(promtool: str) -> None:
    from tests.support.promtool import compose_prometheus_version, version_of

    compose_version = compose_prometheus_version()
    assert load_yaml(COMPOSE_FILE)["services"]["prometheus"]["image"] == f"prom/prometheus:v{compose_version}"
    assert version_of(promtool) == compose_version


@pytest.mark.parametrize("name", CONFIGS)
def test_promtool_check_config(promtool: str, name: str) -> None:
    """The whole config, Kubernetes discovery included (a promtool built from Prometheus' source has it)."""
    result = run(promtool, "check", "config", name)
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout


def test_promtool_rejects_a_broken_config(promtool: str, tmp_path: Path) -> None:
    config = load_yaml(PROMETHEUS / "prometheus-kubernetes.yml")
    config["scrape_configs"][0]["kubernetes_sd_configs"][0]["role"] = "pods"  # not a role
    for rule_file in config.get("rule_files", []):
        (tmp_path / rule_file).write_text((PROMETHEUS / rule_file).read_text())
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = run(promtool, "check", "config", "broken.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "pods" in output(result)


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
