"""Operations endpoints, on the HTTP API's app, without auth: /metrics, /healthz, /readyz.

- GET /metrics: Prometheus text exposition of the process's default registry (agents/metrics.py).
- GET /healthz: liveness, {"status": "ok"} for as long as the process serves HTTP at all.
- GET /readyz: readiness to answer views, 200 {"ready": true, ...} when the worker's processors run and
  the read models have caught up with the view topics (every partition read up to the high watermark it had
  when they started), else 503 {"ready": false, "reasons": [...], ...}.

Readiness reflects this worker's readiness to answer views, not the consumer group's rebalances: every
worker reads every view topic in full (agents/readmodels.py assigns partitions, it joins no group), so a
rebalance, which moves processing partitions between workers, changes nothing a view answer depends on. A
rebalance therefore never takes every pod out of the Service at once; a pod leaves it only while it is
starting (or its processors stopped).

These three are exempt from the API's concurrency bound (agents/http.py): a busy worker still answers its
probes and its scrape.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from agents.readmodels import ReadModels

OPS_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


def add_ops_routes(app: web.Application, readmodels: ReadModels, is_running: Callable[[], bool]) -> None:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return _json({"status": "ok"}, 200)

    async def readyz(request: web.Request) -> web.Response:
        running, caught_up = is_running(), readmodels.caught_up()
        reasons = []
        if not running:
            reasons.append("the worker's processors are not running")
        if not readmodels.assigned:
            reasons.append("the read models have not assigned the view topics yet")
        elif not caught_up:
            reasons.append(
                f"the read models have not caught up with the view topics yet ({readmodels.behind()} messages behind)"
            )
        body: dict[str, object] = {
            "ready": not reasons,
            "running": running,
            "read_models_caught_up": caught_up,
            "messages_behind": readmodels.behind(),
        }
        if reasons:
            body["reasons"] = reasons
        return _json(body, 200 if not reasons else 503)

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def _json(body: object, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
