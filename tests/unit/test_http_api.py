"""The HTTP API (agents/http.py, agents/ops.py) over read models filled with ReadModels.apply(), no Kafka:
auth, ids, every endpoint's body, the 503s (failure, timeout, concurrency bound), process-backorders'
records, readiness and metrics. The view records are made by the producers' own functions
(agents/views.py, SkuAvailability as the ledger publishes it), so these tests read what the fleet writes."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from yarl import URL

from agents import views
from agents.codec import encode_json
from agents.core.commands import ProcessBackorders, SoftLine
from agents.core.customer import CustomerState, PriceOverride, reserved_for
from agents.core.events import BackorderItem, LocationAvailability, OpportunityItem, ShippedItem, SkuAvailability
from agents.core.fulfillment import Fulfillment
from agents.core.ids import compose
from agents.core.opportunity import OpportunitySaga
from agents.core.saga import OrderSaga, SagaLine
from agents.envelope import Envelope
from agents.http import make_app, serve
from agents.readmodels import ReadModels
from agents.runtime.partitions import partition_keys, partition_of
from agents.settings import Settings
from agents.topology import Topology, load_topology

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
TOKENS = "tok-a=ta,tok-b=tb"
A = {"Authorization": "Bearer tok-a"}
B = {"Authorization": "Bearer tok-b"}
ORDER_ROUTE = "/v1/tenants/{tenant}/orders/{order}"
R = TypeVar("R")
RM = TypeVar("RM", bound=ReadModels)


def settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **{"api_tokens": TOKENS, **overrides})


TOPOLOGY: Topology = load_topology(settings().topics_file)
SKU_TOPIC = TOPOLOGY["sku_commands"]


# ---- view records, as the processors publish them ---------------------------------------------------------


def availability(
    tenant: str,
    sku: str,
    stock: dict[str, tuple[int, int]],
    unit_price: str | None = "100.00",
    version: int = 1,
) -> tuple[str, bytes, bytes]:
    """stock: location -> (on hand, available)."""
    record = SkuAvailability(
        event_id=f"av-{tenant}-{sku}-{version}",
        tenant_id=tenant,
        occurred_at=T0,
        causation_id="cause",
        sku=sku,
        description=f"product {sku}" if unit_price else None,
        unit_price=Decimal(unit_price) if unit_price else None,
        lead_time_days=4 if unit_price else None,
        locations=tuple(
            LocationAvailability(
                location=loc,
                on_hand=on_hand,
                reserved=on_hand - free,
                soft_allocated=0,
                backordered=0,
                available=free,
            )
            for loc, (on_hand, free) in stock.items()
        ),
        version=version,
        as_of=T0,
    )
    return "availability", f"{tenant}:{sku}".encode(), encode_json(record)


def customer(tenant: str, customer_id: str, **fields: Any) -> CustomerState:
    return CustomerState(
        tenant_id=tenant,
        customer_id=customer_id,
        known=True,
        name=f"Customer {customer_id}",
        version=3,
        updated_at=T0,
        **fields,
    )


def saga(tenant: str, order_id: str, **fields: Any) -> OrderSaga:
    body: dict[str, Any] = {
        "placed": True,
        "customer_id": "C1",
        "order_number": f"N-{order_id}",
        "status": "INVENTORY_ALLOCATED",
        "lines": (SagaLine(line_id="L1", sku="S1", quantity=1, location="WH1", customer_price=Decimal("70")),),
        **fields,
    }
    return OrderSaga(tenant_id=tenant, order_id=order_id, **body)


def backordered(
    tenant: str, order_id: str, priority: str, status: str, filled_after_s: float | None = None
) -> OrderSaga:
    line = SagaLine(line_id="L1", sku="S3", quantity=5, location="WH1", customer_price=Decimal("95.00"))
    return saga(
        tenant,
        order_id,
        status="BACKORDERED" if status == "PENDING" else "INVENTORY_ALLOCATED",
        priority=priority,
        lines=(line,),
        backorder_id=f"BO-{order_id}",
        backorder_status=status,
        backorder_items=(BackorderItem(sku="S3", location="WH1", quantity=5, line_id="L1"),),
        waiting=("S3|L1",) if status == "PENDING" else (),
        backordered_at=T0,
        backorder_filled_at=T0 + timedelta(seconds=filled_after_s) if filled_after_s is not None else None,
    )


def opportunity(tenant: str, opportunity_id: str, stage: str, status: str, held: dict[str, int]) -> OpportunitySaga:
    return OpportunitySaga(
        tenant_id=tenant,
        opportunity_id=opportunity_id,
        known=True,
        customer_id="C1",
        stage=stage,
        status=status,
        items=tuple(
            OpportunityItem(sku=sku, quantity=max(q, 1), location="WH1", unit_price=Decimal("90.00"))
            for sku, q in held.items()
        ),
        holds={sku: (SoftLine(location="WH1", quantity=q),) for sku, q in held.items() if q},
    )


def feed(rm: ReadModels, records: Iterable[tuple[str, bytes, bytes]]) -> None:
    for topic_id, key, value in records:
        assert rm.apply(topic_id, key, value), (topic_id, key)


C1 = customer(
    "ta",
    "C1",
    tier="GOLD",
    credit_limit=Decimal(5000),
    credit_used=Decimal(100),
    exposures={"O1": Decimal(400)},
    holds={"O1": {"S1": 3, "S2": 2}},
    prices={
        "S1": PriceOverride(customer_price=Decimal("70.00")),
        "S2": PriceOverride(discount_percentage=Decimal(12)),
    },
)
O1 = saga(
    "ta",
    "O1",
    order_value=Decimal("386.00"),
    reserved_until=T0 + timedelta(minutes=15),
    lines=(
        SagaLine(line_id="L1", sku="S1", quantity=3, location="WH1", customer_price=Decimal("70.00")),
        SagaLine(line_id="L2", sku="S2", quantity=2, location="WH1", customer_price=Decimal("88.00")),
    ),
    consumed={"L1": 1},
    fulfillments={
        "F1": Fulfillment(
            fulfillment_id="F1",
            accepted=True,
            status="SHIPPED",
            items=(ShippedItem(sku="S1", quantity=1, location="WH1"),),
            tracking_number="TN-1",
            carrier="UPS",
            history=(("IN_PROGRESS", T0), ("SHIPPED", T0 + timedelta(hours=1))),
        )
    },
)
ODD_IDS = ["A/B", "100%", "{x}", "Ωmega €注文", "a?b#c", "%2F", " spaced ", "x" * 200]


def world(rm: RM) -> RM:
    """Tenant ta: SKUs S1..S4 (S4 a product without stock), S5 stock without a product; customers C1 (GOLD,
    overrides, open order O1) and C2 (BRONZE); orders, backorders, opportunities. Tenant tb: its own SKU."""
    feed(
        rm,
        [
            availability("ta", "S1", {"WH1": (40, 37), "WH2": (10, 10)}),
            availability("ta", "S2", {"WH1": (40, 38)}),
            availability("ta", "S3", {"WH1": (40, 40)}),
            availability("ta", "S4", {}),
            availability("ta", "S5", {"WH1": (9, 9)}, unit_price=None),
            availability("tb", "TB1", {"WH1": (1, 1)}),
            availability("ta", "S/1", {"WH1": (7, 7)}),
            *views.customer_views(None, C1),
            *views.customer_views(None, customer("ta", "C2", tier="BRONZE", credit_limit=Decimal(100))),
            *views.customer_views(None, customer("ta", "C/1 Ω", tier="PLATINUM", credit_limit=Decimal(1))),
            *views.customer_views(None, customer("tb", "C1", tier="SILVER")),
            views.order_view(O1),
            views.order_view(saga("ta", "cancel-only", placed=False, status="CANCELLED")),
            views.order_view(backordered("ta", "B-low", "LOW", "PENDING")),
            views.order_view(backordered("ta", "B-urgent", "URGENT", "FULFILLED", filled_after_s=30)),
            views.order_view(backordered("ta", "B-high", "HIGH", "PENDING")),
            views.order_view(backordered("tb", "B-tb", "LOW", "PENDING")),
            *(views.order_view(saga("ta", odd)) for odd in ODD_IDS),
            views.opportunity_view(opportunity("ta", "OPP1", "PROPOSAL", "ALLOCATED", {"S1": 5})),
            views.opportunity_view(opportunity("ta", "OPP2", "LEAD", "REJECTED", {"S1": 0})),
            views.opportunity_view(opportunity("ta", "OPP3", "NEGOTIATION", "ALLOCATED", {"S2": 2})),
            views.opportunity_view(OpportunitySaga(tenant_id="ta", opportunity_id="OPP-unknown")),
            views.opportunity_view(opportunity("tb", "OPP-tb", "LEAD", "ALLOCATED", {"TB1": 1})),
        ],
    )
    return rm


class Recorder:
    """The runtime's `send`: the records process-backorders produces."""

    def __init__(self, then: Callable[[], None] | None = None) -> None:
        self.records: list[tuple[str, bytes, bytes, int]] = []
        self.then = then

    def __call__(self, topic: str, key: bytes, value: bytes, partition: int) -> None:
        self.records.append((topic, key, value, partition))
        if self.then is not None and len(self.records) == SKU_TOPIC.partitions:
            self.then()


