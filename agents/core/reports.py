"""Per-tenant reports, computed as partial aggregates over the sagas one worker owns and then merged."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from agents.core.opportunity import OpportunitySaga
from agents.core.saga import OrderSaga


def backorder_partial(sagas: Iterable[OrderSaga]) -> dict[str, Any]:
    part: dict[str, Any] = {
        "count": 0,
        "total_value": "0",
        "by_priority": {},
        "by_status": {},
        "ids_by_status": {},
        "fulfil_seconds_sum": 0.0,
        "fulfilled_count": 0,
    }
    total = Decimal(0)
    for saga in sagas:
        if not saga.backorder_id:
            continue
        prices = {ln.line_id: ln.customer_price or Decimal(0) for ln in saga.lines}
        total += sum((prices.get(i.line_id, Decimal(0)) * i.quantity for i in saga.backorder_items), Decimal(0))
        part["count"] += 1
        part["by_priority"][saga.priority] = part["by_priority"].get(saga.priority, 0) + 1
        status = saga.backorder_status or "PENDING"
        part["by_status"][status] = part["by_status"].get(status, 0) + 1
        part["ids_by_status"].setdefault(status, []).append(saga.backorder_id)
        if saga.backorder_filled_at and saga.backordered_at:
            part["fulfil_seconds_sum"] += (saga.backorder_filled_at - saga.backordered_at).total_seconds()
            part["fulfilled_count"] += 1
    part["total_value"] = str(total)
    return part


def merge_backorder_partials(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The backorder report: count, total value, by priority, by status, average time to fulfil."""
    merged: dict[str, Any] = {"total_backorders": 0, "by_priority": {}, "by_status": {}, "ids_by_status": {}}
    total, seconds, fulfilled = Decimal(0), 0.0, 0
    for part in parts:
        merged["total_backorders"] += part["count"]
        total += Decimal(part["total_value"])
        seconds += part["fulfil_seconds_sum"]
        fulfilled += part["fulfilled_count"]
        for field in ("by_priority", "by_status"):
            for k, v in part[field].items():
                merged[field][k] = merged[field].get(k, 0) + v
        for k, ids in part["ids_by_status"].items():
            merged["ids_by_status"].setdefault(k, []).extend(ids)
    for ids in merged["ids_by_status"].values():
        ids.sort()
    merged["total_value"] = str(total.quantize(Decimal("0.01")))
    merged["average_fulfillment_seconds"] = round(seconds / fulfilled, 3) if fulfilled else None
    return merged


def opportunity_partial(sagas: Iterable[OpportunitySaga]) -> dict[str, Any]:
    part: dict[str, Any] = {"count": 0, "allocated_value": "0", "by_stage": {}, "by_status": {}, "by_sku": {}}
    value = Decimal(0)
    for saga in sagas:
        if not saga.known:
            continue
        part["count"] += 1
        part["by_stage"][saga.stage] = part["by_stage"].get(saga.stage, 0) + 1
        part["by_status"][saga.status] = part["by_status"].get(saga.status, 0) + 1
        prices = {item.sku: item.unit_price for item in saga.items}
        for sku, lines in saga.holds.items():
            held = sum(line.quantity for line in lines)
            if held:
                part["by_sku"][sku] = part["by_sku"].get(sku, 0) + held
                value += prices.get(sku, Decimal(0)) * held
    part["allocated_value"] = str(value)
    return part


def merge_opportunity_partials(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The opportunity report: count, total soft-allocated value, by stage and status, units held by SKU."""
    merged: dict[str, Any] = {"total_opportunities": 0, "by_stage": {}, "by_status": {}, "allocation_by_sku": {}}
    value = Decimal(0)
    for part in parts:
        merged["total_opportunities"] += part["count"]
        value += Decimal(part["allocated_value"])
        for src, dst in (("by_stage", "by_stage"), ("by_status", "by_status"), ("by_sku", "allocation_by_sku")):
            for k, v in part[src].items():
                merged[dst][k] = merged[dst].get(k, 0) + v
    merged["total_allocated_value"] = str(value.quantize(Decimal("0.01")))
    return merged
