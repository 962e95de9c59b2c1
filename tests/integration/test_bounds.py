"""Issue 11's poison records, black-box on the real broker: no input makes the fleet write a record over
the bound, and whatever cannot be accepted goes to the DLQ with its reason while the partition flows.

- an order with a thousand lines is allocated;
- one receipt fills 4,000 queued backorders at once;
- a record near the broker's maximum size is dead-lettered with a reference (its bytes cannot fit);
- a valid input too big to accept is dead-lettered as TooLarge with its original bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json

from confluent_kafka import Producer

from agents.core.events import MAX_LINES
from tests.integration.test_orders import outcome, setup_tenant
from tests.support import events
from tests.support.fleet import Fleet

KAFKA_RECORD_LIMIT = 1_048_588


def biggest_record(fleet: Fleet, *topic_ids: str) -> int:
    reader = fleet.reader(*topic_ids)
    try:
        return max((len(json.dumps(r)) for r in reader.drain()), default=0)
    finally:
        reader.close()


def test_an_order_with_a_thousand_lines_is_allocated(fleet: Fleet, tenant: str) -> None:
    skus = [f"S{n}" for n in range(20)]
    setup_tenant(fleet, tenant, dict.fromkeys(skus, 1_000))
    lines = [(skus[n % len(skus)], 1, "WH1") for n in range(MAX_LINES)]
    order = events.order(tenant, "BIG", "C1", lines)  # type: ignore[arg-type]
    fleet.produce("orders", order, key=events.key(tenant, "BIG"))
    fleet.flush()
    (allocated,) = outcome(fleet, tenant, "BIG", timeout=120)
    assert allocated["event_type"] == "OrderInventoryAllocated", allocated
    assert len(allocated["lines"]) == MAX_LINES
    assert biggest_record(fleet, "allocations", "order_status") < KAFKA_RECORD_LIMIT


def test_one_receipt_fills_four_thousand_backorders(fleet: Fleet, tenant: str) -> None:
    setup_tenant(fleet, tenant, {"HOT": 0}, credit_limit="100000000")
    count = 4_000
    for n in range(count):
        order = events.order(tenant, f"Q{n}", "C1", [("HOT", 1)], backorder_policy="BACKORDER")
        fleet.produce("orders", order, key=events.key(tenant, f"Q{n}"))
    fleet.flush()
    reader = fleet.reader("allocations")
    try:
        reader.wait_for(
            lambda r: r["tenant_id"] == tenant and r["event_type"] == "OrderBackordered",
            count=count,
            timeout=300,
            what=f"{count} backorders",
        )
        fleet.produce("stock_movements", events.received(tenant, "HOT", count), key=events.key(tenant, "HOT"))
        fleet.flush()
        filled = reader.wait_for(
            lambda r: r["tenant_id"] == tenant and r["event_type"] == "OrderInventoryAllocated",
            count=count,
            timeout=300,
            what=f"{count} backorders filled by one receipt",
        )
    finally:
        reader.close()
    assert len({r["order_id"] for r in filled}) == count
    assert biggest_record(fleet, "availability", "backorders") < KAFKA_RECORD_LIMIT


def test_inputs_near_the_broker_limit_are_dead_lettered_and_the_partition_flows(fleet: Fleet, tenant: str) -> None:
    producer = Producer({"bootstrap.servers": fleet.bootstrap, "message.max.bytes": 2_000_000})
    garbage = b"{" + b"x" * 1_040_000  # not JSON, and too big to copy into a dead letter
    long_id = "L" * 199
    too_big = events.order(tenant, "HUGE", "C1", [(f"SKU-{'s' * 190}", 1, long_id) for _ in range(MAX_LINES)])
    too_big_bytes = json.dumps(too_big).encode()
    assert 200_000 < len(too_big_bytes) < KAFKA_RECORD_LIMIT
    for value, key in ((garbage, b"bad"), (too_big_bytes, events.key(tenant, "HUGE"))):
        producer.produce(fleet.names["orders"], value=value, key=key)
    assert producer.flush(30) == 0
    setup_tenant(fleet, tenant, {"A": 5})  # and the partitions keep flowing
    fleet.produce("orders", events.order(tenant, "AFTER", "C1", [("A", 1)]), key=events.key(tenant, "AFTER"))
    fleet.flush()
    outcome(fleet, tenant, "AFTER", "OrderInventoryAllocated")
    reader = fleet.reader("dlq")
    try:
        (ref,) = reader.wait_for(lambda r: r.get("original_key") == base64.b64encode(b"bad").decode(), what="dlq ref")
        (large,) = reader.wait_for(lambda r: r["error"] == "TooLarge" and r["tenant_id"] == tenant, what="TooLarge")
    finally:
        reader.close()
    assert ref["original_value"] is None
    assert hashlib.sha256(garbage).hexdigest() in ref["reason"] and "not copied" in ref["reason"]
    assert "bytes once accepted" in large["reason"]
    kept = large["original_value"]
    if kept is not None:  # kept whole when it fits, else a reference like the one above
        assert base64.b64decode(kept) == too_big_bytes
    else:
        assert hashlib.sha256(too_big_bytes).hexdigest() in large["reason"]
