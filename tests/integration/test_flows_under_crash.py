"""Backorders and fulfillment with a worker killed (SIGKILL) mid-flow: afterwards every backorder is filled
once, stock is issued exactly once, nothing is oversold and reservations reconcile."""

from __future__ import annotations

from collections.abc import Callable

from tests.integration.test_fulfillment import shipment
from tests.integration.test_orders import latest_availability, outcome, setup_tenant
from tests.support import events
from tests.support.checker import check
from tests.support.fleet import Fleet, wait_until


def test_backorders_and_fulfillments_survive_a_sigkill_mid_flow(
    fleet_factory: Callable[[], Fleet], tenant: str
) -> None:
    fleet = fleet_factory()
    worker = fleet.add_worker()
    worker.wait_ready()
    setup_tenant(fleet, tenant, {"BO": 0, "FF": 100})
    backordered = [f"B{n}" for n in range(20)]
    shipped = [f"F{n}" for n in range(20)]
    for n, order_id in enumerate(backordered):
        event = events.order(
            tenant,
            order_id,
            "C1",
            [("BO", 2)],
            backorder_policy="BACKORDER",
            priority=("LOW", "MEDIUM", "HIGH", "URGENT")[n % 4],
        )
        fleet.produce("orders", event, key=events.key(tenant, order_id))
    for order_id in shipped:
        fleet.produce("orders", events.order(tenant, order_id, "C1", [("FF", 3)]), key=events.key(tenant, order_id))
    fleet.flush()
    for order_id in shipped:
        outcome(fleet, tenant, order_id, "OrderInventoryAllocated", timeout=60)
    for order_id in backordered:
        outcome(fleet, tenant, order_id, "OrderBackordered", timeout=60)

    # Receipts that fill the queue, and every shipped order's fulfillment, then a kill in the middle.
    for _ in range(20):
        fleet.produce("stock_movements", events.received(tenant, "BO", 2), key=events.key(tenant, "BO"))
    for order_id in shipped:
        shipment(fleet, events.fulfillment_started(tenant, order_id, f"FUL-{order_id}", [("FF", 3)]))
    reader = fleet.reader("backorders")
    reader.wait_for(lambda r: r["tenant_id"] == tenant and r["event_type"] == "BackorderFulfilled", count=3, timeout=60)
    reader.close()
    worker.kill()
    worker.start()
    worker.wait_ready()

    for order_id in backordered:
        outcome(fleet, tenant, order_id, "OrderInventoryAllocated", timeout=90)
    backorders = fleet.reader("backorders")
    fulfilled = {
        r["order_id"]
        for r in backorders.drain()
        if r["tenant_id"] == tenant and r["event_type"] == "BackorderFulfilled"
    }
    backorders.close()
    assert fulfilled == set(backordered)

    def settled() -> bool:
        latest = latest_availability(fleet, tenant)
        bo, ff = latest["BO"]["locations"][0], latest["FF"]["locations"][0]
        return (bo["on_hand"], bo["reserved"], bo["backordered"]) == (40, 40, 0) and (
            ff["on_hand"],
            ff["reserved"],
        ) == (40, 0)

    wait_until(settled, 60, "BO fully reserved for the backorders and FF issued exactly once (100 - 20 x 3)")
    readers = [fleet.reader(t) for t in ("allocations", "availability", "fulfillments")]
    verdict = check(tenant, set(backordered) | set(shipped), *(r.drain() for r in readers))
    for r in readers:
        r.close()
    verdict.assert_ok()
