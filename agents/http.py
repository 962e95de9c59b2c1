"""The HTTP API under /v1: customer inventory views, credit impact, SKU availability, order status and
reports, for CRM front ends and sales reps. Every request is authenticated with a bearer token bound to one
tenant; a request for a key another worker owns is answered by that worker (routed); nothing dumps tables.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from faust.exceptions import SameNode
from faust.web import Request, Response, View

from agents.app import app, settings, topics, topology
from agents.availability_cache import AvailabilityCache
from agents.core import customer as customer_core
from agents.core import reports
from agents.core.commands import ProcessBackorders
from agents.core.ids import entity_key, event_id
from agents.core.opportunity import OpportunitySaga
from agents.core.saga import OrderSaga
from agents.envelope import wrap
from agents.metrics import HTTP_REQUESTS, HTTP_SECONDS
from agents.settings import token_tenants
from agents.streams.customers import CATALOG_PREFIX, customer_store, customers, tier_discounts
from agents.streams.ledger import ledger_store
from agents.streams.opportunities import opportunities
from agents.streams.orders import load_saga, sagas

ID = re.compile(r"^[^|\x00-\x1f/]{1,200}$")
TENANT = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
OPENAPI = Path(__file__).resolve().parent / "openapi.json"
TOKENS = token_tenants(settings)
availability_cache = AvailabilityCache(settings.kafka_bootstrap, topology["availability"].name)


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def authorize(request: Request, tenant: str) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HttpError(401, "missing bearer token (Authorization: Bearer <token>)")
    owner = next((t for known, t in TOKENS.items() if hmac.compare_digest(known.encode(), token.encode())), None)
    if owner is None:
        raise HttpError(401, "unknown token")
    if owner != tenant:
        raise HttpError(403, f"this token may not read tenant {tenant}")


def check_id(name: str, value: str, pattern: re.Pattern[str] = ID) -> str:
    if not pattern.match(value):
        raise HttpError(400, f"{name} {value!r} is not a valid identifier")
    return value


def int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise HttpError(400, f"query parameter {name} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise HttpError(400, f"{name} must be between {low} and {high}, got {value}")
    return value


Handler = Callable[[View, Request, dict[str, str]], Awaitable[Response]]


def api(
    route: str, table: str | None = None, key_of: Callable[[dict[str, str]], bytes] | None = None
) -> Callable[[Handler], type[View]]:
    """A GET/POST view with auth, validation, routing to the key's owner, errors as JSON and metrics."""

    def decorate(handler: Handler) -> type[View]:
        async def serve(view: View, request: Request, **params: str) -> Response:
            started = time.perf_counter()
            status = 500
            try:
                tenant = check_id("tenant", params["tenant"], TENANT)
                authorize(request, tenant)
                for name, value in params.items():
                    if name != "tenant":
                        check_id(name, value)
                if table is not None and key_of is not None:
                    try:
                        response = await app.router.route_req(table, key_of(params), view.web, request)
                        status = response.status
                        return response
                    except SameNode:
                        pass
                response = await handler(view, request, params)
                status = response.status
                return response
            except HttpError as exc:
                status = exc.status
                return view.json({"error": exc.message}, status=exc.status)
            finally:
                HTTP_REQUESTS.labels(route, str(status)).inc()
                HTTP_SECONDS.labels(route).observe(time.perf_counter() - started)

        class Page(View):
            async def get(self, request: Request, **params: str) -> Response:
                return await serve(self, request, **params)

            async def post(self, request: Request, **params: str) -> Response:
                return await serve(self, request, **params)

        Page.__name__ = handler.__name__
        app.page(route)(Page)
        return Page

    return decorate


def _customer_key(p: dict[str, str]) -> bytes:
    return entity_key(p["tenant"], p["customer"])


def _load_customer(params: dict[str, str]) -> customer_core.CustomerState:
    state = customer_store.peek(_customer_key(params))
    if state is None or not state.known:
        raise HttpError(404, f"customer {params['customer']} is not known")
    return state


def _catalog(tenant: str) -> dict[str, customer_core.CatalogPrice]:
    """The tenant's catalog from this worker's customer partitions (products are broadcast to each)."""
    prefix = CATALOG_PREFIX + f"{tenant}|".encode()
    found: dict[str, customer_core.CatalogPrice] = {}
    for db in customers.data._dbs.values():
        for key, raw in db.items(from_key=prefix):
            if not key.startswith(prefix):
                break
            found.setdefault(key[len(prefix) :].decode(), customer_core.CatalogPrice.model_validate_json(raw))
    return found


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