def app_for(
    rm: ReadModels | None = None,
    send: Callable[[str, bytes, bytes, int], None] | None = None,
    running: bool = True,
    config: Settings | None = None,
    settle_s: float | None = 0.2,
) -> web.Application:
    rm = rm if rm is not None else world(ReadModels(settings(), TOPOLOGY))
    return make_app(config or settings(), TOPOLOGY, rm, send or Recorder(), lambda: running, process_settle_s=settle_s)


def with_client(app: web.Application, scenario: Callable[[TestClient[Any, Any]], Awaitable[R]]) -> R:
    async def main() -> R:
        async with TestClient(TestServer(app)) as client:
            return await scenario(client)

    return asyncio.run(main())


def fetch(
    app: web.Application, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, Any, dict[str, str]]:
    """One request; `path` is sent as written (already percent-encoded)."""

    async def scenario(client: TestClient[Any, Any]) -> tuple[int, Any, dict[str, str]]:
        response = await client.request(method, URL(path, encoded=True), headers=headers)
        text = await response.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        return response.status, body, dict(response.headers)

    return with_client(app, scenario)


def get(path: str, headers: dict[str, str] | None = A, app: web.Application | None = None) -> tuple[int, Any]:
    status, body, _ = fetch(app or app_for(), path, headers)
    return status, body


