"""Factories of valid input events for unit tests; override any field by keyword."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from agents.core.events import ProductUpserted, StockAdjusted, StockCounted, StockReceived

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
_ids = itertools.count(1)


def _common(event_type: str, overrides: dict[str, Any]) -> dict[str, Any]:
    n = next(_ids)
    return {
        "event_id": f"ev-{n}",
        "event_type": event_type,
        "tenant_id": "acme",
        "occurred_at": T0,
        **overrides,
    }


def product_upserted_factory(**overrides: Any) -> ProductUpserted:
    body = {
        "sku": "SKU-1",
        "description": "Widget",
        "unit_price": Decimal("10.00"),
        "unit_cost": Decimal("6.50"),
        "lead_time_days": 5,
    }
    return ProductUpserted(**_common("ProductUpserted", {**body, **overrides}))


def stock_received_factory(**overrides: Any) -> StockReceived:
    body = {"movement_id": f"mv-{next(_ids)}", "sku": "SKU-1", "location": "WH1", "quantity": 10}
    return StockReceived(**_common("StockReceived", {**body, **overrides}))


def stock_adjusted_factory(**overrides: Any) -> StockAdjusted:
    body = {
        "movement_id": f"mv-{next(_ids)}",
        "sku": "SKU-1",
        "location": "WH1",
        "delta": -1,
        "reason": "damaged",
    }
    return StockAdjusted(**_common("StockAdjusted", {**body, **overrides}))


def stock_counted_factory(**overrides: Any) -> StockCounted:
    body = {"movement_id": f"mv-{next(_ids)}", "sku": "SKU-1", "location": "WH1", "quantity": 7}
    return StockCounted(**_common("StockCounted", {**body, **overrides}))
