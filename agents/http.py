"""The HTTP API under /v1: customer inventory views, credit impact, SKU availability, order status and
reports, for CRM front ends and sales reps, on aiohttp.

Every answer comes from this worker's read models of the view topics (agents/readmodels.py), so any worker
answers any request: nothing is forwarded to another worker, no endpoint serves partial aggregates and
nothing dumps tables. Every /v1 request is authenticated with a bearer token bound to one tenant (401 no or
unknown token, 403 a token of another tenant), ids are checked (400) and unknown entities are 404, all with
a JSON body {"error": ...}.

Ids (issue 11): a tenant is `[A-Za-z0-9._-]{1,64}`; every other id is any unicode string of 1 to 200
characters without control characters. A `/` in an id travels percent-encoded (`%2F`) and `%` as `%25`:
aiohttp matches routes on the path with those two still encoded and decodes the matched values.

The middleware answers 503 with `Retry-After: 1` and a JSON message, never a 500 and never a hang, when a
handler raises unexpectedly, when it takes longer than `http_timeout_s`, and when `http_max_concurrent`
requests are already in flight (at once, without queueing). The work of a view runs in a thread pool, so a
slow view cannot stall the event loop and the timeout holds. /metrics, /healthz and /readyz (agents/ops.py)
are exempt from the bound.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson
from aiohttp import web

from agents.core import customer as customer_core
from agents.core import reports
from agents.core.commands import ProcessBackorders
from agents.core.events import Tier
from agents.core.ids import event_id
from agents.core.saga import OrderSaga
from agents.envelope import wrap
from agents.metrics import HTTP_REQUESTS, HTTP_SECONDS
from agents.ops import OPS_PATHS, add_ops_routes
from agents.readmodels import ReadModels
from agents.runtime.partitions import partition_keys
from agents.settings import Settings, token_tenants
from agents.topology import Topology

log = logging.getLogger("agents.http")

TENANT = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
ID_MAX = 200
OPENAPI = Path(__file__).resolve().parent / "openapi.json"
PROCESS_SETTLE_S = 3.0  # how long process-backorders watches the fills come back before it answers
PROCESS_POLL_S = 0.25
ALLOCATED = ("INVENTORY_ALLOCATED", "FULFILLMENT_IN_PROGRESS", "SHIPPED", "DELIVERED")

Send = Callable[[str, bytes, bytes, int], None]
T = TypeVar("T")

# An id segment: anything but a raw `/` (aiohttp matches on the path with %2F still encoded); the default
# pattern `[^{}/]+` would refuse ids with braces.
SEGMENT = "[^/]+"
ROUTES = {
    "inventory": f"/v1/tenants/{{tenant:{SEGMENT}}}/customers/{{customer:{SEGMENT}}}/inventory",
    "credit_impact": f"/v1/tenants/{{tenant:{SEGMENT}}}/customers/{{customer:{SEGMENT}}}/credit-impact",
    "availability": f"/v1/tenants/{{tenant:{SEGMENT}}}/skus/{{sku:{SEGMENT}}}/availability",
    "order": f"/v1/tenants/{{tenant:{SEGMENT}}}/orders/{{order:{SEGMENT}}}",
    "backorder_report": f"/v1/tenants/{{tenant:{SEGMENT}}}/reports/backorders",
    "opportunity_report": f"/v1/tenants/{{tenant:{SEGMENT}}}/reports/opportunities",
    "process_backorders": f"/v1/tenants/{{tenant:{SEGMENT}}}/backorders/process",
}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def valid_id(value: str) -> bool:
    """The ids intake accepts (agents/core/events.py `Id`): 1 to 200 characters, no `|` (the key separator)
    and no control character (Unicode category Cc: C0, DEL, C1)."""
    return 0 < len(value) <= ID_MAX and "|" not in value and not any(unicodedata.category(ch) == "Cc" for ch in value)


def check_id(name: str, value: str) -> str:
    if not valid_id(value):
        shown = value if len(value) <= 60 else value[:60] + "..."
        raise HttpError(400, f"{name} {shown!r} is not a valid identifier (1 to {ID_MAX} characters, no | or control)")
    return value


def check_tenant(value: str) -> str:
    if not TENANT.match(value):
        shown = value if len(value) <= 70 else value[:70] + "..."
        raise HttpError(400, f"tenant {shown!r} is not a valid tenant id ([A-Za-z0-9._-], 1 to 64 characters)")
    return value


def int_param(request: web.Request, name: str, default: int | None, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise HttpError(400, f"query parameter {name} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, f"{name} must be a whole number, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise HttpError(400, f"{name} must be between {low} and {high}, got {value}")
    return value


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat() if epoch else None


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, default=str), status=status, content_type="application/json", headers=headers
    )


def _unavailable(message: str) -> web.Response:
    return _json({"error": message}, 503, {"Retry-After": "1"})


class Api:
    """The /v1 handlers over one worker's read models."""

    def __init__(
        self,
        settings: Settings,
        topology: Topology,
        readmodels: ReadModels,
        send: Send,
        executor: ThreadPoolExecutor,
        settle_s: float,
    ) -> None:
        self.settings = settings
        self.readmodels = readmodels
        self.send = send
        self.executor = executor
        self.settle_s = settle_s
        self.tokens = token_tenants(settings)
        self.sku_commands = topology["sku_commands"].name
        self.sku_partitions = topology["sku_commands"].partitions

    async def run(self, fn: Callable[[], T]) -> T:
        """`fn` in the pool: a slow view neither stalls the loop nor escapes the request timeout."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    # ---- checks ----------------------------------------------------------------------------------------

    def authorize(self, request: web.Request) -> str:
        """The checked tenant of the path, once the bearer token may read it; then the path's other ids."""
        tenant = check_tenant(request.match_info["tenant"])
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise HttpError(401, "missing bearer token (Authorization: Bearer <token>)")
        owner = None
        for known, known_tenant in self.tokens.items():  # compare with every token: no early exit
            if hmac.compare_digest(known.encode(), token.encode()):
                owner = known_tenant
        if owner is None:
            raise HttpError(401, "unknown token")
        if owner != tenant:
            raise HttpError(403, f"this token may not read tenant {tenant}")
        for name, value in request.match_info.items():
            if name != "tenant":
                check_id(name, value)
        return tenant

    def tier_discounts(self, tenant: str) -> dict[Tier, Decimal]:
        override = self.settings.tier_discounts.get(tenant, {})
        return {**customer_core.DEFAULT_TIER_DISCOUNTS, **cast(dict[Tier, Decimal], override)}

    def load_customer(self, tenant: str, customer: str) -> customer_core.CustomerState:
        state = self.readmodels.customer(tenant, customer)
        if state is None or not state.known:
            raise HttpError(404, f"customer {customer} is not known")
        return state

    def catalog(self, tenant: str) -> dict[str, tuple[customer_core.CatalogPrice, dict[str, Any]]]:
        """sku -> (its catalog price, its availability) for the tenant's SKUs whose product is known."""
        found = {}
        for sku, record in self.readmodels.skus(tenant).items():
            entry = _catalog_price(record)
            if entry is not None:
                found[sku] = (entry, record)
        return found

    # ---- views -----------------------------------------------------------------------------------------

    async def customer_inventory(self, request: web.Request) -> web.Response:
        tenant = self.authorize(request)
        customer = request.match_info["customer"]
        page = int_param(request, "page", 1, 1, 1_000_000)
        page_size = int_param(request, "page_size", 50, 1, 500)
        return _json(await self.run(lambda: self._inventory(tenant, customer, page, page_size)))

    def _inventory(self, tenant: str, customer: str, page: int, page_size: int) -> dict[str, Any]:
        state = self.load_customer(tenant, customer)
        discounts = self.tier_discounts(tenant)
        items = []
        for sku, (entry, record) in sorted(self.catalog(tenant).items()):
            price, discount = customer_core.price_line(state, sku, entry, discounts)
            reserved = customer_core.reserved_for(state, sku)
            for loc in record.get("locations") or [{"location": "", "available": 0}]:
                items.append(
                    {
                        "sku": sku,
                        "description": entry.description,
                        "available_quantity": loc["available"],
                        "reserved_quantity": reserved,
                        "unit_price": _money(entry.unit_price),
                        "customer_price": _money(price),
                        "discount_percentage": str(discount),
                        "lead_time": entry.lead_time_days,
                        "location": loc["location"],
                    }
                )
        total = sum((Decimal(i["customer_price"]) * i["available_quantity"] for i in items), Decimal(0))
        first = (page - 1) * page_size
        rm = self.readmodels
        return {
            "customer_id": state.customer_id,
            "customer_name": state.name,
            "customer_tier": state.tier,
            "tenant_id": state.tenant_id,
            "inventory_items": items[first : first + page_size],
            "total_value": _money(total),
            "page": page,
            "page_size": page_size,
            "total_items": len(items),
            "last_updated": datetime.now(UTC).isoformat(),
            "freshness": {
                "availability_messages_behind": rm.behind("availability"),
                "availability_last_read_at": _iso(rm.last_read("availability")),
                "messages_behind": rm.behind(),
                "last_read_at": _iso(rm.last_message_at),
            },
        }

    async def credit_impact(self, request: web.Request) -> web.Response:
        tenant = self.authorize(request)
        customer = request.match_info["customer"]
        sku = check_id("sku", request.query.get("sku", ""))
        quantity = int_param(request, "quantity", None, 1, 2**31 - 1)
        return _json(await self.run(lambda: self._credit_impact(tenant, customer, sku, quantity)))

    def _credit_impact(self, tenant: str, customer: str, sku: str, quantity: int) -> dict[str, Any]:
        state = self.load_customer(tenant, customer)
        record = self.readmodels.availability(tenant, sku)
        entry = _catalog_price(record) if record is not None else None
        if entry is None:
            raise HttpError(404, f"SKU {sku} is not known")
        price, _ = customer_core.price_line(state, sku, entry, self.tier_discounts(tenant))
        value = price * quantity
        available = state.available_credit()
        return {
            "customer_id": state.customer_id,
            "sku": sku,
            "quantity": quantity,
            "total_value": _money(value),
            "credit_limit": _money(state.credit_limit),
            "current_credit_used": _money(state.credit_used),
            "open_exposure": _money(state.open_exposure),
            "available_credit": _money(available),
            "credit_impact": _money(value),
            "can_process_order": value <= available,
        }

    async def sku_availability(self, request: web.Request) -> web.Response:
        tenant = self.authorize(request)
        sku = request.match_info["sku"]
        record = await self.run(lambda: self.readmodels.availability(tenant, sku))
        if record is None:
            raise HttpError(404, f"SKU {sku} has no stock record")
        return _json(record)

    async def order_status(self, request: web.Request) -> web.Response:
        tenant = self.authorize(request)
        order = request.match_info["order"]
        return _json(await self.run(lambda: self._order(tenant, order)))

    def _order(self, tenant: str, order: str) -> dict[str, Any]:
        saga = self.readmodels.order_saga(tenant, order)
        if saga is None:
            raise HttpError(404, f"order {order} is not known")
        if not saga.placed:
            raise HttpError(404, f"order {order} is not known (only a cancel was seen)")
        return order_body(saga)

    async def backorder_report(self, request: web.Request) -> web.Response:
        tenant = self.authorize(request)
        report = await self.run(lambda: self._backorder_report(tenant))
        return _json({"tenant_id": tenant, **report, "as_of": datetime.now(UTC).isoformat()})

    def _backorder_report(self, tenant: str) -> dict[str, Any]:
        return reports.merge_backorder_partials([reports.backorder_partial(self.readmodels.order_sagas(tenant))])

    async def opportunity_report(self, request: web.Request) -> web.Response:
        tenant = self.authorize(request)

        def build() -> dict[str, Any]:
            partial = reports.opportunity_partial(self.readmodels.opportunity_sagas(tenant))
            return reports.merge_opportunity_partials([partial])

        report = await self.run(build)
        return _json({"tenant_id": tenant, **report, "as_of": datetime.now(UTC).isoformat()})

    async def process_backorders(self, request: web.Request) -> web.Response:
        """Ask every SKU partition to give free stock to the tenant's backorder queues again (one
        ProcessBackorders to each partition of sku_commands, on its partition key), then report which of the
        backorders pending before that filled and which still wait (the queues also fill by themselves as
        stock arrives)."""
        tenant = self.authorize(request)
        before = await self.run(lambda: self._backorder_report(tenant))
        pending = set(before["ids_by_status"].get("PENDING", []))
        now = datetime.now(UTC)
        command = ProcessBackorders(
            command_id=event_id("ProcessBackorders", tenant, now.isoformat()), tenant_id=tenant, issued_at=now
        )
        value = wrap("ProcessBackorders", command, None)
        keys = partition_keys(self.sku_partitions)

        def send_all() -> None:
            for partition, key in enumerate(keys):
                self.send(self.sku_commands, key, value, partition)

        await self.run(send_all)
        after = before
        still = set(pending)
        deadline = time.monotonic() + self.settle_s
        while still and time.monotonic() < deadline:  # let the fills travel back to the sagas and their views
            await asyncio.sleep(max(min(PROCESS_POLL_S, deadline - time.monotonic()), 0))
            after = await self.run(lambda: self._backorder_report(tenant))
            still = pending & set(after["ids_by_status"].get("PENDING", []))
        fulfilled = sorted(pending & set(after["ids_by_status"].get("FULFILLED", [])))
        return _json(
            {
                "processed_count": len(pending),
                "fulfilled_count": len(fulfilled),
                "still_pending_count": len(still),
                "fulfilled_backorders": fulfilled,
                "still_pending_backorders": sorted(still),
            }
        )