def samples(route: str, status: str) -> float:
    return REGISTRY.get_sample_value("inventory_http_requests_total", {"route": route, "status": status}) or 0.0


# ---- auth, ids and parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "status", "message"),
    [
        ("/v1/tenants/ta/skus/S1/availability", None, 401, "missing bearer token"),
        ("/v1/tenants/ta/skus/S1/availability", {"Authorization": "Basic tok-a"}, 401, "missing bearer token"),
        ("/v1/tenants/ta/skus/S1/availability", {"Authorization": "Bearer "}, 401, "missing bearer token"),
        ("/v1/tenants/ta/skus/S1/availability", {"Authorization": "Bearer nope"}, 401, "unknown token"),
        ("/v1/tenants/ta/skus/S1/availability", {"Authorization": "Bearer tok-a2"}, 401, "unknown token"),
        ("/v1/tenants/ta/skus/S1/availability", B, 403, "may not read tenant ta"),
        ("/v1/tenants/tb/customers/C1/inventory", A, 403, "may not read tenant tb"),
        ("/v1/tenants/tb/reports/backorders", A, 403, "may not read tenant tb"),
        ("/v1/tenants/ta/orders/O1", {"Authorization": "bearer tok-a"}, 200, None),
    ],
)
def test_every_v1_request_needs_a_token_of_its_tenant(
    path: str, headers: dict[str, str] | None, status: int, message: str | None
) -> None:
    got, body = get(path, headers)
    assert got == status, body
    if message is not None:
        assert message in body["error"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/tenants/ta/customers/C1/credit-impact?sku=S1&quantity=many", "whole number"),
        ("/v1/tenants/ta/customers/C1/credit-impact?sku=S1", "quantity is required"),
        ("/v1/tenants/ta/customers/C1/credit-impact?sku=S1&quantity=0", "quantity must be between"),
        ("/v1/tenants/ta/customers/C1/credit-impact?quantity=1", "sku '' is not a valid identifier"),
        ("/v1/tenants/ta/customers/C1/credit-impact?sku=S%01&quantity=1", "is not a valid identifier"),
        ("/v1/tenants/ta/customers/C1/inventory?page_size=100000", "page_size must be between"),
        ("/v1/tenants/ta/customers/C1/inventory?page=0", "page must be between"),
        ("/v1/tenants/ta/customers/C%07/inventory", "customer 'C\\x07' is not a valid identifier"),
        ("/v1/tenants/ta/orders/O%7F", "is not a valid identifier"),  # DEL
        ("/v1/tenants/ta/orders/O%C2%85", "is not a valid identifier"),  # a C1 control (NEL)
        (f"/v1/tenants/ta/orders/{'x' * 201}", "is not a valid identifier"),
        ("/v1/tenants/t%20a/orders/O1", "not a valid tenant id"),
        ("/v1/tenants/t%7Ca/orders/O1", "not a valid tenant id"),
        (f"/v1/tenants/{'t' * 65}/orders/O1", "not a valid tenant id"),
    ],
)
def test_bad_ids_and_parameters_are_400(path: str, message: str) -> None:
    status, body = get(path)
    assert status == 400, body
    assert message in body["error"]


def test_an_invalid_tenant_is_400_before_auth_and_other_ids_are_checked_after_it() -> None:
    assert get("/v1/tenants/t%20a/orders/O1", None)[0] == 400
    assert get("/v1/tenants/ta/orders/O%07", None)[0] == 401
    assert get("/v1/tenants/ta/orders/O%07", B)[0] == 403


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/tenants/ta/customers/C404/inventory", "customer C404 is not known"),
        ("/v1/tenants/ta/customers/C404/credit-impact?sku=S1&quantity=1", "customer C404 is not known"),
        ("/v1/tenants/ta/customers/C1/credit-impact?sku=S404&quantity=1", "SKU S404 is not known"),
        ("/v1/tenants/ta/customers/C1/credit-impact?sku=S5&quantity=1", "SKU S5 is not known"),  # no product
        ("/v1/tenants/ta/customers/C1/credit-impact?sku=TB1&quantity=1", "SKU TB1 is not known"),  # tb's
        ("/v1/tenants/ta/skus/S404/availability", "SKU S404 has no stock record"),
        ("/v1/tenants/ta/skus/TB1/availability", "SKU TB1 has no stock record"),  # tb's
        ("/v1/tenants/ta/orders/O404", "order O404 is not known"),
        ("/v1/tenants/ta/orders/B-tb", "order B-tb is not known"),  # tb's
        ("/v1/tenants/ta/orders/cancel-only", "only a cancel was seen"),
        (f"/v1/tenants/ta/orders/{'y' * 200}", "is not known"),  # 200 characters: valid, unknown
    ],
)
def test_unknown_entities_are_404_and_no_tenant_sees_another(path: str, message: str) -> None:
    status, body = get(path)
    assert status == 404, body
    assert message in body["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/table/sku_ledger/",
        "/v1/tenants/ta/skus/",
        "/v1/internal/tenants/ta/reports/backorders/partial",
        "/v1/tenants/ta/orders/",
    ],
)
def test_no_table_dumps_nor_partial_endpoints(path: str) -> None:
    status, body = get(path)
    assert status == 404
    assert body == {"error": "not found"}