@api("/v1/tenants/{tenant}/customers/{customer}/inventory", "customers", _customer_key)
async def customer_inventory(view: View, request: Request, params: dict[str, str]) -> Response:
    page = int_param(request, "page", 1, 1, 1_000_000)
    page_size = int_param(request, "page_size", 50, 1, 500)
    state = _load_customer(params)
    discounts = tier_discounts(state.tenant_id)
    stock = availability_cache.skus(state.tenant_id)
    items = []
    for sku, entry in sorted(_catalog(state.tenant_id).items()):
        price, discount = customer_core.price_line(state, sku, entry, discounts)
        locations = (stock.get(sku) or {}).get("locations") or [{"location": "", "available": 0}]
        for loc in locations:
            items.append(
                {
                    "sku": sku,
                    "description": entry.description,
                    "available_quantity": loc["available"],
                    "reserved_quantity": customer_core.reserved_for(state, sku),
                    "unit_price": _money(entry.unit_price),
                    "customer_price": _money(price),
                    "discount_percentage": str(discount),
                    "lead_time": entry.lead_time_days,
                    "location": loc["location"],
                }
            )
    total = sum(Decimal(i["customer_price"]) * i["available_quantity"] for i in items)
    first = (page - 1) * page_size
    cache_at = availability_cache.last_message_at
    return view.json(
        {
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
                "availability_messages_behind": availability_cache.behind(),
                "availability_last_read_at": datetime.fromtimestamp(cache_at, UTC).isoformat() if cache_at else None,
            },
        }
    )


