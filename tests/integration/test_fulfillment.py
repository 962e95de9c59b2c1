"""Fulfillment on the real broker: issuing reserved stock, partial fulfillment, rejections, and shipment
tracking through delivery, including out-of-order shipment events."""

from __future__ import annotations

from typing import Any

from tests.integration.test_orders import latest_availability, outcome, place, setup_tenant
from tests.support import events
from tests.support.fleet import Fleet, wait_until


def shipment(fleet: Fleet, event: dict[str, Any]) -> None:
    fleet.produce("shipments", event, key=events.key(event["tenant_id"], event["order_id"]))
    fleet.flush()


def fulfillment_events(fleet: Fleet, tenant: str, fid: str, count: int) -> list[dict[str, Any]]:
    reader = fleet.reader("fulfillments")
    try:
        return reader.wait_for(
            lambda r: r["tenant_id"] == tenant and r["fulfillment_id"] == fid,
            count=count,
            what=f"{count} events of {fid}",
        )
    finally:
        reader.close()


def stock(fleet: Fleet, tenant: str, sku: str) -> tuple[int, int, int]:
    loc = latest_availability(fleet, tenant)[sku]["locations"][0]
    return loc["on_hand"], loc["reserved"], loc["available"]


def test_fulfillment_issues_reserved_stock_in_parts_and_tracks_each_part_to_delivery(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 50, "B": 20})
    place(fleet, tenant, "O1", [("A", 5), ("B", 2)])
    outcome(fleet, tenant, "O1", "OrderInventoryAllocated")
    shipment(fleet, events.fulfillment_started(tenant, "O1", "F1", [("A", 3)]))
    (accepted,) = fulfillment_events(fleet, tenant, "F1", 1)
    assert (accepted["event_type"], accepted["status"], accepted["tracking_number"]) == (
        "FulfillmentAccepted",
        "IN_PROGRESS",
        "TRK-F1",
    )
    wait_until(lambda: stock(fleet, tenant, "A") == (47, 2, 45), 30, "A: 3 issued, 2 still reserved")
    shipment(fleet, events.fulfillment_started(tenant, "O1", "F2", [("A", 2), ("B", 2)]))
    fulfillment_events(fleet, tenant, "F2", 1)
    wait_until(
        lambda: stock(fleet, tenant, "A") == (45, 0, 45) and stock(fleet, tenant, "B") == (18, 0, 18),
        30,
        "everything issued",
    )
    for fid in ("F1", "F2"):
        shipment(fleet, events.fulfillment_completed(tenant, "O1", fid))
        shipment(fleet, events.dispatched(tenant, "O1", fid))
        shipment(fleet, events.delivered(tenant, "O1", fid))
    for fid in ("F1", "F2"):
        statuses = [r["status"] for r in fulfillment_events(fleet, tenant, fid, 4)]
        assert statuses == ["IN_PROGRESS", "COMPLETED", "SHIPPED", "DELIVERED"]
    shipped = next(r for r in fulfillment_events(fleet, tenant, "F1", 4) if r["status"] == "SHIPPED")
    assert (shipped["carrier"], shipped["tracking_number"]) == ("DHL", "DHL-F1")


def test_shipment_events_out_of_order_only_move_forward(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 10})
    place(fleet, tenant, "O1", [("A", 2)])
    outcome(fleet, tenant, "O1", "OrderInventoryAllocated")
    shipment(fleet, events.dispatched(tenant, "O1", "F1"))  # before its FulfillmentStarted: kept
    shipment(fleet, events.fulfillment_started(tenant, "O1", "F1", [("A", 2)]))
    shipment(fleet, events.delivered(tenant, "O1", "F1"))
    shipment(fleet, events.fulfillment_completed(tenant, "O1", "F1"))  # late: no step back
    records = fulfillment_events(fleet, tenant, "F1", 3)
    assert [r["status"] for r in records] == ["IN_PROGRESS", "SHIPPED", "DELIVERED"]
    assert records[-1]["carrier"] == "DHL"


def test_fulfillment_of_an_order_that_is_not_allocated_or_asks_too_much_is_rejected(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 10})
    place(fleet, tenant, "O1", [("A", 2)])
    outcome(fleet, tenant, "O1", "OrderInventoryAllocated")
    shipment(fleet, events.fulfillment_started(tenant, "O1", "F-big", [("A", 3)]))
    (too_much,) = fulfillment_events(fleet, tenant, "F-big", 1)
    assert too_much["event_type"] == "FulfillmentRejected"
    assert "3 of A@WH1 requested, 2 reserved" in too_much["reason"]
    shipment(fleet, events.fulfillment_started(tenant, "O-none", "F-ghost", [("A", 1)]))
    (ghost,) = fulfillment_events(fleet, tenant, "F-ghost", 1)
    assert ghost["event_type"] == "FulfillmentRejected"
    assert "unknown" in ghost["reason"]
    fleet.produce("orders", events.cancelled(tenant, "O1"), key=events.key(tenant, "O1"))
    fleet.flush()
    outcome(fleet, tenant, "O1", "OrderInventoryReleased")
    shipment(fleet, events.fulfillment_started(tenant, "O1", "F-late", [("A", 1)]))
    (late,) = fulfillment_events(fleet, tenant, "F-late", 1)
    assert late["event_type"] == "FulfillmentRejected"
    assert "CANCELLED" in late["reason"]
    assert stock(fleet, tenant, "A") == (10, 0, 10)