def test_a_wrong_method_is_405_in_json() -> None:
    status, body, headers = fetch(app_for(), "/v1/tenants/ta/backorders/process", A, method="GET")
    assert (status, body, headers["Allow"]) == (405, {"error": "method not allowed"}, "POST")
    status, body, _ = fetch(app_for(), "/v1/tenants/ta/orders/O1", A, method="POST")
    assert status == 405


# ---- bodies ------------------------------------------------------------------------------------------------


def test_customer_inventory_prices_every_sku_of_the_catalog_for_the_customer() -> None:
    status, body = get("/v1/tenants/ta/customers/C1/inventory?page_size=500")
    assert status == 200, body
    head = {k: body[k] for k in ("customer_id", "customer_name", "customer_tier", "tenant_id", "page", "page_size")}
    assert head == {
        "customer_id": "C1",
        "customer_name": "Customer C1",
        "customer_tier": "GOLD",
        "tenant_id": "ta",
        "page": 1,
        "page_size": 500,
    }
    rows = [
        (
            i["sku"],
            i["location"],
            i["available_quantity"],
            i["reserved_quantity"],
            i["unit_price"],
            i["customer_price"],
            i["discount_percentage"],
        )
        for i in body["inventory_items"]
    ]
    assert rows == [
        ("S/1", "WH1", 7, 0, "100.00", "95.00", "5"),
        ("S1", "WH1", 37, 3, "100.00", "70.00", "30.00"),  # the customer's own price
        ("S1", "WH2", 10, 3, "100.00", "70.00", "30.00"),
        ("S2", "WH1", 38, 2, "100.00", "88.00", "12"),  # the customer's own discount
        ("S3", "WH1", 40, 0, "100.00", "95.00", "5"),  # GOLD's default discount
        ("S4", "", 0, 0, "100.00", "95.00", "5"),  # a product without stock; S5 (no product) is not listed
    ]
    first = body["inventory_items"][1]
    assert (first["description"], first["lead_time"]) == ("product S1", 4)
    assert body["total_items"] == 6
    assert Decimal(body["total_value"]) == 95 * 7 + 70 * 37 + 70 * 10 + 88 * 38 + 95 * 40
    datetime.fromisoformat(body["last_updated"])
    assert set(body["freshness"]) == {
        "availability_messages_behind",
        "availability_last_read_at",
        "messages_behind",
        "last_read_at",
    }
    assert body["freshness"]["availability_messages_behind"] == 0  # nothing assigned: nothing known behind


def test_customer_inventory_pages() -> None:
    status, body = get("/v1/tenants/ta/customers/C1/inventory?page=2&page_size=4")
    assert status == 200
    assert [(i["sku"], i["location"]) for i in body["inventory_items"]] == [("S3", "WH1"), ("S4", "")]
    assert (body["total_items"], body["page"], body["page_size"]) == (6, 2, 4)
    status, body = get("/v1/tenants/ta/customers/C1/inventory?page=3&page_size=4")
    assert (status, body["inventory_items"], body["total_items"]) == (200, [], 6)


def test_tier_discounts_come_from_settings_per_tenant() -> None:
    config = settings(tier_discounts={"ta": {"BRONZE": Decimal(3)}})
    status, body = get("/v1/tenants/ta/customers/C2/inventory?page_size=500", app=app_for(config=config))
    assert status == 200
    assert {i["sku"]: i["customer_price"] for i in body["inventory_items"]}["S3"] == "97.00"
    status, body = get("/v1/tenants/ta/customers/C2/inventory?page_size=500")
    assert {i["sku"]: i["customer_price"] for i in body["inventory_items"]}["S3"] == "100.00"  # BRONZE: 0 %


def test_credit_impact_counts_the_open_exposure() -> None:
    status, body = get("/v1/tenants/ta/customers/C1/credit-impact?sku=S3&quantity=10")
    assert status == 200, body
    assert body == {
        "customer_id": "C1",
        "sku": "S3",
        "quantity": 10,
        "total_value": "950.00",
        "credit_limit": "5000.00",
        "current_credit_used": "100.00",
        "open_exposure": "400.00",
        "available_credit": "4500.00",  # 5000 - 100 used - 400 held by O1
        "credit_impact": "950.00",
        "can_process_order": True,
    }
    status, body = get("/v1/tenants/ta/customers/C1/credit-impact?sku=S1&quantity=65")
    assert (status, body["total_value"], body["can_process_order"]) == (200, "4550.00", False)  # 65 * 70


