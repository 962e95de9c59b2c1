"""Order allocation across SKU partitions, on the real broker: pricing and credit at the customer, all
lines or none at the SKU ledgers, cancellation, sync and idempotency."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from tests.support import events
from tests.support.fleet import Fleet


def setup_tenant(
    fleet: Fleet, tenant: str, stock: dict[str, int], credit_limit: str = "100000", tier: str = "GOLD"
) -> None:
    for sku, quantity in stock.items():
        fleet.produce(
            "products", events.product(tenant, sku, unit_price="100.00", unit_cost="60.00"), key=events.key(tenant, sku)
        )
        if quantity:
            fleet.produce("stock_movements", events.received(tenant, sku, quantity), key=events.key(tenant, sku))
    fleet.produce(
        "customers", events.customer(tenant, "C1", tier=tier, credit_limit=credit_limit), key=events.key(tenant, "C1")
    )
    fleet.flush()
    wait_availability(fleet, tenant, stock)


def latest_availability(fleet: Fleet, tenant: str) -> dict[str, dict[str, Any]]:
    reader = fleet.reader("availability")
    try:
        latest: dict[str, dict[str, Any]] = {}
        for record in reader.drain():
            if record["tenant_id"] == tenant and record["version"] >= latest.get(record["sku"], {}).get("version", -1):
                latest[record["sku"]] = record
        return latest
    finally:
        reader.close()


def wait_availability(fleet: Fleet, tenant: str, on_hand: dict[str, int]) -> None:
    from tests.support.fleet import wait_until

    def matches() -> bool:
        latest = latest_availability(fleet, tenant)
        return all(
            sku in latest and sum(loc["on_hand"] for loc in latest[sku]["locations"]) == qty
            for sku, qty in on_hand.items()
        )

    wait_until(matches, 30, f"on_hand {on_hand}")


def outcome(
    fleet: Fleet, tenant: str, order_id: str, event_type: str | None = None, count: int = 1, timeout: float = 30
) -> list[dict[str, Any]]:
    reader = fleet.reader("allocations")
    try:
        return reader.wait_for(
            lambda r: (
                r["tenant_id"] == tenant
                and r.get("order_id") == order_id
                and (event_type is None or r["event_type"] == event_type)
            ),
            count=count,
            timeout=timeout,
            what=f"{event_type or 'an outcome'} for {order_id}",
        )
    finally:
        reader.close()


def place(fleet: Fleet, tenant: str, order_id: str, lines: list[Any], **fields: Any) -> dict[str, Any]:
    event = events.order(tenant, order_id, "C1", lines, **fields)
    fleet.produce("orders", event, key=events.key(tenant, order_id))
    fleet.flush()
    return event


def reserved(fleet: Fleet, tenant: str, sku: str, location: str = "WH1") -> tuple[int, int]:
    record = latest_availability(fleet, tenant)[sku]
    loc = next(loc for loc in record["locations"] if loc["location"] == location)
    return loc["reserved"], loc["available"]


def test_an_order_with_enough_stock_is_allocated_at_customer_prices(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 50, "B": 50, "C": 50}, tier="GOLD")
    fleet.produce(
        "customer_pricing",
        events.pricing(
            tenant, "C1", [{"sku": "A", "customer_price": "80.00"}, {"sku": "B", "discount_percentage": 12.5}]
        ),
        key=events.key(tenant, "C1"),
    )
    fleet.flush()
    placed = place(fleet, tenant, "O1", [("A", 2), ("B", 1), ("C", 4)])
    (allocated,) = outcome(fleet, tenant, "O1")
    assert allocated["event_type"] == "OrderInventoryAllocated"
    prices = {ln["sku"]: Decimal(ln["customer_price"]) for ln in allocated["lines"]}
    assert prices == {
        "A": Decimal("80.00"),
        "B": Decimal("87.50"),
        "C": Decimal("95.00"),
    }  # override, own discount, GOLD 5%
    assert Decimal(allocated["order_value"]) == 2 * 80 + Decimal("87.50") + 4 * 95
    hold_until = datetime.fromisoformat(placed["order_date"]) + timedelta(seconds=900)
    assert datetime.fromisoformat(allocated["reserved_until"]) == hold_until
    assert reserved(fleet, tenant, "C") == (4, 46)


def test_one_short_line_rejects_the_whole_order_and_restores_availability(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 10, "B": 3, "C": 10})
    before = {sku: r["locations"] for sku, r in latest_availability(fleet, tenant).items()}
    place(fleet, tenant, "O1", [("A", 5), ("B", 7), ("C", 1)])
    (rejected,) = outcome(fleet, tenant, "O1")
    assert rejected["event_type"] == "OrderAllocationRejected"
    assert rejected["reason"] == "INSUFFICIENT_INVENTORY"
    assert rejected["unavailable_items"] == [
        {"sku": "B", "location": "WH1", "required": 7, "available": 3, "shortfall": 4}
    ]
    from tests.support.fleet import wait_until

    wait_until(
        lambda: {sku: r["locations"] for sku, r in latest_availability(fleet, tenant).items()} == before,
        30,
        "availability to return exactly to what it was",
    )


def test_two_lines_on_one_sku_and_one_sku_at_two_locations(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 10})
    fleet.produce("stock_movements", events.received(tenant, "A", 5, location="WH2"), key=events.key(tenant, "A"))
    fleet.flush()
    place(fleet, tenant, "O1", [("A", 6), ("A", 5)])  # 11 > 10 at WH1
    (rejected,) = outcome(fleet, tenant, "O1")
    assert rejected["unavailable_items"] == [
        {"sku": "A", "location": "WH1", "required": 11, "available": 10, "shortfall": 1}
    ]
    place(fleet, tenant, "O2", [("A", 6), ("A", 4), ("A", 5, "WH2")])
    (allocated,) = outcome(fleet, tenant, "O2")
    assert allocated["event_type"] == "OrderInventoryAllocated"
    assert reserved(fleet, tenant, "A") == (10, 0)
    assert reserved(fleet, tenant, "A", "WH2") == (5, 0)


def test_credit_limit_counts_open_exposure_and_cancellation_frees_it(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 100}, credit_limit="1000", tier="BRONZE")
    place(fleet, tenant, "O1", [("A", 6)])  # 600
    assert outcome(fleet, tenant, "O1")[0]["event_type"] == "OrderInventoryAllocated"
    place(fleet, tenant, "O2", [("A", 5)])  # 500 > 1000 - 600
    (rejected,) = outcome(fleet, tenant, "O2")
    assert rejected["reason"] == "CREDIT_LIMIT_EXCEEDED"
    assert "exceeds available credit 400" in rejected["message"]
    fleet.produce("orders", events.cancelled(tenant, "O1"), key=events.key(tenant, "O1"))
    fleet.flush()
    assert outcome(fleet, tenant, "O1", "OrderInventoryReleased")[0]["reason"] == "CANCELLED"
    place(fleet, tenant, "O3", [("A", 9)])
    assert outcome(fleet, tenant, "O3")[0]["event_type"] == "OrderInventoryAllocated"


def test_invalid_orders_and_unknown_customers_are_rejected_with_a_message(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 10})
    cases = {
        "O-empty": ([], "INVALID_ORDER", "no lines"),
        "O-zero": ([("A", 0)], "INVALID_ORDER", "line L1 has quantity 0"),
        "O-sku": ([("NOPE", 1)], "INVALID_ORDER", "unknown SKU(s): NOPE"),
    }
    for order_id, (lines, _, _) in cases.items():
        place(fleet, tenant, order_id, lines)
    dup = events.order(tenant, "O-dup", "C1", [("A", 1)])
    dup["lines"].append(dict(dup["lines"][0]))
    fleet.produce("orders", dup, key=events.key(tenant, "O-dup"))
    fleet.produce("orders", events.order(tenant, "O-who", "C404", [("A", 1)]), key=events.key(tenant, "O-who"))
    fleet.flush()
    cases["O-dup"] = ([], "INVALID_ORDER", "line id L1 appears more than once")
    cases["O-who"] = ([], "UNKNOWN_CUSTOMER", "customer C404 is not known")
    for order_id, (_, reason, text) in cases.items():
        (rejected,) = outcome(fleet, tenant, order_id)
        assert (rejected["reason"], text in rejected["message"]) == (reason, True), rejected
    assert reserved(fleet, tenant, "A") == (0, 10)


def test_cancel_releases_everything_and_out_of_order_cancel_reserves_nothing(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 10, "B": 10})
    place(fleet, tenant, "O1", [("A", 3), ("B", 4)])
    outcome(fleet, tenant, "O1", "OrderInventoryAllocated")
    fleet.produce("orders", events.cancelled(tenant, "O1"), key=events.key(tenant, "O1"))
    fleet.produce("orders", events.cancelled(tenant, "O1"), key=b"elsewhere")  # a second cancel: nothing more
    # A cancel that overtakes its order (different upstream partitions):
    fleet.produce("orders", events.cancelled(tenant, "O2"), key=b"partition-a")
    fleet.flush()
    (released,) = outcome(fleet, tenant, "O1", "OrderInventoryReleased")
    assert released["reason"] == "CANCELLED"
    assert sorted((ln["sku"], ln["quantity"]) for ln in released["lines"]) == [("A", 3), ("B", 4)]
    place(fleet, tenant, "O2", [("A", 2)])
    (late,) = outcome(fleet, tenant, "O2")
    assert (late["event_type"], late["reason"], late["lines"]) == ("OrderInventoryReleased", "CANCELLED", [])
    wait_availability(fleet, tenant, {"A": 10, "B": 10})
    assert reserved(fleet, tenant, "A") == (0, 10)
    assert reserved(fleet, tenant, "B") == (0, 10)


def test_the_same_order_twice_through_different_partitions_reserves_once(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 10})
    event = events.order(tenant, "O1", "C1", [("A", 4)])
    fleet.produce("orders", event, key=b"upstream-1")
    fleet.produce("orders", event, key=b"upstream-2")  # while the first is still in flight
    fleet.flush()
    outcome(fleet, tenant, "O1")
    fleet.produce("orders", event, key=b"upstream-3")  # after it settled
    fleet.produce("orders", {**event, "event_id": "resent-with-new-id"}, key=b"upstream-4")
    fleet.flush()
    first, *again = outcome(fleet, tenant, "O1", count=3)
    assert first["event_type"] == "OrderInventoryAllocated"
    assert len(again) >= 2  # the in-flight duplicate re-emits too if it lands after the order settled
    assert all(r == {**first, "_partition": r["_partition"], "_offset": r["_offset"]} for r in again)
    assert reserved(fleet, tenant, "A") == (4, 6)


def test_snapshot_sync_updates_reservations_and_reports_the_inventory_impact(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 10, "B": 10})
    place(fleet, tenant, "O1", [("A", 2), ("B", 2)])
    outcome(fleet, tenant, "O1", "OrderInventoryAllocated")
    snap = events.snapshot(tenant, "O1", "C1", [("L1", "A", 5), ("L2", "B", 0)])  # A changed, B removed
    fleet.produce("orders", snap, key=events.key(tenant, "O1"))
    fleet.flush()
    (synced,) = outcome(fleet, tenant, "O1", "OrderInventorySynced")
    assert synced["result"] == "UPDATED"
    assert [(ln["sku"], ln["quantity"], Decimal(ln["total_cost"])) for ln in synced["lines"]] == [
        ("A", 5, Decimal(300))
    ]
    assert Decimal(synced["total_value"]) == 300
    assert reserved(fleet, tenant, "A") == (5, 5)
    assert reserved(fleet, tenant, "B") == (0, 10)
    fleet.produce("orders", events.snapshot(tenant, "O9", "C1", [("L1", "A", 1)]), key=events.key(tenant, "O9"))
    fleet.flush()
    assert outcome(fleet, tenant, "O9", "OrderInventorySynced")[0]["result"] == "NOT_FOUND"


def test_a_count_below_what_is_reserved_drops_the_lowest_priority_hold(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 10, "B": 10})
    place(fleet, tenant, "O-low", [("A", 4), ("B", 1)], priority="LOW")
    outcome(fleet, tenant, "O-low", "OrderInventoryAllocated")
    place(fleet, tenant, "O-urgent", [("A", 4)], priority="URGENT")
    outcome(fleet, tenant, "O-urgent", "OrderInventoryAllocated")
    fleet.produce("stock_movements", events.counted(tenant, "A", 5), key=events.key(tenant, "A"))
    fleet.flush()
    (lost,) = outcome(fleet, tenant, "O-low", "OrderInventoryReleased")
    assert lost["reason"] == "STOCK_LOST"
    assert "A@WH1" in lost["message"]
    from tests.support.fleet import wait_until

    wait_until(
        lambda: reserved(fleet, tenant, "A") == (4, 1) and reserved(fleet, tenant, "B") == (0, 10),
        30,
        "O-low's holds to be gone everywhere and O-urgent's to stay",
    )
    reader = fleet.reader("availability")
    try:
        for record in reader.drain():
            if record["tenant_id"] == tenant:
                assert all(loc["reserved"] + loc["soft_allocated"] <= loc["on_hand"] for loc in record["locations"])
    finally:
        reader.close()
