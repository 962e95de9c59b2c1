"""A worker killed with SIGKILL restarts from its local state plus the changelog tail, and a worker whose
data folder is gone rebuilds it from the changelog; redelivered movements are never counted twice."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from tests.support import events
from tests.support.fleet import Fleet

SKUS = ("SKU-R1", "SKU-R2", "SKU-R3")


def highest_on_hand(fleet: Fleet, tenant: str) -> dict[str, int]:
    reader = fleet.reader("availability")
    try:
        seen: dict[str, int] = {}
        for record in reader.drain():
            if record["tenant_id"] == tenant:
                on_hand = sum(loc["on_hand"] for loc in record["locations"])
                seen[record["sku"]] = max(seen.get(record["sku"], 0), on_hand)
        return seen
    finally:
        reader.close()


def wait_for_on_hand(fleet: Fleet, tenant: str, expected: int) -> None:
    reader = fleet.reader("availability")
    try:
        for sku in SKUS:
            reader.wait_for(
                lambda r, sku=sku: (
                    r["tenant_id"] == tenant
                    and r["sku"] == sku
                    and sum(loc["on_hand"] for loc in r["locations"]) == expected
                ),
                timeout=90,
                what=f"{sku} on_hand {expected}",
            )
    finally:
        reader.close()


def test_sigkill_mid_burst_and_a_lost_data_folder_lose_and_double_nothing(
    fleet_factory: Callable[[], Fleet], tenant: str
) -> None:
    fleet = fleet_factory()
    worker = fleet.add_worker()
    worker.wait_ready()
    burst = [events.received(tenant, sku, 1) for _ in range(150) for sku in SKUS]
    for movement in burst:
        fleet.produce("stock_movements", movement, key=events.key(tenant, movement["sku"]))
    fleet.flush()
    reader = fleet.reader("availability")
    reader.wait_for(lambda r: r["tenant_id"] == tenant, count=30, what="the burst to be under way")
    reader.close()
    worker.kill()  # mid-burst: some movements applied, offsets not all committed

    worker.start()
    worker.wait_ready()
    # Upstream redelivers part of the burst too.
    for movement in burst[:60]:
        fleet.produce("stock_movements", movement, key=events.key(tenant, movement["sku"]))
    fleet.flush()
    wait_for_on_hand(fleet, tenant, 150)
    assert highest_on_hand(fleet, tenant) == dict.fromkeys(SKUS, 150)

    worker.stop()
    shutil.rmtree(Path(worker.env["INVENTORY_DATA_DIR"]))
    worker.start()
    worker.wait_ready()
    for sku in SKUS:
        fleet.produce("stock_movements", events.received(tenant, sku, 1), key=events.key(tenant, sku))
    fleet.produce("stock_movements", burst[0], key=events.key(tenant, burst[0]["sku"]))  # an old duplicate
    fleet.flush()
    wait_for_on_hand(fleet, tenant, 151)
    assert highest_on_hand(fleet, tenant) == dict.fromkeys(SKUS, 151)