def test_sku_availability_is_the_ledgers_record() -> None:
    status, body = get("/v1/tenants/ta/skus/S1/availability")
    assert status == 200, body
    _, _, raw = availability("ta", "S1", {"WH1": (40, 37), "WH2": (10, 10)})
    assert body == json.loads(raw)
    assert [(loc["location"], loc["on_hand"], loc["reserved"], loc["available"]) for loc in body["locations"]] == [
        ("WH1", 40, 3, 37),
        ("WH2", 10, 0, 10),
    ]


def test_order_status_shows_lines_reservations_and_fulfillments() -> None:
    status, body = get("/v1/tenants/ta/orders/O1")
    assert status == 200, body
    assert (body["order_id"], body["order_number"], body["customer_id"], body["status"]) == (
        "O1",
        "N-O1",
        "C1",
        "INVENTORY_ALLOCATED",
    )
    assert (body["priority"], body["order_value"]) == ("MEDIUM", "386.00")
    assert datetime.fromisoformat(body["reserved_until"]) == T0 + timedelta(minutes=15)
    assert body["lines"] == [
        {
            "line_id": "L1",
            "sku": "S1",
            "quantity": 3,
            "location": "WH1",
            "customer_price": "70.00",
            "issued": 1,
            "reserved": 2,
        },
        {
            "line_id": "L2",
            "sku": "S2",
            "quantity": 2,
            "location": "WH1",
            "customer_price": "88.00",
            "issued": 0,
            "reserved": 2,
        },
    ]
    assert body["backorder"] is None
    [fulfillment] = body["fulfillments"]
    assert (fulfillment["fulfillment_id"], fulfillment["status"], fulfillment["tracking_number"]) == (
        "F1",
        "SHIPPED",
        "TN-1",
    )
    assert [h["status"] for h in fulfillment["history"]] == ["IN_PROGRESS", "SHIPPED"]
    assert fulfillment["items"] == [{"sku": "S1", "quantity": 1, "location": "WH1"}]
    assert body["last_event"] is None


def test_a_backordered_order_shows_its_backorder_and_reserves_nothing() -> None:
    status, body = get("/v1/tenants/ta/orders/B-low")
    assert status == 200, body
    assert body["backorder"] == {
        "backorder_id": "BO-B-low",
        "waiting": ["S3|L1"],
        "items": [{"sku": "S3", "location": "WH1", "quantity": 5, "line_id": "L1"}],
    }
    assert [ln["reserved"] for ln in body["lines"]] == [0]


def test_backorder_report_from_the_tenants_orders() -> None:
    status, body = get("/v1/tenants/ta/reports/backorders")
    assert status == 200, body
    assert body["tenant_id"] == "ta"
    assert body["total_backorders"] == 3
    assert body["by_priority"] == {"LOW": 1, "URGENT": 1, "HIGH": 1}
    assert body["by_status"] == {"PENDING": 2, "FULFILLED": 1}
    assert body["ids_by_status"] == {"PENDING": ["BO-B-high", "BO-B-low"], "FULFILLED": ["BO-B-urgent"]}
    assert body["total_value"] == "1425.00"  # 3 * 5 * 95
    assert body["average_fulfillment_seconds"] == 30.0
    datetime.fromisoformat(body["as_of"])
    status, body = get("/v1/tenants/tb/reports/backorders", B)
    assert (body["total_backorders"], body["ids_by_status"]) == (1, {"PENDING": ["BO-B-tb"]})


def test_opportunity_report_from_the_tenants_opportunities() -> None:
    status, body = get("/v1/tenants/ta/reports/opportunities")
    assert status == 200, body
    assert body["tenant_id"] == "ta"
    assert body["total_opportunities"] == 3  # OPP-unknown was never upserted
    assert body["by_stage"] == {"PROPOSAL": 1, "LEAD": 1, "NEGOTIATION": 1}
    assert body["by_status"] == {"ALLOCATED": 2, "REJECTED": 1}
    assert body["allocation_by_sku"] == {"S1": 5, "S2": 2}
    assert body["total_allocated_value"] == "630.00"  # 7 * 90
    status, body = get("/v1/tenants/tb/reports/opportunities", B)
    assert (body["total_opportunities"], body["allocation_by_sku"]) == (1, {"TB1": 1})


def test_an_empty_tenant_has_empty_reports() -> None:
    app = make_app(
        settings(api_tokens="tok-e=empty"), TOPOLOGY, ReadModels(settings(), TOPOLOGY), Recorder(), lambda: True
    )
    status, body = get("/v1/tenants/empty/reports/backorders", {"Authorization": "Bearer tok-e"}, app)
    assert (status, body["total_backorders"], body["total_value"], body["average_fulfillment_seconds"]) == (
        200,
        0,
        "0.00",
        None,
    )


@pytest.mark.parametrize("order_id", ODD_IDS)
def test_any_unicode_id_reaches_its_entity_percent_encoded(order_id: str) -> None:
    status, body = get(f"/v1/tenants/ta/orders/{quote(order_id, safe='')}")
    assert status == 200, body
    assert body["order_id"] == order_id


