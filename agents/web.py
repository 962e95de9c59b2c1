"""Operational HTTP pages on the worker's web server: /healthz, /readyz and /metrics.

/metrics serves the fleet's metrics (agents/metrics.py) and faust's own sensor metrics. faust's histogram
`faust_events_runtime_ms` fails `promtool check metrics` (not a base unit); it is exposed converted to
seconds as `faust_events_runtime_seconds`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp.web import Response
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agents.app import app

faust_registry = CollectorRegistry(auto_describe=True)
app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(faust_registry, "faust"))


class _BaseUnits:
    """faust's metrics with milliseconds converted to seconds, so the exposition passes promtool's lint."""

    def collect(self) -> Iterator[Metric]:
        for family in faust_registry.collect():
            if family.name.endswith("_ms"):
                family.name = family.name[: -len("_ms")] + "_seconds"
                for i, sample in enumerate(family.samples):
                    name = sample.name.replace("_ms", "_seconds", 1)
                    labels, value = dict(sample.labels), sample.value
                    if name.endswith("_bucket") and labels.get("le") not in (None, "+Inf"):
                        labels["le"] = repr(float(labels["le"]) / 1000)
                    elif name.endswith("_sum"):
                        value = value / 1000
                    family.samples[i] = sample._replace(name=name, labels=labels, value=value)
            yield family


class _Exposed:
    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        yield from _BaseUnits().collect()


exposed = CollectorRegistry(auto_describe=False)
exposed.register(_Exposed())


@app.page("/metrics")
async def metrics(web: Any, request: Any) -> Any:
    return Response(body=generate_latest(exposed), headers={"Content-Type": CONTENT_TYPE_LATEST}, status=200)


@app.page("/healthz")
async def healthz(web: Any, request: Any) -> Any:
    return web.json({"status": "ok"})


@app.page("/readyz")
async def readyz(web: Any, request: Any) -> Any:
    recovered = bool(app.tables.recovery.completed.is_set())  # type: ignore[attr-defined]
    ready = recovered and not app.rebalancing
    body = {"ready": ready, "recovered": recovered, "rebalancing": bool(app.rebalancing)}
    return web.json(body, status=200 if ready else 503)
