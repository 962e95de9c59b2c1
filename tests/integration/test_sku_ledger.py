"""Stock movements through intake and the SKU ledger, on the real broker with the worker as a subprocess."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from agents.codec import Codec, LocalSchemaRegistry
from tests.support import events
from tests.support.broker import ROOT
from tests.support.fleet import Fleet


def location(record: dict[str, Any], name: str = "WH1") -> dict[str, Any]:
    return next(loc for loc in record["locations"] if loc["location"] == name)


def availability_of(fleet: Fleet, tenant: str, sku: str, described: bool = False, **expected: int) -> dict[str, Any]:
    """Wait for an availability record of tenant/sku whose WH1 figures match `expected` (and that carries
    the product's data, if `described`)."""
    reader = fleet.reader("availability")
    try:
        (record, *_) = reader.wait_for(
            lambda r: (
                r["tenant_id"] == tenant
                and r["sku"] == sku
                and (not described or r["description"] is not None)
                and any(
                    loc["location"] == "WH1" and all(loc[k] == v for k, v in expected.items()) for loc in r["locations"]
                )
            ),
            what=f"availability of {tenant}/{sku} with {expected}",
        )
        return record
    finally:
        reader.close()


def test_movements_publish_availability_with_product_data(fleet: Fleet, tenant: str) -> None:
    fleet.produce(
        "products",
        events.product(tenant, "SKU-A", description="Blue widget"),
        key=events.key(tenant, "SKU-A"),
    )
    fleet.flush()
    for movement in (
        events.received(tenant, "SKU-A", 40),
        events.adjusted(tenant, "SKU-A", -5),
        events.received(tenant, "SKU-A", 10, location="WH2"),
        events.counted(tenant, "SKU-A", 33),
    ):
        fleet.produce("stock_movements", movement, key=events.key(tenant, "SKU-A"))
        fleet.flush()  # one at a time: upstream partitioning differs per message
    # The product and the movements come from different topics, in no guaranteed order between them: the
    # product data joins the availability record from the first record after the product reached the ledger.
    record = availability_of(fleet, tenant, "SKU-A", on_hand=33, described=True)
    assert record["description"] == "Blue widget"
    assert location(record) == {
        "location": "WH1",
        "on_hand": 33,
        "reserved": 0,
        "soft_allocated": 0,
        "backordered": 0,
        "available": 33,
    }
    assert location(record, "WH2")["on_hand"] == 10
    assert record["_key"] == f"{tenant}:SKU-A"


def test_upstream_partitioning_is_not_trusted(fleet: Fleet, tenant: str) -> None:
    # The same SKU's movements arrive under unrelated keys, so on different upstream partitions.
    for i in range(8):
        fleet.produce("stock_movements", events.received(tenant, "SKU-B", 1), key=f"random-{i}".encode())
    fleet.flush()
    assert availability_of(fleet, tenant, "SKU-B", on_hand=8)["version"] == 8


def test_redelivered_movement_changes_nothing_and_reemits_the_same_event(fleet: Fleet, tenant: str) -> None:
    movement = events.received(tenant, "SKU-C", 5)
    fleet.produce("stock_movements", movement, key=b"upstream-partition-x")
    fleet.produce("stock_movements", movement, key=b"upstream-partition-y")
    fleet.flush()
    reader = fleet.reader("availability")
    try:
        records = reader.wait_for(lambda r: r["tenant_id"] == tenant and r["sku"] == "SKU-C", count=2)
    finally:
        reader.close()
    assert [location(r)["on_hand"] for r in records] == [5, 5]
    assert records[0]["event_id"] == records[1]["event_id"]
    assert records[0]["version"] == records[1]["version"] == 1


def test_avro_input_in_the_confluent_wire_format_is_accepted(fleet: Fleet, tenant: str) -> None:
    codec = Codec(LocalSchemaRegistry(ROOT / "schemas"))
    body = codec.encode_avro(events.received(tenant, "SKU-D", 9), "wms.stock-movements.v1.avsc")
    assert body[0] == 0
    fleet.produce("stock_movements", body, key=events.key(tenant, "SKU-D"))
    fleet.flush()
    availability_of(fleet, tenant, "SKU-D", on_hand=9)


def _bad_inputs(tenant: str) -> dict[str, tuple[bytes, str, str]]:
    good = events.received(tenant, "SKU-E", 1)
    without_tenant = {k: v for k, v in good.items() if k != "tenant_id"}
    missing_field = {k: v for k, v in good.items() if k != "location"}
    return {
        "undecodable bytes": (b"\xff\xfe\x00garbage", "UndecodableBytes", "neither JSON"),
        "invalid json": (b'{"event_type": "StockReceived", ', "InvalidJson", "invalid JSON"),
        "schema violation": (
            json.dumps(missing_field).encode(),
            "SchemaViolation",
            "location: Field required",
        ),
        "wrong type": (json.dumps({**good, "quantity": "many"}).encode(), "SchemaViolation", "quantity"),
        "zero quantity": (json.dumps({**good, "quantity": 0}).encode(), "SchemaViolation", "greater than 0"),
        "negative quantity": (
            json.dumps({**good, "quantity": -3}).encode(),
            "SchemaViolation",
            "greater than 0",
        ),
        "unknown event type": (
            json.dumps({**good, "event_type": "StockTeleported"}).encode(),
            "UnknownEventType",
            "'StockTeleported' is not accepted",
        ),
        "missing tenant": (json.dumps(without_tenant).encode(), "MissingTenant", "tenant_id"),
        "adjustment below zero": (
            json.dumps(events.adjusted(tenant, "SKU-E", -1000)).encode(),
            "BusinessRuleViolation",
            "would take on_hand",
        ),
    }


@pytest.mark.parametrize("kind", list(_bad_inputs("x")))
def test_bad_input_goes_to_the_dlq_and_the_partition_keeps_flowing(fleet: Fleet, tenant: str, kind: str) -> None:
    payload, error, reason_part = _bad_inputs(tenant)[kind]
    key = events.key(tenant, "SKU-E")
    fleet.produce("stock_movements", payload, key=key)
    fleet.produce("stock_movements", events.received(tenant, "SKU-E", 2), key=key)  # same key: same partition
    fleet.flush()
    reader = fleet.reader("dlq")
    try:
        (dead,) = reader.wait_for(
            lambda r: r["_key"] == key.decode() and r["error"] == error, what=f"a {error} dead letter"
        )
    finally:
        reader.close()
    assert reason_part in dead["reason"]
    assert dead["source_topic"] == fleet.names["stock_movements"]
    assert dead["source_offset"] >= 0
    assert base64.b64decode(dead["original_value"]) == payload  # also when the ledger refused it, after intake
    availability_of(fleet, tenant, "SKU-E", on_hand=2)


def test_dead_letters_are_counted_in_a_metric(fleet: Fleet, tenant: str) -> None:
    fleet.produce("stock_movements", b"not json at all", key=events.key(tenant, "SKU-F"))
    fleet.flush()
    worker = fleet.workers[0]

    def counted() -> float:
        _, text = worker.get("/metrics")
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('inventory_dlq_messages_total{error="InvalidJson"')
        )

    from tests.support.fleet import wait_until

    wait_until(lambda: counted() >= 1, 30, "the DLQ counter to count the bad message")


def test_a_record_keyed_to_one_tenant_cannot_change_another(fleet: Fleet, tenant: str) -> None:
    other = f"{tenant}-other"
    fleet.produce("stock_movements", events.received(other, "SKU-T", 5), key=events.key(other, "SKU-T"))
    forged = events.received(other, "SKU-T", 1000)  # the body names the other tenant...
    fleet.produce("stock_movements", forged, key=events.key(tenant, "SKU-T"))  # ...the key this one
    fleet.produce("stock_movements", events.received(other, "SKU-T", 1), key=events.key(other, "SKU-T"))
    fleet.flush()
    reader = fleet.reader("dlq")
    try:
        (dead,) = reader.wait_for(
            lambda r: r["_key"] == events.key(tenant, "SKU-T").decode() and r["error"] == "TenantMismatch",
            what="a TenantMismatch dead letter",
        )
    finally:
        reader.close()
    assert repr(other) in dead["reason"] and repr(tenant) in dead["reason"]
    assert base64.b64decode(dead["original_value"]) == json.dumps(forged).encode()
    record = availability_of(fleet, other, "SKU-T", on_hand=6)  # 5 + 1: the forged 1,000 never landed
    assert location(record)["on_hand"] == 6