def test_an_encoded_slash_works_in_every_id_position() -> None:
    status, body = get("/v1/tenants/ta/customers/C%2F1%20%CE%A9/credit-impact?sku=S%2F1&quantity=2")
    assert status == 200, body
    assert (body["customer_id"], body["sku"], body["total_value"]) == ("C/1 Ω", "S/1", "180.00")  # PLATINUM 10 %
    status, body = get("/v1/tenants/ta/skus/S%2F1/availability")
    assert (status, body["sku"]) == (200, "S/1")
    status, body = get("/v1/tenants/ta/customers/C%2F1%20%CE%A9/inventory")
    assert (status, body["customer_tier"]) == (200, "PLATINUM")
    # A raw slash is a path separator, not part of the id: no route.
    assert get("/v1/tenants/ta/orders/A/B")[0] == 404


def test_openapi_document_is_served() -> None:
    for path in ("/v1/openapi.json", "/openapi.json"):
        status, spec = get(path, None)
        assert status == 200
        assert "/v1/tenants/{tenant}/orders/{order}" in spec["paths"]


# ---- 503s ------------------------------------------------------------------------------------------------


class Failing(ReadModels):
    def order_saga(self, tenant: str, order: str) -> OrderSaga | None:
        raise RuntimeError("the read model broke")


class Slow(ReadModels):
    def order_saga(self, tenant: str, order: str) -> OrderSaga | None:
        time.sleep(1.5)
        return super().order_saga(tenant, order)


class Gate(ReadModels):
    """Holds requests for order `slow` until released, counting them in."""

    def __init__(self, config: Settings, topology: Topology) -> None:
        super().__init__(config, topology)
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def order_saga(self, tenant: str, order: str) -> OrderSaga | None:
        if order == "slow":
            self.entered.release()
            self.release.wait(10)
        return super().order_saga(tenant, order)


def test_an_unexpected_exception_is_503_with_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    before = samples(ORDER_ROUTE, "503")
    with caplog.at_level(logging.ERROR, "agents.http"):
        status, body, headers = fetch(app_for(world(Failing(settings(), TOPOLOGY))), "/v1/tenants/ta/orders/O1", A)
    assert (status, headers["Retry-After"]) == (503, "1")
    assert "failed on this worker" in body["error"]
    assert samples(ORDER_ROUTE, "503") == before + 1
    assert "the read model broke" in caplog.text


def test_a_request_taking_longer_than_the_timeout_is_503() -> None:
    app = app_for(world(Slow(settings(), TOPOLOGY)), config=settings(http_timeout_s=0.3))
    started = time.monotonic()
    status, body, headers = fetch(app, "/v1/tenants/ta/orders/O1", A)
    took = time.monotonic() - started
    assert (status, headers["Retry-After"]) == (503, "1")
    assert "longer than 0.3 s" in body["error"]
    assert took < 1.4, took  # answered at the timeout, not when the slow view finished


def test_beyond_the_concurrency_bound_requests_get_503_at_once() -> None:
    rm = world(Gate(settings(), TOPOLOGY))
    feed(rm, [views.order_view(saga("ta", "slow"))])
    app = app_for(rm, config=settings(http_max_concurrent=2, http_timeout_s=20))

    async def scenario(client: TestClient[Any, Any]) -> None:
        held = [asyncio.create_task(client.get("/v1/tenants/ta/orders/slow", headers=A)) for _ in range(2)]
        for _ in range(2):
            assert await asyncio.to_thread(rm.entered.acquire, True, 10)
        started = time.monotonic()
        refused = await client.get("/v1/tenants/ta/orders/O1", headers=A)
        assert (refused.status, refused.headers["Retry-After"]) == (503, "1")
        assert "answering 2 requests already" in (await refused.json())["error"]
        assert time.monotonic() - started < 1.0
        probe = await client.get("/healthz")  # probes are not bounded
        assert probe.status == 200
        rm.release.set()
        answered = await asyncio.gather(*held)
        assert [r.status for r in answered] == [200, 200]
        again = await client.get("/v1/tenants/ta/orders/O1", headers=A)
        assert again.status == 200

    with_client(app, scenario)


# ---- process backorders ------------------------------------------------------------------------------------


def test_process_backorders_sends_one_command_to_every_sku_partition_on_its_partition_key() -> None:
    rm = world(ReadModels(settings(), TOPOLOGY))
    # The fill of B-low comes back while the endpoint watches (as the sagas' views would publish it).
    filled = backordered("ta", "B-low", "LOW", "FULFILLED", filled_after_s=5)
    sent = Recorder(then=lambda: feed(rm, [views.order_view(filled)]))
    status, body, _ = fetch(app_for(rm, sent, settle_s=2.0), "/v1/tenants/ta/backorders/process", A, "POST")
    assert status == 200, body
    assert body == {
        "processed_count": 2,
        "fulfilled_count": 1,
        "still_pending_count": 1,
        "fulfilled_backorders": ["BO-B-low"],
        "still_pending_backorders": ["BO-B-high"],
    }
    n = SKU_TOPIC.partitions
    assert [p for _, _, _, p in sent.records] == list(range(n))
    commands = set()
    for topic, key, value, partition in sent.records:
        assert topic == SKU_TOPIC.name
        assert key == partition_keys(n)[partition]
        assert partition_of(key, n) == partition
        envelope = Envelope.from_bytes(value)
        command = ProcessBackorders.model_validate_json(envelope.body)
        assert (envelope.kind, envelope.source, command.tenant_id) == ("ProcessBackorders", None, "ta")
        commands.add(command.command_id)
    assert len(commands) == 1  # one command, the same on every partition


