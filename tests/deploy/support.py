"""Shared helpers of the deployment tests: paths, the settings' environment names, the metric names a
worker's /metrics serves (agents/metrics.py and prometheus_client's default collectors) and a small PromQL
reader that finds the metric names an expression selects."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

WORKER_JOB = "inventory-worker"
WORKER_COMMAND = ["python", "-m", "agents", "worker"]
TOPICS_COMMAND = ["python", "-m", "agents", "topics", "apply"]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@cache
def settings_env_names() -> frozenset[str]:
    """INVENTORY_<FIELD> for every field of agents.settings.Settings."""
    from agents.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    return frozenset(f"{prefix}{name}".upper() for name in Settings.model_fields)


def inventory_names(names: Any) -> set[str]:
    return {name for name in names if str(name).upper().startswith("INVENTORY_")}


@cache
def fleet_metrics() -> dict[str, frozenset[str]]:
    """Base name of every collector in agents/metrics.py -> the sample names Prometheus sees for it."""
    from prometheus_client.metrics import MetricWrapperBase

    import agents.metrics

    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    metrics: dict[str, frozenset[str]] = {}
    for value in vars(agents.metrics).values():
        if isinstance(value, MetricWrapperBase):
            base = value._name
            metrics[base] = frozenset(base + suffix for suffix in suffixes.get(value._type, ("",)))
    return metrics


@cache
def default_collector_names() -> frozenset[str]:
    """Sample names of prometheus_client's default collectors (process_*, python_*), which /metrics serves
    beside the fleet's own metrics: the worker exposes the default REGISTRY."""
    from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return frozenset(sample.name for family in registry.collect() for sample in family.samples)


def allowed_metric_names() -> frozenset[str]:
    """Every sample name a worker's /metrics can serve, and `up` (Prometheus' own, per target)."""
    names: set[str] = {"up"}
    for samples in fleet_metrics().values():
        names |= samples
    return frozenset(names | default_collector_names())


# --- PromQL -------------------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "atan2",
    "Inf",
    "inf",
    "NaN",
    "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (bare selectors such as `foo`, `foo{a="b"}`, `foo[5m]`);
    function and aggregation names, label names in by/without/on clauses and label values are not."""
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VAR.sub("1m", text)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    return {name for name in _IDENT.findall(text) if name not in _KEYWORDS}


def promql_unknown_metrics(expr: str) -> set[str]:
    return promql_metric_names(expr) - allowed_metric_names()


# --- Dockerfile ---------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        op, _, args = full.partition(" ")
        instructions.append((op.upper(), args.strip()))
    return instructions


def settings_from(env: dict[str, str], monkeypatch: Any) -> Any:
    """agents.settings.Settings as a process with exactly these INVENTORY_* variables would read them."""
    import os

    from agents.settings import Settings

    for name in list(os.environ):
        if name.upper().startswith("INVENTORY_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.upper().startswith("INVENTORY_"):
            monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]