def _catalog_price(record: dict[str, Any]) -> customer_core.CatalogPrice | None:
    """The catalog entry an availability record carries; None until the SKU's product is known."""
    if record.get("unit_price") is None:
        return None
    return customer_core.CatalogPrice(
        description=record.get("description") or "",
        unit_price=Decimal(str(record["unit_price"])),
        unit_cost=Decimal(0),  # not on the view, and pricing does not use it
        lead_time_days=record.get("lead_time_days") or 0,
    )


def order_body(saga: OrderSaga) -> dict[str, Any]:
    return {
        "order_id": saga.order_id,
        "order_number": saga.order_number,
        "customer_id": saga.customer_id,
        "status": saga.status,
        "priority": saga.priority,
        "order_value": _money(saga.order_value),
        "reserved_until": saga.reserved_until.isoformat() if saga.reserved_until else None,
        "lines": [
            {
                "line_id": ln.line_id,
                "sku": ln.sku,
                "quantity": ln.quantity,
                "location": ln.location,
                "customer_price": str(ln.customer_price) if ln.customer_price is not None else None,
                "issued": saga.consumed.get(ln.line_id, 0),
                "reserved": ln.quantity - saga.consumed.get(ln.line_id, 0) if saga.status in ALLOCATED else 0,
            }
            for ln in saga.lines
        ],
        "backorder": {
            "backorder_id": saga.backorder_id,
            "waiting": list(saga.waiting),
            "items": [i.model_dump(mode="json") for i in saga.backorder_items],
        }
        if saga.backorder_id
        else None,
        "fulfillments": [
            {
                "fulfillment_id": f.fulfillment_id,
                "status": f.status,
                "accepted": f.accepted,
                "reason": f.reason,
                "items": [i.model_dump(mode="json") for i in f.items],
                "shipping_method": f.shipping_method,
                "tracking_number": f.tracking_number,
                "carrier": f.carrier,
                "estimated_delivery": f.estimated_delivery,
                "history": [{"status": s, "at": at.isoformat()} for s, at in f.history],
            }
            for f in saga.fulfillments.values()
        ],
        "last_event": saga.last_event.model_dump(mode="json") if saga.last_event else None,
    }


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guard(max_concurrent: int, timeout_s: float) -> Any:
    """Errors as JSON; 503 + Retry-After for a failure, a timeout or too many requests; metrics."""
    limit = asyncio.Semaphore(max_concurrent)

    async def answer(request: web.Request, handler: Handler, route: str) -> web.StreamResponse:
        try:
            if request.path in OPS_PATHS:  # probes and scrapes are answered however busy the API is
                async with asyncio.timeout(timeout_s):
                    return await handler(request)
            if limit.locked():
                return _unavailable(f"this worker is answering {max_concurrent} requests already; try again")
            async with limit, asyncio.timeout(timeout_s):
                return await handler(request)
        except HttpError as exc:
            return _json({"error": exc.message}, exc.status)
        except web.HTTPException as exc:  # the router's 404 and 405, as JSON
            if exc.status >= 500:
                return _unavailable(exc.reason)
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return _json({"error": exc.reason.lower()}, exc.status, allow)
        except TimeoutError:
            log.warning("%s %s took longer than %g s", request.method, route, timeout_s)
            return _unavailable(f"the request took longer than {timeout_s:g} s; try again")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s %s failed", request.method, route)
            return _unavailable("the request failed on this worker; try again")

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        status = "499"  # unless answered: the client went away and the request was cancelled
        try:
            response = await answer(request, handler, route)
            status = str(response.status)
            return response
        finally:
            HTTP_REQUESTS.labels(route, status).inc()
            HTTP_SECONDS.labels(route).observe(time.perf_counter() - started)

    return guard


