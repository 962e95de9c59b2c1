"""Backorders on the real broker: partial holds, the queue ordered by priority, tier and age, automatic
filling as stock arrives, and cancellation."""

from __future__ import annotations

from typing import Any

from tests.integration.test_orders import latest_availability, outcome, place, setup_tenant
from tests.support import events
from tests.support.fleet import Fleet, wait_until


def backorder_events(fleet: Fleet, tenant: str, order_id: str, count: int) -> list[dict[str, Any]]:
    reader = fleet.reader("backorders")
    try:
        return reader.wait_for(
            lambda r: r["tenant_id"] == tenant and r["order_id"] == order_id,
            count=count,
            what=f"backorder events of {order_id}",
        )
    finally:
        reader.close()


def receive(fleet: Fleet, tenant: str, sku: str, quantity: int) -> None:
    fleet.produce("stock_movements", events.received(tenant, sku, quantity), key=events.key(tenant, sku))
    fleet.flush()


def location(fleet: Fleet, tenant: str, sku: str) -> dict[str, Any]:
    return dict(latest_availability(fleet, tenant)[sku]["locations"][0])


def test_a_receipt_fills_an_urgent_backorder_before_an_older_low_one(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 0})
    place(fleet, tenant, "O-low", [("A", 5)], priority="LOW", backorder_policy="BACKORDER")
    (placed_low,) = outcome(fleet, tenant, "O-low", "OrderBackordered")
    place(fleet, tenant, "O-urgent", [("A", 5)], priority="URGENT", backorder_policy="BACKORDER")
    outcome(fleet, tenant, "O-urgent", "OrderBackordered")
    assert placed_low["items"] == [{"sku": "A", "location": "WH1", "quantity": 5, "line_id": "L1"}]
    assert [r["event_type"] for r in backorder_events(fleet, tenant, "O-low", 1)] == ["BackorderCreated"]

    receive(fleet, tenant, "A", 5)
    (allocated,) = outcome(fleet, tenant, "O-urgent", "OrderInventoryAllocated")
    assert [r["event_type"] for r in backorder_events(fleet, tenant, "O-urgent", 2)] == [
        "BackorderCreated",
        "BackorderFulfilled",
    ]
    assert allocated["lines"][0]["quantity"] == 5

    receive(fleet, tenant, "A", 3)  # smaller than what LOW waits for: it fills part and keeps waiting
    wait_until(lambda: location(fleet, tenant, "A")["backordered"] == 2, 30, "2 units still backordered")
    assert location(fleet, tenant, "A")["reserved"] == 8
    receive(fleet, tenant, "A", 2)
    outcome(fleet, tenant, "O-low", "OrderInventoryAllocated")
    wait_until(
        lambda: (
            location(fleet, tenant, "A")
            == {"location": "WH1", "on_hand": 10, "reserved": 10, "soft_allocated": 0, "backordered": 0, "available": 0}
        ),
        30,
        "both orders fully reserved",
    )


def test_a_backordered_order_keeps_what_it_could_reserve_and_cancelling_releases_it(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 3, "B": 10})
    place(fleet, tenant, "O1", [("A", 5), ("B", 2)], backorder_policy="BACKORDER", priority="HIGH")
    (backordered,) = outcome(fleet, tenant, "O1", "OrderBackordered")
    assert backordered["items"] == [{"sku": "A", "location": "WH1", "quantity": 2, "line_id": "L1"}]
    wait_until(
        lambda: location(fleet, tenant, "A")["reserved"] == 3 and location(fleet, tenant, "A")["backordered"] == 2,
        30,
        "3 held and 2 queued",
    )
    assert location(fleet, tenant, "B")["reserved"] == 2
    fleet.produce("orders", events.cancelled(tenant, "O1"), key=events.key(tenant, "O1"))
    fleet.flush()
    kinds = [r["event_type"] for r in backorder_events(fleet, tenant, "O1", 2)]
    assert kinds == ["BackorderCreated", "BackorderCancelled"]
    wait_until(
        lambda: (
            location(fleet, tenant, "A")["reserved"] == 0
            and location(fleet, tenant, "A")["backordered"] == 0
            and location(fleet, tenant, "B")["reserved"] == 0
        ),
        30,
        "every hold and queue entry gone",
    )
    receive(fleet, tenant, "A", 5)  # nothing waits any more: the stock stays free
    wait_until(lambda: location(fleet, tenant, "A")["available"] == 8, 30, "the receipt to stay available")
