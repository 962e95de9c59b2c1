"""JSON input events as an upstream system would produce them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any


def _common(event_type: str, tenant: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": fields.pop("event_id", None) or f"ev-{uuid.uuid4().hex[:12]}",
        "event_type": event_type,
        "tenant_id": tenant,
        "occurred_at": "2026-11-25T09:00:00Z",
        **fields,
    }


def product(tenant: str, sku: str, **fields: Any) -> dict[str, Any]:
    body = {
        "sku": sku,
        "description": f"Product {sku}",
        "unit_price": "25.00",
        "unit_cost": "14.00",
        "lead_time_days": 3,
    }
    return _common("ProductUpserted", tenant, **{**body, **fields})


def received(tenant: str, sku: str, quantity: int, location: str = "WH1", **fields: Any) -> dict[str, Any]:
    body = {
        "movement_id": f"mv-{uuid.uuid4().hex[:12]}",
        "sku": sku,
        "location": location,
        "quantity": quantity,
    }
    return _common("StockReceived", tenant, **{**body, **fields})


def adjusted(tenant: str, sku: str, delta: int, location: str = "WH1", **fields: Any) -> dict[str, Any]:
    body = {
        "movement_id": f"mv-{uuid.uuid4().hex[:12]}",
        "sku": sku,
        "location": location,
        "delta": delta,
        "reason": "cycle count correction",
    }
    return _common("StockAdjusted", tenant, **{**body, **fields})


def counted(tenant: str, sku: str, quantity: int, location: str = "WH1", **fields: Any) -> dict[str, Any]:
    body = {
        "movement_id": f"mv-{uuid.uuid4().hex[:12]}",
        "sku": sku,
        "location": location,
        "quantity": quantity,
    }
    return _common("StockCounted", tenant, **{**body, **fields})


def key(tenant: str, entity: str) -> bytes:
    return f"{tenant}:{entity}".encode()


def customer(
    tenant: str, customer_id: str, tier: str = "GOLD", credit_limit: str = "100000", **fields: Any
) -> dict[str, Any]:
    body = {
        "customer_id": customer_id,
        "name": f"Customer {customer_id}",
        "tier": tier,
        "credit_limit": credit_limit,
        "credit_used": "0",
    }
    return _common("CustomerUpserted", tenant, **{**body, **fields})


def pricing(tenant: str, customer_id: str, updates: list[dict[str, Any]]) -> dict[str, Any]:
    return _common("CustomerPricingUpdated", tenant, customer_id=customer_id, updates=updates)


def order(
    tenant: str, order_id: str, customer_id: str, lines: list[tuple[str, int] | tuple[str, int, str]], **fields: Any
) -> dict[str, Any]:
    body = {
        "order_id": order_id,
        "order_number": f"SO-{order_id}",
        "customer_id": customer_id,
        "order_date": datetime.now(UTC).isoformat(),
        "lines": [
            {
                "line_id": f"L{i + 1}",
                "sku": line[0],
                "quantity": line[1],
                "location": line[2] if len(line) > 2 else "WH1",
            }
            for i, line in enumerate(lines)
        ],
        "shipping_address": {"city": "Berlin", "country": "DE"},
    }
    return _common("OrderPlaced", tenant, **{**body, **fields})


def cancelled(tenant: str, order_id: str, reason: str = "customer changed their mind") -> dict[str, Any]:
    return _common("OrderCancelled", tenant, order_id=order_id, reason=reason)


def snapshot(
    tenant: str, order_id: str, customer_id: str, lines: list[tuple[str, str, int]], status: str = "OPEN"
) -> dict[str, Any]:
    return _common(
        "OrderSnapshot",
        tenant,
        order_id=order_id,
        customer_id=customer_id,
        status=status,
        lines=[{"line_id": lid, "sku": sku, "quantity": qty, "location": "WH1"} for lid, sku, qty in lines],
    )


def fulfillment_started(
    tenant: str, order_id: str, fulfillment_id: str, items: list[tuple[str, int]]
) -> dict[str, Any]:
    return _common(
        "FulfillmentStarted",
        tenant,
        fulfillment_id=fulfillment_id,
        order_id=order_id,
        items=[{"sku": sku, "quantity": qty, "location": "WH1"} for sku, qty in items],
        shipping_method="GROUND",
        tracking_number=f"TRK-{fulfillment_id}",
    )


def fulfillment_completed(tenant: str, order_id: str, fulfillment_id: str) -> dict[str, Any]:
    return _common("FulfillmentCompleted", tenant, fulfillment_id=fulfillment_id, order_id=order_id)


def dispatched(tenant: str, order_id: str, fulfillment_id: str) -> dict[str, Any]:
    return _common(
        "ShipmentDispatched",
        tenant,
        fulfillment_id=fulfillment_id,
        order_id=order_id,
        carrier="DHL",
        tracking_number=f"DHL-{fulfillment_id}",
        estimated_delivery="2026-12-01T12:00:00Z",
    )


def delivered(tenant: str, order_id: str, fulfillment_id: str) -> dict[str, Any]:
    return _common(
        "ShipmentDelivered",
        tenant,
        fulfillment_id=fulfillment_id,
        order_id=order_id,
        delivered_at="2026-12-01T10:00:00Z",
    )