def make_app(
    settings: Settings,
    topology: Topology,
    readmodels: ReadModels,
    send: Send,
    is_running: Callable[[], bool],
    *,
    process_settle_s: float | None = None,
) -> web.Application:
    """The worker's HTTP app: /v1 (answered from `readmodels`), /v1/openapi.json, /metrics, /healthz and
    /readyz. `send(topic name, key, value, partition)` produces one record (process-backorders)."""
    max_concurrent = int(getattr(settings, "http_max_concurrent", 64))
    timeout_s = float(getattr(settings, "http_timeout_s", 5.0))
    settle_s = process_settle_s if process_settle_s is not None else min(PROCESS_SETTLE_S, timeout_s * 0.6)
    executor = ThreadPoolExecutor(max_workers=max(1, min(max_concurrent, 32)), thread_name_prefix="http-view")
    api = Api(settings, topology, readmodels, send, executor, settle_s)
    app = web.Application(middlewares=[_guard(max_concurrent, timeout_s)])
    openapi = OPENAPI.read_bytes()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=openapi, content_type="application/json")

    async def shutdown(app: web.Application) -> None:
        executor.shutdown(wait=False, cancel_futures=True)

    router = app.router
    router.add_get(ROUTES["inventory"], api.customer_inventory)
    router.add_get(ROUTES["credit_impact"], api.credit_impact)
    router.add_get(ROUTES["availability"], api.sku_availability)
    router.add_get(ROUTES["order"], api.order_status)
    router.add_get(ROUTES["backorder_report"], api.backorder_report)
    router.add_get(ROUTES["opportunity_report"], api.opportunity_report)
    router.add_post(ROUTES["process_backorders"], api.process_backorders)
    router.add_get("/v1/openapi.json", openapi_json)
    router.add_get("/openapi.json", openapi_json)
    add_ops_routes(app, readmodels, is_running)
    app.on_cleanup.append(shutdown)
    return app


