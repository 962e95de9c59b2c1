"""JSON input events as an upstream system would produce them."""

from __future__ import annotations

import uuid
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
