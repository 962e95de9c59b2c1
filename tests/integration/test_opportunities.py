"""Opportunity soft holds on the real broker: allocation, rejection, release, expiry, conversion by an order
naming the opportunity, and pre-emption by a short firm order; availability read from its topic."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.test_orders import outcome, place, setup_tenant
from tests.support import events
from tests.support.fleet import Fleet, wait_until

FUTURE = "2099-12-31"


def opportunity(
    tenant: str,
    opportunity_id: str,
    items: list[tuple[str, int]],
    probability: float = 0.6,
    stage: str = "PROPOSAL",
    expected_close_date: str = FUTURE,
    occurred_at: str | None = None,
) -> dict[str, Any]:
    return {
        "event_id": f"ev-{uuid.uuid4().hex[:12]}",
        "event_type": "OpportunityUpserted",
        "tenant_id": tenant,
        "occurred_at": occurred_at or datetime.now(UTC).isoformat(),
        "opportunity_id": opportunity_id,
        "customer_id": "C1",
        "sales_rep_id": "REP-7",
        "stage": stage,
        "probability": probability,
        "expected_close_date": expected_close_date,
        "items": [{"sku": sku, "quantity": qty, "location": "WH1", "unit_price": "90.00"} for sku, qty in items],
    }


def upsert(fleet: Fleet, tenant: str, opportunity_id: str, items: list[tuple[str, int]], **fields: Any) -> None:
    event = opportunity(tenant, opportunity_id, items, **fields)
    fleet.produce("opportunities", event, key=events.key(tenant, opportunity_id))
    fleet.flush()


def opportunity_events(
    fleet: Fleet, tenant: str, opportunity_id: str, event_type: str | None = None, count: int = 1
) -> list[dict[str, Any]]:
    reader = fleet.reader("allocations")
    try:
        return reader.wait_for(
            lambda r: (
                r["tenant_id"] == tenant
                and r["event_type"].startswith("Opportunity")
                and r.get("opportunity_id") == opportunity_id
                and (event_type is None or r["event_type"] == event_type)
            ),
            count=count,
            what=f"{event_type or 'an opportunity event'} for {opportunity_id}",
        )
    finally:
        reader.close()


def wait_wh1(fleet: Fleet, tenant: str, sku: str, **expected: int) -> None:
    """Wait until the latest availability of `sku` at WH1 shows `expected` (on_hand, reserved, ...)."""
    reader = fleet.reader("availability")  # one reader, drained incrementally while waiting
    last: dict[str, int] = {}

    def matches() -> bool:
        records = [r for r in reader.drain() if r["tenant_id"] == tenant and r["sku"] == sku]
        if not records:
            return False
        latest = max(records, key=lambda r: r["version"])
        loc = next((loc for loc in latest["locations"] if loc["location"] == "WH1"), None)
        last.clear()
        last.update({k: loc[k] for k in expected} if loc else {})
        return last == expected

    try:
        wait_until(matches, 30, f"{sku}@WH1 to show {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen {last}") from None
    finally:
        reader.close()


def assert_never_oversold(fleet: Fleet, tenant: str) -> None:
    """Every availability record of the tenant: reserved + soft_allocated <= on_hand."""
    reader = fleet.reader("availability")
    try:
        rows = [(r["version"], loc) for r in reader.drain() if r["tenant_id"] == tenant for loc in r["locations"]]
    finally:
        reader.close()
    assert rows
    oversold = [(v, loc) for v, loc in rows if loc["reserved"] + loc["soft_allocated"] > loc["on_hand"]]
    assert not oversold, oversold


def test_a_likely_opportunity_soft_holds_all_its_items(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 10, "B": 5})
    upsert(fleet, tenant, "OP1", [("A", 4), ("B", 2)], probability=0.3, stage="QUALIFIED")
    (allocated,) = opportunity_events(fleet, tenant, "OP1")
    assert allocated["event_type"] == "OpportunityInventoryAllocated"
    assert allocated["_key"] == f"{tenant}:OP1"
    assert (allocated["customer_id"], allocated["stage"], allocated["probability"]) == ("C1", "QUALIFIED", 0.3)
    assert [(i["sku"], i["quantity"], i["unit_price"]) for i in allocated["items"]] == [
        ("A", 4, "90.00"),
        ("B", 2, "90.00"),
    ]
    assert datetime.fromisoformat(allocated["reserved_until"]) == datetime(2100, 1, 1, tzinfo=UTC)
    wait_wh1(fleet, tenant, "A", on_hand=10, reserved=0, soft_allocated=4, available=6)
    wait_wh1(fleet, tenant, "B", on_hand=5, reserved=0, soft_allocated=2, available=3)


def test_unlikely_lost_and_short_opportunities_are_rejected_and_hold_nothing(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 10, "B": 5})
    upsert(fleet, tenant, "OP-low", [("A", 1)], probability=0.29)
    upsert(fleet, tenant, "OP-lost", [("A", 1)], probability=0.9, stage="CLOSED_LOST")
    upsert(fleet, tenant, "OP-short", [("A", 4), ("B", 9)])
    (low,) = opportunity_events(fleet, tenant, "OP-low")
    (lost,) = opportunity_events(fleet, tenant, "OP-lost")
    (short,) = opportunity_events(fleet, tenant, "OP-short")
    assert [r["event_type"] for r in (low, lost, short)] == ["OpportunityInventoryRejected"] * 3
    assert (low["reason"], lost["reason"], short["reason"]) == (
        "LOW_PROBABILITY",
        "CLOSED_LOST",
        "INSUFFICIENT_INVENTORY",
    )
    assert short["unavailable_items"] == [
        {"sku": "B", "location": "WH1", "required": 9, "available": 5, "shortfall": 4}
    ]
    # All or none: A accepted its part, and gave it back when B refused.
    wait_wh1(fleet, tenant, "A", reserved=0, soft_allocated=0, available=10)
    wait_wh1(fleet, tenant, "B", reserved=0, soft_allocated=0, available=5)


def test_closed_lost_releases_the_holds(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 10})
    upsert(fleet, tenant, "OP1", [("A", 7)], probability=0.8, stage="NEGOTIATION")
    opportunity_events(fleet, tenant, "OP1", "OpportunityInventoryAllocated")
    wait_wh1(fleet, tenant, "A", soft_allocated=7, available=3)
    upsert(fleet, tenant, "OP1", [("A", 7)], probability=0.8, stage="CLOSED_LOST")
    (released,) = opportunity_events(fleet, tenant, "OP1", "OpportunityInventoryReleased")
    assert (released["reason"], released["stage"]) == ("LOST", "CLOSED_LOST")
    assert [(i["sku"], i["quantity"]) for i in released["items"]] == [("A", 7)]
    wait_wh1(fleet, tenant, "A", soft_allocated=0, available=10)


def test_a_passed_expected_close_date_expires_the_holds_at_the_next_tick(
    fleet_factory: Callable[[], Fleet], tenant: str
) -> None:
    fleet = fleet_factory()
    fleet.add_worker().wait_ready()
    setup_tenant(fleet, tenant, {"A": 10})
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    upsert(fleet, tenant, "OP1", [("A", 3)], expected_close_date=yesterday)
    kinds = [r["event_type"] for r in opportunity_events(fleet, tenant, "OP1", count=2)]
    assert kinds == ["OpportunityInventoryAllocated", "OpportunityInventoryReleased"]
    (released,) = opportunity_events(fleet, tenant, "OP1", "OpportunityInventoryReleased")
    assert released["reason"] == "EXPIRED"
    wait_wh1(fleet, tenant, "A", soft_allocated=0, available=10)


def test_an_order_naming_the_opportunity_converts_its_soft_hold(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 10})
    upsert(fleet, tenant, "OP1", [("A", 6)], probability=0.9, stage="CLOSED_WON")
    opportunity_events(fleet, tenant, "OP1", "OpportunityInventoryAllocated")
    wait_wh1(fleet, tenant, "A", reserved=0, soft_allocated=6, available=4)
    place(fleet, tenant, "O1", [("A", 5)], opportunity_id="OP1")  # 5 > the 4 available to promise
    (allocated,) = outcome(fleet, tenant, "O1", "OrderInventoryAllocated")
    assert allocated["opportunity_id"] == "OP1"
    (converted,) = opportunity_events(fleet, tenant, "OP1", "OpportunityInventoryReleased")
    assert (converted["reason"], converted["order_id"]) == ("CONVERTED", "O1")
    assert [(i["sku"], i["quantity"]) for i in converted["items"]] == [("A", 5)]
    # Soft 6 -> 1 and reserved 0 -> 5: the same 5 units, counted once; what is free did not move.
    wait_wh1(fleet, tenant, "A", on_hand=10, reserved=5, soft_allocated=1, available=4)
    assert_never_oversold(fleet, tenant)


def test_a_short_firm_order_pre_empts_the_least_likely_soft_hold(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"A": 10})
    upsert(fleet, tenant, "OP-likely", [("A", 2)], probability=0.9)
    opportunity_events(fleet, tenant, "OP-likely", "OpportunityInventoryAllocated")
    upsert(fleet, tenant, "OP-maybe", [("A", 6)], probability=0.35)
    opportunity_events(fleet, tenant, "OP-maybe", "OpportunityInventoryAllocated")
    wait_wh1(fleet, tenant, "A", reserved=0, soft_allocated=8, available=2)
    place(fleet, tenant, "O1", [("A", 5)])  # 3 short of what is free
    outcome(fleet, tenant, "O1", "OrderInventoryAllocated")
    (preempted,) = opportunity_events(fleet, tenant, "OP-maybe", "OpportunityInventoryPreempted")
    assert preempted["order_id"] == "O1"
    assert [(i["sku"], i["location"], i["quantity"]) for i in preempted["items"]] == [("A", "WH1", 6)]
    wait_wh1(fleet, tenant, "A", on_hand=10, reserved=5, soft_allocated=2, available=3)
    assert_never_oversold(fleet, tenant)
    reader = fleet.reader("allocations")
    try:
        others = [
            r
            for r in reader.drain()
            if r["tenant_id"] == tenant and r.get("opportunity_id") == "OP-likely" and "Preempted" in r["event_type"]
        ]
    finally:
        reader.close()
    assert others == []