class HttpServer(threading.Thread):
    """The app on its own event loop, in a daemon thread; `port` is where it listens."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        super().__init__(name="http", daemon=True)
        self.app = app
        self.host = host
        self.port = port
        self.listening = threading.Event()
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        try:
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            self.port = int(runner.addresses[0][1])
        except BaseException as exc:
            self.error = exc
            self.listening.set()
            await runner.cleanup()
            return
        self.listening.set()
        try:
            await self._stopped.wait()
        finally:
            await runner.cleanup()

    def stop(self, timeout: float = 10.0) -> None:
        if self.loop is not None and self._stopped is not None:
            self.loop.call_soon_threadsafe(self._stopped.set)
        self.join(timeout)


def serve(settings: Settings, app: web.Application, timeout: float = 30.0) -> HttpServer:
    """Run `app` on settings.web_host:settings.web_port in a daemon thread; return once it listens (raise
    what stopped it otherwise, e.g. the port in use)."""
    server = HttpServer(app, settings.web_host, settings.web_port)
    server.start()
    if not server.listening.wait(timeout):
        raise TimeoutError(f"the HTTP server did not start listening within {timeout:g} s")
    if server.error is not None:
        raise RuntimeError(
            f"the HTTP server could not listen on {settings.web_host}:{settings.web_port}: {server.error}"
        ) from server.error
    log.info("HTTP API listening on %s:%d", settings.web_host, server.port)
    return server
