"""Reservations expire on event time: reserved_until = order_date + hold, walked by timer ticks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tests.integration.test_orders import outcome, place, reserved, setup_tenant
from tests.support.fleet import Fleet, wait_until


def test_an_allocation_expires_after_its_hold_and_releases_stock_and_credit(
    fleet_factory: Callable[[], Fleet], tenant: str
) -> None:
    fleet = fleet_factory()
    fleet.add_worker(INVENTORY_RESERVATION_HOLD_S="3").wait_ready()
    setup_tenant(fleet, tenant, {"A": 10, "B": 10}, credit_limit="1000", tier="BRONZE")
    place(fleet, tenant, "O1", [("A", 4), ("B", 2)])  # 600 of 1000 credit
    (allocated,) = outcome(fleet, tenant, "O1", "OrderInventoryAllocated")
    (released,) = outcome(fleet, tenant, "O1", "OrderInventoryReleased")
    assert released["reason"] == "EXPIRED"
    assert datetime.fromisoformat(released["occurred_at"]) >= datetime.fromisoformat(allocated["reserved_until"])
    wait_until(
        lambda: reserved(fleet, tenant, "A") == (0, 10) and reserved(fleet, tenant, "B") == (0, 10),
        30,
        "the expired reservations to be released",
    )
    place(fleet, tenant, "O2", [("A", 9)])  # 900: fits only if O1's exposure was released
    assert outcome(fleet, tenant, "O2")[0]["event_type"] == "OrderInventoryAllocated"


def test_an_order_whose_hold_has_already_passed_expires_at_the_next_tick(
    fleet_factory: Callable[[], Fleet], tenant: str
) -> None:
    fleet = fleet_factory()
    fleet.add_worker(INVENTORY_RESERVATION_HOLD_S="60").wait_ready()
    setup_tenant(fleet, tenant, {"A": 10})
    old = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    place(fleet, tenant, "O1", [("A", 4)], order_date=old)  # event time decides, not arrival time
    kinds = [r["event_type"] for r in outcome(fleet, tenant, "O1", count=2)]
    assert kinds == ["OrderInventoryAllocated", "OrderInventoryReleased"]
    wait_until(lambda: reserved(fleet, tenant, "A") == (0, 10), 30, "the stock to be free again")