def test_process_backorders_answers_after_the_settle_time_when_nothing_fills() -> None:
    sent = Recorder()
    started = time.monotonic()
    status, body, _ = fetch(app_for(send=sent, settle_s=0.5), "/v1/tenants/ta/backorders/process", A, "POST")
    assert status == 200
    assert time.monotonic() - started >= 0.5
    assert (body["processed_count"], body["fulfilled_count"], body["still_pending_backorders"]) == (
        2,
        0,
        ["BO-B-high", "BO-B-low"],
    )
    assert len(sent.records) == SKU_TOPIC.partitions


def test_process_backorders_of_another_tenant_sends_nothing() -> None:
    sent = Recorder()
    status, _, _ = fetch(app_for(send=sent), "/v1/tenants/tb/backorders/process", A, "POST")
    assert status == 403
    assert sent.records == []


def test_process_backorders_is_503_when_the_send_fails() -> None:
    def broken(topic: str, key: bytes, value: bytes, partition: int) -> None:
        raise RuntimeError("no broker")

    status, body, headers = fetch(app_for(send=broken), "/v1/tenants/ta/backorders/process", A, "POST")
    assert (status, headers["Retry-After"]) == (503, "1")
    assert "failed on this worker" in body["error"]


# ---- ops -------------------------------------------------------------------------------------------------


class Readiness(ReadModels):
    def __init__(self, config: Settings, topology: Topology, caught_up: bool) -> None:
        super().__init__(config, topology)
        self._caught = caught_up

    def caught_up(self) -> bool:
        return self._caught

    @property
    def assigned(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("running", "caught_up", "status", "reason"),
    [
        (True, True, 200, None),
        (False, True, 503, "processors are not running"),
        (True, False, 503, "not caught up with the view topics"),
    ],
)
def test_readyz_is_ready_when_running_and_caught_up(
    running: bool, caught_up: bool, status: int, reason: str | None
) -> None:
    app = app_for(Readiness(settings(), TOPOLOGY, caught_up), running=running)
    got, body, _ = fetch(app, "/readyz")  # no token needed
    assert (got, body["ready"]) == (status, status == 200)
    assert (body["running"], body["read_models_caught_up"]) == (running, caught_up)
    if reason is None:
        assert "reasons" not in body
    else:
        assert any(reason in r for r in body["reasons"])


def test_readyz_is_not_ready_before_the_read_models_are_assigned() -> None:
    status, body, _ = fetch(app_for(), "/readyz")
    assert status == 503
    assert any("not assigned" in r for r in body["reasons"])


def test_healthz_and_metrics_need_no_token() -> None:
    assert fetch(app_for(running=False), "/healthz")[:2] == (200, {"status": "ok"})
    app = app_for()

    async def scenario(client: TestClient[Any, Any]) -> tuple[str, str]:
        await client.get("/v1/tenants/ta/orders/O1", headers=A)
        response = await client.get("/metrics")
        assert response.status == 200
        return response.headers["Content-Type"], await response.text()

    content_type, text = with_client(app, scenario)
    assert content_type.startswith("text/plain; version=")
    assert 'inventory_http_requests_total{route="/v1/tenants/{tenant}/orders/{order}",status="200"}' in text
    assert 'inventory_http_seconds_bucket{le="0.001",route="/v1/tenants/{tenant}/orders/{order}"}' in text


# ---- serve -------------------------------------------------------------------------------------------------


def test_serve_listens_in_its_own_thread_and_answers_over_a_socket() -> None:
    server = serve(settings(web_host="127.0.0.1", web_port=0), app_for())
    try:
        assert server.daemon and server.is_alive() and server.port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as response:
            assert json.loads(response.read()) == {"status": "ok"}
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}/v1/tenants/ta/orders/A%2FB", headers=A)
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["order_id"] == "A/B"
    finally:
        server.stop()
    assert not server.is_alive()


def test_serve_raises_when_the_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="could not listen"):
            serve(settings(web_host="127.0.0.1", web_port=port), app_for())


def test_importing_the_api_imports_neither_faust_nor_quix() -> None:
    import subprocess
    import sys

    code = (
        "import sys, agents.http, agents.ops, agents.readmodels; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('faust', 'quixstreams') or m in ('agents.app', 'agents.runtime.app')]; "
        "print(bad)"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True, cwd=root
    )
    assert result.stdout.strip() == "[]"


# ---- the read models' records ------------------------------------------------------------------------------


def test_a_price_override_that_went_away_and_a_released_hold_leave_the_view() -> None:
    rm = world(ReadModels(settings(), TOPOLOGY))
    later = C1.model_copy(update={"prices": {"S2": C1.prices["S2"]}, "holds": {}, "exposures": {}, "version": 4})
    changes = views.customer_views(C1, later)
    assert {json.loads(v)["record"] for _, _, v in changes} == {"customer", "price", "reserved"}
    feed(rm, changes)
    state = rm.customer("ta", "C1")
    assert state is not None
    assert set(state.prices) == {"S2"}
    assert (reserved_for(state, "S1"), reserved_for(state, "S2"), state.open_exposure) == (0, 0, Decimal(0))


