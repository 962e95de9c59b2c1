"""Operational HTTP pages on the worker's web server: /healthz, /readyz and /metrics."""

from __future__ import annotations

from typing import Any

from faust.sensors.prometheus import setup_prometheus_sensors

from agents.app import app

setup_prometheus_sensors(app, name_prefix="faust")


@app.page("/healthz")
async def healthz(web: Any, request: Any) -> Any:
    return web.json({"status": "ok"})


@app.page("/readyz")
async def readyz(web: Any, request: Any) -> Any:
    recovered = bool(app.tables.recovery.completed.is_set())  # type: ignore[attr-defined]
    ready = recovered and not app.rebalancing
    body = {"ready": ready, "recovered": recovered, "rebalancing": bool(app.rebalancing)}
    return web.json(body, status=200 if ready else 503)
