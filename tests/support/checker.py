"""An independent checker of DESIGN.md section 4 that reads only the output topics (and the inputs the
test produced): never oversold, one placement outcome per order, reservations reconcile with orders."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

PLACEMENT = {"OrderInventoryAllocated", "OrderAllocationRejected", "OrderInventoryReleased", "OrderBackordered"}


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)  # order id -> placement outcome type

    def assert_ok(self) -> None:
        assert not self.problems, "\n".join(self.problems[:20])


def placement_outcomes(allocations: list[dict[str, Any]], tenant: str) -> dict[str, list[dict[str, Any]]]:
    """Distinct placement outcomes per order (a re-emitted duplicate has the same event_id)."""
    by_order: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for record in allocations:
        if record["tenant_id"] != tenant or record["event_type"] not in PLACEMENT:
            continue
        # A release after an allocation is the order's later life, not its placement outcome.
        by_order[record["order_id"]][record["event_id"]] = record
    result = {}
    for order_id, records in by_order.items():
        first, *later = sorted(records.values(), key=lambda r: (r["_partition"], r["_offset"]))
        # After the placement outcome an order may still be released (cancel, expiry, lost stock) or, once
        # backordered, allocated; anything else is a second placement outcome.
        allowed = {"OrderInventoryReleased"} | (
            {"OrderInventoryAllocated"} if first["event_type"] == "OrderBackordered" else set()
        )
        if first["event_type"] == "OrderInventoryReleased":
            allowed = set()
        result[order_id] = [first] + [r for r in later if r["event_type"] not in allowed]
    return result


def check(
    tenant: str,
    order_ids: set[str],
    allocations: list[dict[str, Any]],
    availability: list[dict[str, Any]],
    fulfillments: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> Verdict:
    verdict = Verdict()
    outcomes = placement_outcomes(allocations, tenant)
    for order_id in sorted(order_ids):
        got = outcomes.get(order_id, [])
        if len(got) != 1:
            verdict.problems.append(f"order {order_id}: {len(got)} placement outcomes {[r['event_type'] for r in got]}")
        else:
            verdict.outcomes[order_id] = got[0]["event_type"]
    unknown = set(outcomes) - order_ids
    if unknown:
        verdict.problems.append(f"outcomes for orders never placed: {sorted(unknown)[:5]}")
    latest: dict[str, dict[str, Any]] = {}
    for record in availability:
        if record["tenant_id"] != tenant:
            continue
        for loc in record["locations"]:
            if loc["reserved"] + loc["soft_allocated"] > loc["on_hand"]:
                verdict.problems.append(
                    f"oversold {record['sku']}@{loc['location']} at version {record['version']}: {loc}"
                )
        if record["version"] >= latest.get(record["sku"], {}).get("version", -1):
            latest[record["sku"]] = record
    # Reconcile: what the ledgers hold = the lines of orders allocated and not released since.
    released = {
        r["order_id"] for r in allocations if r["tenant_id"] == tenant and r["event_type"] == "OrderInventoryReleased"
    }
    expected: dict[tuple[str, str], int] = defaultdict(int)
    allocated = {
        r["order_id"]: r
        for r in allocations
        if r["tenant_id"] == tenant and r["event_type"] == "OrderInventoryAllocated"
    }
    for order_id, record in allocated.items():
        if order_id not in released:
            for line in record["lines"]:
                expected[(line["sku"], line["location"])] += line["quantity"]
    issued = {
        r["event_id"]: r
        for r in fulfillments
        if r["tenant_id"] == tenant and r["event_type"] == "FulfillmentAccepted" and r["order_id"] not in released
    }
    for record in issued.values():  # fulfillment issued these units: the reservation became a shipment
        for item in record["items"]:
            expected[(item["sku"], item["location"])] -= item["quantity"]
    held = {
        (sku, loc["location"]): loc["reserved"]
        for sku, record in latest.items()
        for loc in record["locations"]
        if loc["reserved"]
    }
    if held != {k: v for k, v in expected.items() if v}:
        verdict.problems.append(
            f"reservations do not reconcile: ledgers hold {held}, open orders need {dict(expected)}"
        )
    return verdict