def test_records_are_applied_last_write_wins_and_a_tombstone_removes() -> None:
    rm = ReadModels(settings(), TOPOLOGY)
    feed(
        rm, [availability("ta", "S1", {"WH1": (5, 5)}, version=2), availability("ta", "S1", {"WH1": (3, 3)}, version=1)]
    )
    record = rm.availability("ta", "S1")
    assert record is not None and record["version"] == 1  # the log's order, as compaction keeps it
    feed(rm, [views.order_view(saga("ta", "O1"))])
    assert rm.apply("order_status", compose("order", "ta", "O1").encode(), None)
    assert rm.apply("availability", b"ta:S1", None)
    assert (rm.order("ta", "O1"), rm.availability("ta", "S1"), rm.orders("ta"), rm.skus("ta")) == (None, None, [], {})


def test_a_customer_needs_its_header_record() -> None:
    rm = ReadModels(settings(), TOPOLOGY)
    records = views.customer_views(None, C1)
    feed(rm, [r for r in records if json.loads(r[2])["record"] != "customer"])
    assert rm.customer("ta", "C1") is None
    feed(rm, [r for r in records if json.loads(r[2])["record"] == "customer"])
    state = rm.customer("ta", "C1")
    assert state is not None
    assert (state.tier, state.available_credit(), reserved_for(state, "S1")) == ("GOLD", Decimal(4500), 3)


def test_queries_answer_from_the_tenants_own_index() -> None:
    rm = world(ReadModels(settings(), TOPOLOGY))
    assert set(rm.skus("tb")) == {"TB1"}
    assert [o["order_id"] for o in rm.orders("tb")] == ["B-tb"]
    assert [o["opportunity_id"] for o in rm.opportunities("tb")] == ["OPP-tb"]
    assert rm.customer("tb", "C1") is not None and rm.customer("tb", "C2") is None
    order = rm.order("ta", "O1")
    assert order is not None and order["order_id"] == "O1" and order["lines"][0]["sku"] == "S1"


@pytest.mark.parametrize(
    ("topic_id", "key", "value"),
    [
        ("order_status", b"k", b"not json"),
        ("order_status", b"k", b"[1, 2]"),
        ("order_status", b"wrong key", views.order_view(saga("ta", "O9"))[2]),
        ("order_status", compose("order", "ta", "O9").encode(), b'{"record": "opportunity"}'),
        ("order_status", compose("order", "ta", "O9").encode(), b'{"record": "order", "tenant_id": "ta"}'),
        ("customer_state", b"k", b'{"record": "bogus", "tenant_id": "ta", "customer_id": "C1"}'),
        (
            "customer_state",
            compose("price", "ta", "C1", "S1").encode(),
            b'{"record": "price", "tenant_id": "ta", "customer_id": "C1", "sku": "S1", "customer_price": "abc", "discount_percentage": null}',
        ),
        (
            "customer_state",
            compose("reserved", "ta", "C1", "S1").encode(),
            b'{"record": "reserved", "tenant_id": "ta", "customer_id": "C1", "sku": "S1", "quantity": -1}',
        ),
        ("availability", b"ta:S1", b'{"sku": "S1"}'),
        ("availability", b"tb:S1", availability("ta", "S1", {})[2]),
        ("opportunity_status", b"\xff\xfe", None),
        ("no_such_topic", b"k", b"{}"),
    ],
)
def test_unreadable_records_are_skipped_and_logged(
    topic_id: str, key: bytes, value: bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    rm = ReadModels(settings(), TOPOLOGY)
    with caplog.at_level(logging.WARNING, "agents.readmodels"):
        assert rm.apply(topic_id, key, value) is False
    assert rm.skipped == 1
    assert "skipped an unreadable" in caplog.text
    assert (rm.skus("ta"), rm.orders("ta"), rm.customer("ta", "C1")) == ({}, [], None)


def test_the_skip_log_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    rm = ReadModels(settings(), TOPOLOGY)
    with caplog.at_level(logging.WARNING, "agents.readmodels"):
        for _ in range(100):
            assert not rm.apply("order_status", b"k" * 100_000, b"{" * 100_000)
    assert rm.skipped == 100
    assert 0 < len(caplog.records) <= 20
    assert max(len(r.getMessage()) for r in caplog.records) < 1_000


def test_the_reservation_and_backorder_gauges_come_from_the_read_models() -> None:
    from prometheus_client import REGISTRY

    from agents.runtime.app import Gauges

    rm = world(ReadModels(settings(), TOPOLOGY))
    Gauges(rm).measure()
    assert REGISTRY.get_sample_value("inventory_reservations_units", {"kind": "ORDER"}) == 3 + 2  # S1 at WH1, S2
    assert REGISTRY.get_sample_value("inventory_backorder_queue_depth") == 3  # B-low, B-high (ta) and B-tb
    assert (REGISTRY.get_sample_value("inventory_backorder_oldest_age_seconds") or 0) > 0
