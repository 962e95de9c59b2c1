"""Factories of valid input events for unit tests; override any field by keyword."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from agents.core.commands import PriceOrder, ReleaseCredit, ReleaseStock, ReserveStock
from agents.core.events import (
    CustomerPricingUpdated,
    CustomerUpserted,
    OrderCancelled,
    OrderPlaced,
    ProductUpserted,
    StockAdjusted,
    StockCounted,
    StockReceived,
)

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


def customer_upserted_factory(**overrides: Any) -> CustomerUpserted:
    body = {
        "customer_id": "CUST-1",
        "name": "Acme Retail",
        "tier": "BRONZE",
        "credit_limit": Decimal("1000.00"),
        "credit_used": Decimal("0"),
    }
    return CustomerUpserted(**_common("CustomerUpserted", {**body, **overrides}))


def customer_pricing_updated_factory(**overrides: Any) -> CustomerPricingUpdated:
    body = {"customer_id": "CUST-1", "updates": [{"sku": "SKU-1", "discount_percentage": Decimal("5")}]}
    return CustomerPricingUpdated(**_common("CustomerPricingUpdated", {**body, **overrides}))


def order_placed_factory(**overrides: Any) -> OrderPlaced:
    body = {
        "order_id": f"ORD-{next(_ids)}",
        "order_number": "PO-1",
        "customer_id": "CUST-1",
        "order_date": T0,
        "lines": [{"line_id": "L1", "sku": "SKU-1", "quantity": 1, "location": "WH1"}],
        "shipping_address": {"city": "Springfield"},
    }
    return OrderPlaced(**_common("OrderPlaced", {**body, **overrides}))


def order_cancelled_factory(**overrides: Any) -> OrderCancelled:
    body = {"order_id": "ORD-1", "reason": "customer changed their mind"}
    return OrderCancelled(**_common("OrderCancelled", {**body, **overrides}))


# ---- internal commands ---------------------------------------------------------------------------------


def reserve_stock_factory(**overrides: Any) -> ReserveStock:
    body: dict[str, Any] = {
        "command_id": f"cmd-{next(_ids)}",
        "tenant_id": "acme",
        "issued_at": T0,
        "order_id": "ORD-1",
        "sku": "SKU-1",
        "lines": [{"line_id": "L1", "sku": "SKU-1", "quantity": 1, "location": "WH1"}],
    }
    return ReserveStock(**{**body, **overrides})


def release_stock_factory(**overrides: Any) -> ReleaseStock:
    body: dict[str, Any] = {
        "command_id": f"cmd-{next(_ids)}",
        "tenant_id": "acme",
        "issued_at": T0,
        "order_id": "ORD-1",
        "sku": "SKU-1",
        "reason": "CANCELLED",
    }
    return ReleaseStock(**{**body, **overrides})


def price_order_factory(**overrides: Any) -> PriceOrder:
    body: dict[str, Any] = {
        "command_id": f"cmd-{next(_ids)}",
        "tenant_id": "acme",
        "issued_at": T0,
        "order_id": "ORD-1",
        "customer_id": "CUST-1",
        "lines": [{"line_id": "L1", "sku": "SKU-1", "quantity": 1, "location": "WH1"}],
    }
    return PriceOrder(**{**body, **overrides})


def release_credit_factory(**overrides: Any) -> ReleaseCredit:
    body: dict[str, Any] = {
        "command_id": f"cmd-{next(_ids)}",
        "tenant_id": "acme",
        "issued_at": T0,
        "order_id": "ORD-1",
        "customer_id": "CUST-1",
        "reason": "CANCELLED",
    }
    return ReleaseCredit(**{**body, **overrides})
