"""Operations endpoints, on the HTTP API's app, without auth: /metrics, /healthz, /readyz.

- GET /metrics: Prometheus text exposition of the process's default registry (agents/metrics.py).
- GET /healthz: liveness. 200 {"status": "ok"} for as long as the process's HTTP server answers at all; it
  checks nothing else (not the broker, not the consumers), so a broker outage or a long changelog recovery
  never gets a pod restarted: only a process that no longer answers HTTP does.
- GET /readyz: readiness to answer the API (views from the read models, commands produced to Kafka).
  200 {"ready": true, ...} unless one of these holds, then 503 {"ready": false, "reasons": [...], ...}:
    1. the worker's processors are not running: the process is starting (before the stream application
       starts) or stopping;
    2. the read models have not assigned the view topics yet (the broker has not answered, or a view topic
       is missing);
    3. the read models have not yet caught up *once*: every partition of the view topics read up to the
       high watermark it had when the worker started (the read models' recovery);
    4. the read models' consumer is stuck: its thread has not gone round its loop (every 0.1 s normally)
       for READ_MODELS_STALL_S.
  Nothing else makes a worker unready. In particular a ready worker stays ready through a rebalance of the
  fleet's consumer group, whatever it is assigned or revoked, while a moved partition's state recovers from
  its changelog, when it is assigned no partition at all, and when its read models fall behind again after
  the first catch-up (a burst, or processing paused by a rebalance): it still answers from what it has read.
  Every worker reads every view topic in full (agents/readmodels.py assigns partitions, it joins no group),
  so a rebalance, which moves processing partitions between workers, changes nothing a view answer depends
  on, and a rebalance never takes every pod out of the Service at once: a pod leaves it only while it starts
  (1-3), stops (1) or its read models' thread is stuck (4).
  The body always says how fresh the read models are: "messages_behind" (behind the high watermarks last
  measured), "last_read_at" (the last view record read, ISO time) and "read_models_polled_s_ago".

Freshness on every view: each /v1/tenants/... response carries `X-Read-Models-Behind` (messages behind the
view topics' high watermarks) and, once a record was read, `X-Read-Models-Last-Read-At` (ISO time), so a
client that is answered while partitions move (views then lag the log) sees by how much.

These three are exempt from the API's concurrency bound (agents/http.py): a busy worker still answers its
probes and its scrape.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from agents.readmodels import ReadModels

OPS_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
READ_MODELS_STALL_S = 30.0  # the read models' thread not looping for this long makes the worker unready
VIEW_PREFIX = "/v1/tenants/"


def readiness(running: bool, assigned: bool, caught_up: bool, stalled_for: float | None, behind: int) -> list[str]:
    """Why the worker is not ready (rules 1-4 above); empty when it is. `behind` only words a reason."""
    reasons = []
    if not running:
        reasons.append("the worker's processors are not running")
    if not assigned:
        reasons.append("the read models have not assigned the view topics yet")
    elif not caught_up:
        reasons.append(f"the read models have not caught up with the view topics yet ({behind} messages behind)")
    if stalled_for is not None and stalled_for >= READ_MODELS_STALL_S:
        reasons.append(f"the read models' consumer has not polled for {stalled_for:.0f} s")
    return reasons


def add_ops_routes(app: web.Application, readmodels: ReadModels, is_running: Callable[[], bool]) -> None:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return _json({"status": "ok"}, 200)

    async def readyz(request: web.Request) -> web.Response:
        running, caught_up, behind = is_running(), readmodels.caught_up(), readmodels.behind()
        stalled_for = readmodels.stalled_for()
        reasons = readiness(running, readmodels.assigned, caught_up, stalled_for, behind)
        body: dict[str, object] = {
            "ready": not reasons,
            "running": running,
            "read_models_caught_up": caught_up,
            "messages_behind": behind,
            "last_read_at": _iso(readmodels.last_message_at),
            "read_models_polled_s_ago": None if stalled_for is None else round(stalled_for, 3),
        }
        if reasons:
            body["reasons"] = reasons
        return _json(body, 200 if not reasons else 503)

    async def freshness(request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith(VIEW_PREFIX):
            response.headers["X-Read-Models-Behind"] = str(readmodels.behind())
            last = _iso(readmodels.last_message_at)
            if last is not None:
                response.headers["X-Read-Models-Last-Read-At"] = last

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.on_response_prepare.append(freshness)


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def _json(body: object, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