@api("/v1/tenants/{tenant}/customers/{customer}/credit-impact", "customers", _customer_key)
async def credit_impact(view: View, request: Request, params: dict[str, str]) -> Response:
    sku = check_id("sku", request.query.get("sku", ""))
    quantity = int_param(request, "quantity", None, 1, 2**31 - 1)
    state = _load_customer(params)
    entry = _catalog(state.tenant_id).get(sku)
    if entry is None:
        raise HttpError(404, f"SKU {sku} is not known")
    price, _ = customer_core.price_line(state, sku, entry, tier_discounts(state.tenant_id))
    value = price * quantity
    available = state.available_credit()
    return view.json(
        {
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
    )


@api("/v1/tenants/{tenant}/skus/{sku}/availability", "sku_ledger", lambda p: entity_key(p["tenant"], p["sku"]))
async def sku_availability(view: View, request: Request, params: dict[str, str]) -> Response:
    key = entity_key(params["tenant"], params["sku"])
    ledger = ledger_store.peek(key)
    if ledger is None:
        raise HttpError(404, f"SKU {params['sku']} has no stock record")
    from agents.core.ledger import availability

    return view.json(availability(ledger).model_dump(mode="json"))


@api("/v1/tenants/{tenant}/orders/{order}", "order_sagas", lambda p: entity_key(p["tenant"], p["order"]))
async def order_status(view: View, request: Request, params: dict[str, str]) -> Response:
    key = entity_key(params["tenant"], params["order"])
    if sagas.get(key) is None:
        raise HttpError(404, f"order {params['order']} is not known")
    saga = load_saga(key)
    if not saga.placed:
        raise HttpError(404, f"order {params['order']} is not known (only a cancel was seen)")
    body = {
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
                "reserved": ln.quantity - saga.consumed.get(ln.line_id, 0)
                if saga.status in ("INVENTORY_ALLOCATED", "FULFILLMENT_IN_PROGRESS", "SHIPPED", "DELIVERED")
                else 0,
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
    return view.json(body)


@app.page("/v1/openapi.json")
class OpenApi(View):
    async def get(self, request: Request) -> Response:
        return self.json(json.loads(OPENAPI.read_text()))


@app.task  # type: ignore[untyped-decorator]
async def start_availability_cache() -> None:
    availability_cache.start()


def _local(tenant: str, topic_id: str, table: Any, model: Any) -> list[Any]:
    """The tenant's entities in the partitions of `topic_id` this worker actively owns (not standbys)."""
    name = topics[topic_id].get_topic_name()
    prefix = f"{tenant}|".encode()
    found = []
    for tp in app.consumer.assignment():
        if tp.topic != name:
            continue
        for key, raw in table.data._db_for_partition(tp.partition).items(from_key=prefix):
            if not key.startswith(prefix):
                break
            found.append(model.model_validate_json(raw))
    return found


def _local_sagas(tenant: str) -> list[OrderSaga]:
    return _local(tenant, "order_commands", sagas, OrderSaga)


def _local_opportunities(tenant: str) -> list[OpportunitySaga]:
    return _local(tenant, "opportunity_commands", opportunities, OpportunitySaga)


async def _gather(request: Request, path: str, local: Callable[[], dict[str, Any]]) -> list[dict[str, Any]]:
    """Partial aggregates from every worker of the fleet (this one answers from its own partitions)."""
    me = str(app.conf.canonical_url).rstrip("/")
    hosts = {str(h).rstrip("/") for h in app.router.table_metadata("order_sagas")} | {me}
    parts = []
    for host in sorted(hosts):
        if host == me:
            parts.append(local())
            continue
        headers = {"Authorization": request.headers.get("Authorization", "")}
        async with app.http_client.get(f"{host}{path}", headers=headers) as response:
            if response.status != 200:
                raise HttpError(503, f"worker {host} could not answer ({response.status}); try again")
            parts.append(await response.json())
    return parts


@api("/v1/internal/tenants/{tenant}/reports/backorders/partial")
async def backorder_report_partial(view: View, request: Request, params: dict[str, str]) -> Response:
    return view.json(reports.backorder_partial(_local_sagas(params["tenant"])))


async def _backorder_report(request: Request, tenant: str) -> dict[str, Any]:
    parts = await _gather(
        request,
        f"/v1/internal/tenants/{tenant}/reports/backorders/partial",
        lambda: reports.backorder_partial(_local_sagas(tenant)),
    )
    return reports.merge_backorder_partials(parts)


@api("/v1/tenants/{tenant}/reports/backorders")
async def backorder_report(view: View, request: Request, params: dict[str, str]) -> Response:
    report = await _backorder_report(request, params["tenant"])
    return view.json({"tenant_id": params["tenant"], **report, "as_of": datetime.now(UTC).isoformat()})


@api("/v1/tenants/{tenant}/backorders/process")
async def process_backorders(view: View, request: Request, params: dict[str, str]) -> Response:
    """Ask every SKU partition to give free stock to the tenant's queues again, then report which
    backorders that filled and which still wait (the queues also fill by themselves as stock arrives)."""
    if request.method != "POST":
        raise HttpError(405, "use POST")
    tenant = params["tenant"]
    before = await _backorder_report(request, tenant)
    pending = set(before["ids_by_status"].get("PENDING", []))
    now = datetime.now(UTC)
    command = ProcessBackorders(
        command_id=event_id("ProcessBackorders", tenant, now.isoformat()), tenant_id=tenant, issued_at=now
    )
    for partition in range(topology["sku_commands"].partitions):
        await topics["sku_commands"].send(
            key=b"\x00process|" + tenant.encode(), value=wrap("ProcessBackorders", command, None), partition=partition
        )
    after = before
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # let the fills travel back to the order sagas
        await asyncio.sleep(0.5)
        after = await _backorder_report(request, tenant)
    still = sorted(pending & set(after["ids_by_status"].get("PENDING", [])))
    fulfilled = sorted(pending & set(after["ids_by_status"].get("FULFILLED", [])))
    return view.json(
        {
            "processed_count": len(pending),
            "fulfilled_count": len(fulfilled),
            "still_pending_count": len(still),
            "fulfilled_backorders": fulfilled,
            "still_pending_backorders": still,
        }
    )


@api("/v1/internal/tenants/{tenant}/reports/opportunities/partial")
async def opportunity_report_partial(view: View, request: Request, params: dict[str, str]) -> Response:
    return view.json(reports.opportunity_partial(_local_opportunities(params["tenant"])))


@api("/v1/tenants/{tenant}/reports/opportunities")
async def opportunity_report(view: View, request: Request, params: dict[str, str]) -> Response:
    tenant = params["tenant"]
    parts = await _gather(
        request,
        f"/v1/internal/tenants/{tenant}/reports/opportunities/partial",
        lambda: reports.opportunity_partial(_local_opportunities(tenant)),
    )
    return view.json(
        {"tenant_id": tenant, **reports.merge_opportunity_partials(parts), "as_of": datetime.now(UTC).isoformat()}
    )
