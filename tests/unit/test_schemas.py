"""The Avro schemas in schemas/ say the same as the JSON wire format (DESIGN.md sections 2 and 7).

Every input event, the availability record, the dead letter and every output record type is encoded with
its topic's schema in the Confluent wire format, decoded again and compared with what went in; the same
input events also travel as JSON. No Kafka, no network.
"""

from __future__ import annotations

import io
import json
import struct
import typing
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
import yaml
from pydantic import BaseModel, TypeAdapter

from agents.codec import AVRO_NAMESPACE, MAGIC_BYTE, Codec, DecodeError, LocalSchemaRegistry
from agents.core.events import (
    INPUT_EVENTS_BY_TOPIC,
    AllocatedLine,
    BackorderCancelled,
    BackorderCreated,
    BackorderFulfilled,
    CustomerPricingUpdated,
    CustomerUpserted,
    Event,
    FulfillmentAccepted,
    FulfillmentCompleted,
    FulfillmentCompletedEvent,
    FulfillmentItem,
    FulfillmentRejected,
    FulfillmentStarted,
    FulfillmentStatusChanged,
    InvalidEvent,
    LocationAvailability,
    OpportunityInventoryAllocated,
    OpportunityInventoryPreempted,
    OpportunityInventoryRejected,
    OpportunityInventoryReleased,
    OpportunityItem,
    OpportunityLine,
    OpportunityUpserted,
    OrderAllocationRejected,
    OrderBackordered,
    OrderCancelled,
    OrderInventoryAllocated,
    OrderInventoryReleased,
    OrderInventorySynced,
    OrderLine,
    OrderPlaced,
    OrderSnapshot,
    Output,
    PricingUpdate,
    ProductUpserted,
    ReleasedLine,
    ShipmentDelivered,
    ShipmentDispatched,
    SkuAvailability,
    SnapshotLine,
    StockAdjusted,
    StockCounted,
    StockReceived,
    SyncedLine,
    UnavailableItem,
    parse_input,
)
from agents.dlq import DeadLetter, dead_letter
from agents.envelope import Envelope, SourceRef
from agents.topology import load_topology

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS_DIR = ROOT / "schemas"
TOPOLOGY = load_topology(ROOT / "topics.yaml")
SCHEMA_FILES = sorted(p.name for p in SCHEMAS_DIR.glob("*.avsc"))
REGISTRY_IDS: dict[str, int] = yaml.safe_load((SCHEMAS_DIR / "local-registry.yaml").read_text())["schemas"]
# Internal topics carry JSON; their schemas document it and are not Avro on the wire.
# Schemas whose records carry no event_type: the internal envelope and the view records (field `record`).
INTERNAL_SCHEMAS = {
    "inventory.internal.commands.v1.avsc",
    "inventory.customer-state.v1.avsc",
    "inventory.order-status.v1.avsc",
    "inventory.opportunity-status.v1.avsc",
}

T0 = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(LocalSchemaRegistry(SCHEMAS_DIR))


def raw_schema(schema_file: str) -> Any:
    return json.loads((SCHEMAS_DIR / schema_file).read_text())


def schema_file_of(topic_id: str) -> str:
    return TOPOLOGY[topic_id].schema_file


def records_of(schema_file: str) -> dict[str, dict[str, Any]]:
    """The top-level records of a topic schema (a union), by name."""
    return {r["name"]: r for r in raw_schema(schema_file)}


def named_definitions(node: Any) -> Iterator[str]:
    """Every full name defined (not merely referred to) anywhere in a schema."""
    if isinstance(node, list):
        for n in node:
            yield from named_definitions(n)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed"):
            yield f"{node.get('namespace', AVRO_NAMESPACE)}.{node['name']}"
        for key in ("fields", "items", "values", "type"):
            if key in node:
                yield from named_definitions(node[key])


def avro_round_trip(codec: Codec, record: dict[str, Any], schema_file: str) -> Any:
    data = codec.encode_avro(record, schema_file)
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == MAGIC_BYTE
    assert schema_id == REGISTRY_IDS[schema_file]
    return codec.decode(data)


# ---- the schema files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("schema_file", SCHEMA_FILES)
def test_every_schema_file_parses_with_fastavro(schema_file: str) -> None:
    fastavro.parse_schema(raw_schema(schema_file))


@pytest.mark.parametrize("schema_file", SCHEMA_FILES)
def test_every_schema_is_a_union_of_documented_records_in_the_erp_namespace(schema_file: str) -> None:
    schema = raw_schema(schema_file)
    assert isinstance(schema, list) and schema
    for record in schema:
        assert record["type"] == "record"
        assert record["namespace"] == AVRO_NAMESPACE
        assert record.get("doc"), f"{record['name']} has no doc"
        if schema_file not in INTERNAL_SCHEMAS:  # the codec picks the union branch by event_type
            event_type = next(f for f in record["fields"] if f["name"] == "event_type")
            assert event_type["type"] == "string"


@pytest.mark.parametrize("schema_file", SCHEMA_FILES)
def test_no_schema_defines_a_named_type_twice_and_all_live_in_the_erp_namespace(schema_file: str) -> None:
    names = list(named_definitions(raw_schema(schema_file)))
    assert all(n.startswith(f"{AVRO_NAMESPACE}.") for n in names), names
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("schema_file", SCHEMA_FILES)
def test_every_nullable_field_defaults_to_null(schema_file: str) -> None:
    def check(node: Any) -> None:
        if isinstance(node, list):
            for n in node:
                check(n)
        elif isinstance(node, dict):
            for fld in node.get("fields", []):
                if isinstance(fld["type"], list) and "null" in fld["type"]:
                    assert fld["type"][0] == "null" and fld["default"] is None, fld["name"]
                check(fld["type"])
            for key in ("items", "values"):
                check(node.get(key))

    check(raw_schema(schema_file))


@pytest.mark.parametrize("topic_id", sorted(TOPOLOGY.topics))
def test_every_topic_schema_file_exists_and_is_in_the_local_registry(topic_id: str) -> None:
    schema_file = schema_file_of(topic_id)
    assert (SCHEMAS_DIR / schema_file).is_file()
    assert schema_file in REGISTRY_IDS


def test_the_local_registry_lists_exactly_the_schema_files_with_unique_positive_ids() -> None:
    assert sorted(REGISTRY_IDS) == SCHEMA_FILES
    ids = list(REGISTRY_IDS.values())
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("topic_id", sorted(INPUT_EVENTS_BY_TOPIC))
def test_an_input_schema_has_one_record_per_event_type_with_the_model_fields(topic_id: str) -> None:
    records = records_of(schema_file_of(topic_id))
    models = {m.model_fields["event_type"].annotation.__args__[0]: m for m in INPUT_EVENTS_BY_TOPIC[topic_id]}  # type: ignore[union-attr]
    assert set(records) == set(models)
    for name, model in models.items():
        assert [f["name"] for f in records[name]["fields"]] == list(model.model_fields), name


def test_the_availability_schema_has_the_fields_of_the_sku_availability_model() -> None:
    (record,) = raw_schema(schema_file_of("availability"))
    assert record["name"] == "SkuAvailability"
    assert {f["name"] for f in record["fields"]} == set(SkuAvailability.model_fields)


def test_the_dlq_schema_has_the_fields_of_the_dead_letter_model() -> None:
    (record,) = raw_schema(schema_file_of("dlq"))
    assert record["name"] == "DeadLetter"
    assert [f["name"] for f in record["fields"]] == list(DeadLetter.model_fields)


# ---- input events: sample factories ----------------------------------------------------------------------


def _common(event_type: str, n: int = 1) -> dict[str, Any]:
    return {
        "event_id": f"evt-{event_type.lower()}-{n:04d}",
        "event_type": event_type,
        "tenant_id": "acme-eu",
        "occurred_at": T0,
    }


def product_upserted_factory(**overrides: Any) -> ProductUpserted:
    return ProductUpserted(
        **{
            **_common("ProductUpserted"),
            "sku": "SKU-WIDGET-042",
            "description": "Stainless steel widget, 42 mm",
            "unit_price": Decimal("19.990000"),
            "unit_cost": Decimal("7.25"),
            "lead_time_days": 14,
            **overrides,
        }
    )


def stock_received_factory(**overrides: Any) -> StockReceived:
    return StockReceived(
        **{
            **_common("StockReceived"),
            "movement_id": "mv-20250314-0001",
            "sku": "SKU-WIDGET-042",
            "location": "WH-BERLIN",
            "quantity": 250,
            **overrides,
        }
    )


def stock_adjusted_factory(**overrides: Any) -> StockAdjusted:
    return StockAdjusted(
        **{
            **_common("StockAdjusted"),
            "movement_id": "mv-20250314-0002",
            "sku": "SKU-WIDGET-042",
            "location": "WH-BERLIN",
            "delta": -3,
            "reason": "damaged in handling",
            **overrides,
        }
    )


def stock_counted_factory(**overrides: Any) -> StockCounted:
    return StockCounted(
        **{
            **_common("StockCounted"),
            "movement_id": "mv-20250314-0003",
            "sku": "SKU-WIDGET-042",
            "location": "WH-BERLIN",
            "quantity": 0,
            **overrides,
        }
    )


def customer_upserted_factory(**overrides: Any) -> CustomerUpserted:
    return CustomerUpserted(
        **{
            **_common("CustomerUpserted"),
            "customer_id": "CUST-1001",
            "name": "Müller & Söhne GmbH",
            "tier": "GOLD",
            "credit_limit": Decimal("50000.00"),
            "credit_used": Decimal("12345.67"),
            **overrides,
        }
    )


def customer_pricing_updated_factory(**overrides: Any) -> CustomerPricingUpdated:
    return CustomerPricingUpdated(
        **{
            **_common("CustomerPricingUpdated"),
            "customer_id": "CUST-1001",
            "updates": (
                PricingUpdate(sku="SKU-WIDGET-042", customer_price=Decimal("17.50")),
                PricingUpdate(sku="SKU-GADGET-007", discount_percentage=Decimal("12.5")),
                PricingUpdate(sku="SKU-BOLT-M8", customer_price=Decimal("0.08"), discount_percentage=Decimal("0")),
            ),
            **overrides,
        }
    )


def opportunity_upserted_factory(**overrides: Any) -> OpportunityUpserted:
    return OpportunityUpserted(
        **{
            **_common("OpportunityUpserted"),
            "opportunity_id": "OPP-2025-0042",
            "customer_id": "CUST-1001",
            "sales_rep_id": "REP-17",
            "stage": "NEGOTIATION",
            "probability": 0.65,
            "expected_close_date": date(2025, 4, 30),
            "items": (
                OpportunityItem(sku="SKU-WIDGET-042", quantity=120, location="WH-BERLIN", unit_price=Decimal("18")),
                OpportunityItem(sku="SKU-GADGET-007", quantity=5, location="WH-HAMBURG", unit_price=Decimal("99.9")),
            ),
            **overrides,
        }
    )


def order_placed_factory(**overrides: Any) -> OrderPlaced:
    return OrderPlaced(
        **{
            **_common("OrderPlaced"),
            "order_id": "ORD-778899",
            "order_number": "SO-2025-000123",
            "customer_id": "CUST-1001",
            "order_date": T0,
            "lines": (
                OrderLine(line_id="1", sku="SKU-WIDGET-042", quantity=10, location="WH-BERLIN"),
                OrderLine(line_id="2", sku="SKU-GADGET-007", quantity=1, location="WH-HAMBURG"),
            ),
            "shipping_address": {
                "street": "Hauptstraße 5",
                "city": "Berlin",
                "postal_code": "10115",
                "country": "DE",
            },
            "priority": "HIGH",
            "backorder_policy": "BACKORDER",
            "opportunity_id": "OPP-2025-0042",
            **overrides,
        }
    )


def order_cancelled_factory(**overrides: Any) -> OrderCancelled:
    return OrderCancelled(
        **{**_common("OrderCancelled"), "order_id": "ORD-778899", "reason": "customer request", **overrides}
    )


def order_snapshot_factory(**overrides: Any) -> OrderSnapshot:
    return OrderSnapshot(
        **{
            **_common("OrderSnapshot"),
            "order_id": "ORD-778899",
            "customer_id": "CUST-1001",
            "status": "INVENTORY_ALLOCATED",
            "lines": (
                SnapshotLine(line_id="1", sku="SKU-WIDGET-042", quantity=10, location="WH-BERLIN"),
                SnapshotLine(line_id="2", sku="SKU-GADGET-007", quantity=0, location="WH-HAMBURG"),
            ),
            **overrides,
        }
    )


def fulfillment_started_factory(**overrides: Any) -> FulfillmentStarted:
    return FulfillmentStarted(
        **{
            **_common("FulfillmentStarted"),
            "fulfillment_id": "FUL-5501",
            "order_id": "ORD-778899",
            "items": (
                FulfillmentItem(sku="SKU-WIDGET-042", quantity=10, location="WH-BERLIN"),
                FulfillmentItem(sku="SKU-GADGET-007", quantity=1, location="WH-HAMBURG"),
            ),
            "shipping_method": "EXPRESS",
            "tracking_number": "1Z999AA10123456784",
            **overrides,
        }
    )


def fulfillment_completed_factory(**overrides: Any) -> FulfillmentCompleted:
    return FulfillmentCompleted(
        **{
            **_common("FulfillmentCompleted"),
            "fulfillment_id": "FUL-5501",
            "order_id": "ORD-778899",
            **overrides,
        }
    )


def shipment_dispatched_factory(**overrides: Any) -> ShipmentDispatched:
    return ShipmentDispatched(
        **{
            **_common("ShipmentDispatched"),
            "fulfillment_id": "FUL-5501",
            "order_id": "ORD-778899",
            "carrier": "DHL",
            "tracking_number": "JD014600006281234567",
            "estimated_delivery": datetime(2025, 3, 17, 18, 0, tzinfo=UTC),
            **overrides,
        }
    )


def shipment_delivered_factory(**overrides: Any) -> ShipmentDelivered:
    return ShipmentDelivered(
        **{
            **_common("ShipmentDelivered"),
            "fulfillment_id": "FUL-5501",
            "order_id": "ORD-778899",
            "delivered_at": datetime(2025, 3, 17, 14, 32, 5, tzinfo=UTC),
            **overrides,
        }
    )


FACTORIES: dict[type[Event], Callable[..., Event]] = {
    ProductUpserted: product_upserted_factory,
    StockReceived: stock_received_factory,
    StockAdjusted: stock_adjusted_factory,
    StockCounted: stock_counted_factory,
    CustomerUpserted: customer_upserted_factory,
    CustomerPricingUpdated: customer_pricing_updated_factory,
    OpportunityUpserted: opportunity_upserted_factory,
    OrderPlaced: order_placed_factory,
    OrderCancelled: order_cancelled_factory,
    OrderSnapshot: order_snapshot_factory,
    FulfillmentStarted: fulfillment_started_factory,
    FulfillmentCompleted: fulfillment_completed_factory,
    ShipmentDispatched: shipment_dispatched_factory,
    ShipmentDelivered: shipment_delivered_factory,
}

# (case id, topic id, sample): one case per input event type, plus variants for optional fields and unions.
INPUT_CASES: list[tuple[str, str, Callable[[], Event]]] = [
    (model.__name__, topic_id, FACTORIES[model])
    for topic_id, models in INPUT_EVENTS_BY_TOPIC.items()
    for model in models
] + [
    ("OrderPlaced-without-opportunity", "orders", lambda: order_placed_factory(opportunity_id=None)),
    (
        "OrderPlaced-with-default-policy",
        "orders",
        lambda: order_placed_factory(priority="MEDIUM", backorder_policy="REJECT", lines=(), shipping_address={}),
    ),
    (
        "OpportunityUpserted-closing-at-a-timestamp",
        "opportunities",
        lambda: opportunity_upserted_factory(expected_close_date=datetime(2025, 4, 30, 17, 0, tzinfo=UTC), items=()),
    ),
    (
        "ShipmentDispatched-arriving-on-a-date",
        "shipments",
        lambda: shipment_dispatched_factory(estimated_delivery=date(2025, 3, 17)),
    ),
    ("StockAdjusted-upwards", "stock_movements", lambda: stock_adjusted_factory(delta=2**31 - 1)),
]


def test_every_input_event_type_has_a_sample_factory() -> None:
    assert {m for models in INPUT_EVENTS_BY_TOPIC.values() for m in models} == set(FACTORIES)


@pytest.mark.parametrize(("topic_id", "make"), [c[1:] for c in INPUT_CASES], ids=[c[0] for c in INPUT_CASES])
def test_an_input_event_survives_an_avro_round_trip_with_its_topic_schema(
    codec: Codec, topic_id: str, make: Callable[[], Event]
) -> None:
    event = make()
    record = event.model_dump(mode="json")
    decoded = avro_round_trip(codec, record, schema_file_of(topic_id))
    assert set(decoded) == set(record)
    assert parse_input(topic_id, decoded) == event
    # Money comes back as the same Decimal value (its text may differ: "12.50" -> "12.5"): lossless.
    assert codec.encode_avro(decoded, schema_file_of(topic_id)) == codec.encode_avro(record, schema_file_of(topic_id))


@pytest.mark.parametrize(("topic_id", "make"), [c[1:] for c in INPUT_CASES], ids=[c[0] for c in INPUT_CASES])
def test_an_input_event_survives_a_json_round_trip(codec: Codec, topic_id: str, make: Callable[[], Event]) -> None:
    event = make()
    assert parse_input(topic_id, codec.decode(event.model_dump_json().encode())) == event


def test_an_opportunity_closing_at_midnight_utc_keeps_its_timestamp(codec: Codec) -> None:
    event = opportunity_upserted_factory(expected_close_date=datetime(2025, 4, 30, tzinfo=UTC))
    decoded = avro_round_trip(codec, event.model_dump(mode="json"), schema_file_of("opportunities"))
    assert parse_input("opportunities", decoded) == event


def test_encoding_an_event_type_the_topic_does_not_carry_fails(codec: Codec) -> None:
    with pytest.raises(ValueError):
        codec.encode_avro(stock_received_factory().model_dump(mode="json"), schema_file_of("orders"))


# ---- outputs -----------------------------------------------------------------------------------------------


def sku_availability_factory(**overrides: Any) -> SkuAvailability:
    return SkuAvailability(
        **{
            "event_id": "2f0b7c52-8a0c-5d43-9a53-3d1f6f1f9c11",
            "tenant_id": "acme-eu",
            "occurred_at": T0,
            "causation_id": "evt-stockreceived-0001",
            "sku": "SKU-WIDGET-042",
            "description": "Stainless steel widget, 42 mm",
            "unit_price": Decimal("19.99"),
            "lead_time_days": 14,
            "locations": (
                LocationAvailability(
                    location="WH-BERLIN",
                    on_hand=250,
                    reserved=40,
                    soft_allocated=120,
                    backordered=0,
                    available=90,
                ),
                LocationAvailability(
                    location="WH-HAMBURG",
                    on_hand=0,
                    reserved=0,
                    soft_allocated=0,
                    backordered=15,
                    available=0,
                ),
            ),
            "version": 2**40,
            "as_of": T0,
            **overrides,
        }
    )


@pytest.mark.parametrize(
    "make",
    [
        sku_availability_factory,
        lambda: sku_availability_factory(description=None, unit_price=None, lead_time_days=None, locations=()),
    ],
    ids=["known-product", "unknown-product"],
)
def test_sku_availability_survives_an_avro_round_trip(codec: Codec, make: Callable[[], SkuAvailability]) -> None:
    record = make().model_dump(mode="json")
    assert avro_round_trip(codec, record, schema_file_of("availability")) == record


@pytest.mark.parametrize(
    "letter",
    [
        dead_letter(
            source_topic="oms.orders.v1",
            source_partition=4,
            source_offset=2**40 + 7,
            error="InvalidJson",
            reason="invalid JSON: Expecting value at line 1 column 1",
            key=b"acme-eu:ORD-778899",
            value=b"{not json",
            headers=[("traceparent", b"00-abc-def-01"), ("content-type", b"application/json")],
            tenant_id="acme-eu",
        ),
        dead_letter(
            source_topic="wms.stock-movements.v1",
            source_partition=0,
            source_offset=0,
            error="EmptyMessage",
            reason="the message has no value (null or empty bytes)",
            key=None,
            value=None,
        ),
    ],
    ids=["with-key-value-and-headers", "tombstone-without-tenant"],
)
def test_a_dead_letter_survives_an_avro_round_trip(codec: Codec, letter: DeadLetter) -> None:
    record = letter.model_dump(mode="json")
    decoded = avro_round_trip(codec, record, schema_file_of("dlq"))
    assert decoded == record
    assert DeadLetter.model_validate(decoded) == letter


def _output_common(cause: str) -> dict[str, Any]:
    return {
        "event_id": "8d5e3c1a-4f2b-5a6c-9e7d-0b1c2d3e4f50",
        "tenant_id": "acme-eu",
        "occurred_at": datetime(2025, 3, 14, 9, 26, 53, 120000, tzinfo=UTC),
        "causation_id": f"evt-{cause.lower()}-0001",
        "order_id": "ORD-778899",
        "customer_id": "CUST-1001",
        "opportunity_id": "OPP-2025-0042",
    }


_UNAVAILABLE = (
    UnavailableItem(sku="SKU-GADGET-007", location="WH-HAMBURG", required=5, available=2, shortfall=3),
    UnavailableItem(sku="SKU-BOLT-M8", location="WH-BERLIN", required=2**31 - 1, available=0, shortfall=2**31 - 1),
)


def order_inventory_allocated_factory(**overrides: Any) -> OrderInventoryAllocated:
    return OrderInventoryAllocated(
        **{
            **_output_common("OrderPlaced"),
            "lines": (
                AllocatedLine(
                    line_id="1",
                    sku="SKU-WIDGET-042",
                    quantity=10,
                    location="WH-BERLIN",
                    unit_price=Decimal("19.990000"),
                    customer_price=Decimal("17.50"),
                ),
                AllocatedLine(
                    line_id="2",
                    sku="SKU-GADGET-007",
                    quantity=1,
                    location="WH-HAMBURG",
                    unit_price=Decimal("0"),
                    customer_price=Decimal("99.9"),
                ),
            ),
            "order_value": Decimal("274.90"),
            "reserved_until": datetime(2025, 3, 21, 9, 26, 53, tzinfo=UTC),
            **overrides,
        }
    )


def order_allocation_rejected_factory(**overrides: Any) -> OrderAllocationRejected:
    return OrderAllocationRejected(
        **{
            **_output_common("OrderPlaced"),
            "reason": "INSUFFICIENT_INVENTORY",
            "message": "2 item(s) short: SKU-GADGET-007@WH-HAMBURG needs 5, 2 available, ...",
            "unavailable_items": _UNAVAILABLE,
            **overrides,
        }
    )


def order_inventory_released_factory(**overrides: Any) -> OrderInventoryReleased:
    return OrderInventoryReleased(
        **{
            **_output_common("OrderCancelled"),
            "reason": "CANCELLED",
            "message": "customer request",
            "lines": (
                ReleasedLine(line_id="1", sku="SKU-WIDGET-042", quantity=10, location="WH-BERLIN"),
                ReleasedLine(line_id="2", sku="SKU-GADGET-007", quantity=1, location="WH-HAMBURG"),
            ),
            **overrides,
        }
    )


def order_inventory_synced_factory(**overrides: Any) -> OrderInventorySynced:
    return OrderInventorySynced(
        **{
            **_output_common("OrderSnapshot"),
            "status": "INVENTORY_ALLOCATED",
            "result": "PARTIAL",
            "message": "some lines could not be changed",
            "lines": (
                SyncedLine(
                    line_id="1",
                    sku="SKU-WIDGET-042",
                    quantity=10,
                    location="WH-BERLIN",
                    unit_cost=Decimal("7.25"),
                    total_cost=Decimal("72.50"),
                ),
                SyncedLine(
                    line_id="2",
                    sku="SKU-GADGET-007",
                    quantity=1,
                    location="WH-HAMBURG",
                    unit_cost=Decimal("0"),
                    total_cost=Decimal("0"),
                ),
            ),
            "total_value": Decimal("72.50"),
            "unavailable_items": _UNAVAILABLE[:1],
            **overrides,
        }
    )


def _opportunity_common(cause: str) -> dict[str, Any]:
    return {
        "event_id": "3b0f6a2e-9c41-5d7e-8f10-2a3b4c5d6e7f",
        "tenant_id": "acme-eu",
        "occurred_at": datetime(2025, 3, 14, 9, 26, 53, 120000, tzinfo=UTC),
        "causation_id": f"evt-{cause.lower()}-0001",
        "opportunity_id": "OPP-2025-0042",
        "customer_id": "CUST-1001",
        "stage": "NEGOTIATION",
        "probability": 0.65,
        "items": (
            OpportunityLine(sku="SKU-WIDGET-042", location="WH-BERLIN", quantity=10, unit_price=Decimal("19.99")),
            OpportunityLine(sku="SKU-GADGET-007", location="WH-HAMBURG", quantity=2**31 - 1, unit_price=Decimal("0")),
        ),
    }


def opportunity_inventory_allocated_factory(**overrides: Any) -> OpportunityInventoryAllocated:
    return OpportunityInventoryAllocated(
        **{
            **_opportunity_common("OpportunityUpserted"),
            "reserved_until": datetime(2025, 4, 1, tzinfo=UTC),
            **overrides,
        }
    )


def opportunity_inventory_released_factory(**overrides: Any) -> OpportunityInventoryReleased:
    return OpportunityInventoryReleased(
        **{
            **_opportunity_common("OpportunityConverted"),
            "reason": "CONVERTED",
            "message": "order ORD-778899 took over the soft hold",
            "order_id": "ORD-778899",
            **overrides,
        }
    )


def opportunity_inventory_rejected_factory(**overrides: Any) -> OpportunityInventoryRejected:
    return OpportunityInventoryRejected(
        **{
            **_opportunity_common("OpportunityUpserted"),
            "reason": "INSUFFICIENT_INVENTORY",
            "message": "1 item(s) short: SKU-GADGET-007@WH-HAMBURG needs 5, 2 available",
            "unavailable_items": _UNAVAILABLE[:1],
            **overrides,
        }
    )


def opportunity_inventory_preempted_factory(**overrides: Any) -> OpportunityInventoryPreempted:
    return OpportunityInventoryPreempted(
        **{
            **_opportunity_common("OpportunityPreempted"),
            "order_id": "ORD-778899",
            "message": "order ORD-778899 was 3 short at WH-BERLIN",
            **overrides,
        }
    )


# Output record types with a pydantic model: record name -> (topic id, model, sample factory).
OUTPUT_MODELS: dict[str, tuple[str, type[Output], Callable[..., Output]]] = {
    "OrderInventoryAllocated": ("allocations", OrderInventoryAllocated, order_inventory_allocated_factory),
    "OrderAllocationRejected": ("allocations", OrderAllocationRejected, order_allocation_rejected_factory),
    "OrderInventoryReleased": ("allocations", OrderInventoryReleased, order_inventory_released_factory),
    "OrderInventorySynced": ("allocations", OrderInventorySynced, order_inventory_synced_factory),
    "OpportunityInventoryAllocated": (
        "allocations",
        OpportunityInventoryAllocated,
        opportunity_inventory_allocated_factory,
    ),
    "OpportunityInventoryReleased": (
        "allocations",
        OpportunityInventoryReleased,
        opportunity_inventory_released_factory,
    ),
    "OpportunityInventoryRejected": (
        "allocations",
        OpportunityInventoryRejected,
        opportunity_inventory_rejected_factory,
    ),
    "OpportunityInventoryPreempted": (
        "allocations",
        OpportunityInventoryPreempted,
        opportunity_inventory_preempted_factory,
    ),
}

# (case id, sample): one case per modelled output type, plus variants for defaults and optional fields.
OUTPUT_MODEL_CASES: list[tuple[str, Callable[[], Output]]] = [
    (name, make) for name, (_, _, make) in OUTPUT_MODELS.items()
] + [
    ("OrderInventoryAllocated-without-opportunity", lambda: order_inventory_allocated_factory(opportunity_id=None)),
    (
        "OrderAllocationRejected-with-defaults",
        lambda: OrderAllocationRejected(
            **{**_output_common("OrderPlaced"), "opportunity_id": None},
            reason="CREDIT_LIMIT_EXCEEDED",
            message="order value 274.90 exceeds remaining credit 100.00",
        ),
    ),
    (
        "OrderInventoryReleased-stock-lost-with-defaults",
        lambda: OrderInventoryReleased(
            **{**_output_common("StockCounted"), "opportunity_id": None},
            reason="STOCK_LOST",
            lines=(ReleasedLine(line_id="1", sku="SKU-WIDGET-042", quantity=10, location="WH-BERLIN"),),
        ),
    ),
    ("OrderInventoryReleased-holding-nothing", lambda: order_inventory_released_factory(reason="EXPIRED", lines=())),
    (
        "OpportunityInventoryReleased-expired-with-defaults",
        lambda: OpportunityInventoryReleased(**{**_opportunity_common("ExpiryTick"), "items": ()}, reason="EXPIRED"),
    ),
    (
        "OpportunityInventoryRejected-low-probability-with-defaults",
        lambda: OpportunityInventoryRejected(
            **{**_opportunity_common("OpportunityUpserted"), "probability": 0.0, "stage": "LEAD"},
            reason="LOW_PROBABILITY",
            message="probability 0.0 is below the soft-hold threshold 0.3",
        ),
    ),
    (
        "OpportunityInventoryPreempted-with-defaults",
        lambda: OpportunityInventoryPreempted(**_opportunity_common("OpportunityPreempted"), order_id="ORD-1"),
    ),
    (
        "OrderInventorySynced-not-found-with-defaults",
        lambda: OrderInventorySynced(
            **{**_output_common("OrderSnapshot"), "opportunity_id": None},
            status="PENDING",
            result="NOT_FOUND",
            lines=(),
            total_value=Decimal(0),
        ),
    ),
]


def _named_records(node: Any, found: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Every record defined anywhere in a schema, by (short) name."""
    found = {} if found is None else found
    if isinstance(node, list):
        for n in node:
            _named_records(n, found)
    elif isinstance(node, dict):
        if node.get("type") == "record":
            found[node["name"]] = node
        for key in ("fields", "items", "values", "type"):
            if key in node:
                _named_records(node[key], found)
    return found


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a `tuple[SomeModel, ...]` field, if the field is one."""
    args = typing.get_args(annotation)
    return args[0] if args and isinstance(args[0], type) and issubclass(args[0], BaseModel) else None


@pytest.mark.parametrize("event_type", sorted(OUTPUT_MODELS))
def test_a_modelled_output_record_has_the_fields_of_its_model(event_type: str) -> None:
    topic_id, model, _ = OUTPUT_MODELS[event_type]
    records = _named_records(raw_schema(schema_file_of(topic_id)))
    record = records_of(schema_file_of(topic_id))[event_type]
    assert {f["name"] for f in record["fields"]} == set(model.model_fields)
    for fld in record["fields"]:
        nested = _nested_model(model.model_fields[fld["name"]].annotation)
        if nested is None:
            continue
        assert fld["type"]["type"] == "array", fld["name"]
        items = fld["type"]["items"]
        name = items if isinstance(items, str) else items["name"]
        assert name == nested.__name__, fld["name"]
        assert {f["name"] for f in records[name]["fields"]} == set(nested.model_fields), name


@pytest.mark.parametrize("event_type", sorted(OUTPUT_MODELS))
def test_a_modelled_output_record_has_the_optionality_of_its_model(event_type: str) -> None:
    topic_id, model, _ = OUTPUT_MODELS[event_type]
    for fld in records_of(schema_file_of(topic_id))[event_type]["fields"]:
        info = model.model_fields[fld["name"]]
        nullable = isinstance(fld["type"], list) and "null" in fld["type"]
        assert nullable == (type(None) in typing.get_args(info.annotation)), fld["name"]
        if fld["name"] == "event_type":  # fixed by the model, required on the wire
            continue
        assert ("default" in fld) == (not info.is_required()), fld["name"]
        if "default" in fld:
            assert fld["default"] == TypeAdapter(Any).dump_python(info.default, mode="json"), fld["name"]


@pytest.mark.parametrize("make", [c[1] for c in OUTPUT_MODEL_CASES], ids=[c[0] for c in OUTPUT_MODEL_CASES])
def test_a_modelled_output_survives_an_avro_round_trip(codec: Codec, make: Callable[[], Output]) -> None:
    model = make()
    topic_id, model_class, _ = OUTPUT_MODELS[model.event_type]
    assert type(model) is model_class
    record = model.model_dump(mode="json")
    decoded = avro_round_trip(codec, record, schema_file_of(topic_id))
    assert set(decoded) == set(record)
    assert type(model).model_validate(decoded) == model
    assert codec.encode_avro(decoded, schema_file_of(topic_id)) == codec.encode_avro(record, schema_file_of(topic_id))


def _out(event_type: str, **fields: Any) -> dict[str, Any]:
    """A sample record as the fleet writes it: built by its output model, dumped as JSON."""
    record = {
        "event_id": "8d5e3c1a-4f2b-5a6c-9e7d-0b1c2d3e4f50",
        "event_type": event_type,
        "tenant_id": "acme-eu",
        "occurred_at": "2025-03-14T09:26:53.120000Z",
        "causation_id": "evt-orderplaced-0001",
        **fields,
    }
    return SAMPLED_MODELS[event_type].model_validate(record).model_dump(mode="json")


SAMPLED_MODELS: dict[str, type[Output]] = {
    "OrderBackordered": OrderBackordered,
    "FulfillmentAccepted": FulfillmentAccepted,
    "FulfillmentRejected": FulfillmentRejected,
    "FulfillmentCompleted": FulfillmentCompletedEvent,
    "FulfillmentStatusChanged": FulfillmentStatusChanged,
    "BackorderCreated": BackorderCreated,
    "BackorderFulfilled": BackorderFulfilled,
    "BackorderCancelled": BackorderCancelled,
}
# What the fleet always writes in `status` of these records: their schemas give it as the default.
STATUS_DEFAULTS = {
    "FulfillmentAccepted": "IN_PROGRESS",
    "FulfillmentRejected": "IN_PROGRESS",
    "FulfillmentCompleted": "COMPLETED",
}


_ITEMS = [
    {"sku": "SKU-WIDGET-042", "location": "WH-BERLIN", "quantity": 10},
    {"sku": "SKU-GADGET-007", "location": "WH-HAMBURG", "quantity": 1},
]
_SHORT = [{"sku": "SKU-GADGET-007", "location": "WH-HAMBURG", "required": 5, "available": 2, "shortfall": 3}]
_ORDER = {"order_id": "ORD-778899", "customer_id": "CUST-1001"}
_FUL = {"fulfillment_id": "FUL-5501", "order_id": "ORD-778899"}
_BACKORDER = {
    "backorder_id": "BO-ORD-778899-1",
    **_ORDER,
    "priority": "URGENT",
    "items": [{**item, "line_id": str(n)} for n, item in enumerate(_ITEMS, 1)],
}

# Output records that have no pydantic model yet: (topic id, sample as it would be on the wire).
OUTPUT_SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "OrderBackordered": (
        "allocations",
        _out(
            "OrderBackordered",
            **_ORDER,
            backorder_id="BO-ORD-778899-1",
            priority="URGENT",
            items=[{**_ITEMS[1], "line_id": "2"}],
            opportunity_id=None,
        ),
    ),
    "FulfillmentAccepted": (
        "fulfillments",
        _out(
            "FulfillmentAccepted",
            **_FUL,
            status="IN_PROGRESS",
            items=_ITEMS,
            shipping_method="GROUND",
            tracking_number="1Z999AA10123456784",
        ),
    ),
    "FulfillmentRejected": (
        "fulfillments",
        _out(
            "FulfillmentRejected",
            **_FUL,
            status="IN_PROGRESS",
            reason="QUANTITY_MISMATCH",
            items=_ITEMS,
        ),
    ),
    "FulfillmentCompleted": ("fulfillments", _out("FulfillmentCompleted", **_FUL, status="COMPLETED", items=_ITEMS)),
    "FulfillmentStatusChanged": (
        "fulfillments",
        _out(
            "FulfillmentStatusChanged",
            **_FUL,
            status="SHIPPED",
            tracking_number="JD014600006281234567",
            carrier="DHL",
            estimated_delivery="2025-03-17",
        ),
    ),
    "BackorderCreated": ("backorders", _out("BackorderCreated", **_BACKORDER)),
    "BackorderFulfilled": ("backorders", _out("BackorderFulfilled", **_BACKORDER)),
    "BackorderCancelled": ("backorders", _out("BackorderCancelled", **_BACKORDER, reason="CANCELLED")),
}
# Output records with their own topic, checked against their models above.
SINGLE_RECORD_OUTPUTS = {"SkuAvailability", "DeadLetter"}


def _output_topic(event_type: str) -> str:
    return OUTPUT_MODELS[event_type][0] if event_type in OUTPUT_MODELS else OUTPUT_SAMPLES[event_type][0]


def test_every_output_record_type_has_a_model_or_a_sample() -> None:
    schema_records = {
        (spec.id, name)
        for spec in TOPOLOGY.by_role("output")
        for name in records_of(spec.schema_file)
        if name not in SINGLE_RECORD_OUTPUTS
    }
    modelled = {(topic_id, name) for name, (topic_id, _, _) in OUTPUT_MODELS.items()}
    sampled = {(topic_id, name) for name, (topic_id, _) in OUTPUT_SAMPLES.items()}
    assert not modelled & sampled
    assert schema_records == modelled | sampled
    assert {type(make()).__name__ for _, make in OUTPUT_MODEL_CASES} == set(OUTPUT_MODELS)


@pytest.mark.parametrize("event_type", sorted(OUTPUT_SAMPLES))
def test_an_output_record_survives_an_avro_round_trip_unchanged(codec: Codec, event_type: str) -> None:
    topic_id, record = OUTPUT_SAMPLES[event_type]
    assert record["event_type"] == event_type
    assert avro_round_trip(codec, record, schema_file_of(topic_id)) == record


@pytest.mark.parametrize("event_type", sorted({*OUTPUT_SAMPLES, *OUTPUT_MODELS}))
def test_an_output_record_carries_the_common_output_fields(event_type: str) -> None:
    fields = [f["name"] for f in records_of(schema_file_of(_output_topic(event_type)))[event_type]["fields"]]
    assert fields[:5] == ["event_id", "event_type", "tenant_id", "occurred_at", "causation_id"]


# ---- internal JSON, documented by the internal schemas --------------------------------------------------


def _schemaless_round_trip(schema_file: str, record: dict[str, Any]) -> Any:
    schema = fastavro.parse_schema(raw_schema(schema_file))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return fastavro.schemaless_reader(io.BytesIO(buf.getvalue()), schema)


@pytest.mark.parametrize(
    "source", [SourceRef(topic="oms.orders.v1", partition=3, offset=2**40), None], ids=["from-input", "timer"]
)
def test_the_command_envelope_schema_describes_the_internal_json_envelope(source: SourceRef | None) -> None:
    envelope = Envelope(kind="ReserveLine", source=source, body=json.dumps({"order_id": "ORD-778899"}))
    (record,) = raw_schema("inventory.internal.commands.v1.avsc")
    assert record["name"] == "CommandEnvelope"
    assert [f["name"] for f in record["fields"]] == list(Envelope.model_fields)
    as_json = json.loads(envelope.to_bytes())
    assert _schemaless_round_trip("inventory.internal.commands.v1.avsc", as_json) == as_json


# ---- decode errors -----------------------------------------------------------------------------------------


def _truncated_avro() -> bytes:
    codec = Codec(LocalSchemaRegistry(SCHEMAS_DIR))
    data = codec.encode_avro(order_placed_factory().model_dump(mode="json"), schema_file_of("orders"))
    return data[:12]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "EmptyMessage"),
        (b"\xff\xfe", "UndecodableBytes"),
        (b"{not json", "InvalidJson"),
        (struct.pack(">bI", MAGIC_BYTE, 9999) + b"\x00", "UnknownSchemaId"),
        (_truncated_avro(), "InvalidAvro"),
    ],
    ids=["empty", "not-utf8", "bad-json", "unknown-schema-id", "truncated-avro"],
)
def test_undecodable_bytes_raise_a_decode_error_naming_the_problem(codec: Codec, data: bytes, error: str) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode(data)
    assert info.value.error == error
    assert info.value.reason


# ---- the fields every output model carries, and money as Avro decimals --------------------------------------


@pytest.mark.parametrize("event_type", sorted(SAMPLED_MODELS))
def test_a_sampled_output_record_has_the_fields_and_optionality_of_its_model(event_type: str) -> None:
    topic_id, _ = OUTPUT_SAMPLES[event_type]
    model = SAMPLED_MODELS[event_type]
    records = _named_records(raw_schema(schema_file_of(topic_id)))
    record = records_of(schema_file_of(topic_id))[event_type]
    assert {f["name"] for f in record["fields"]} == set(model.model_fields)
    for fld in record["fields"]:
        info = model.model_fields[fld["name"]]
        nullable = isinstance(fld["type"], list) and "null" in fld["type"]
        assert nullable == (type(None) in typing.get_args(info.annotation)), fld["name"]
        if fld["name"] == "event_type":
            continue
        if fld["name"] == "status" and event_type in STATUS_DEFAULTS:  # required, but always the same here
            assert fld["default"] == STATUS_DEFAULTS[event_type]
        else:
            assert ("default" in fld) == (not info.is_required()), fld["name"]
        nested = _nested_model(info.annotation)
        if nested is not None:
            items = fld["type"]["items"]
            name = items if isinstance(items, str) else items["name"]
            assert name == nested.__name__, fld["name"]
            assert {f["name"] for f in records[name]["fields"]} == set(nested.model_fields), name


def _decimal_fields(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, list):
        for n in node:
            yield from _decimal_fields(n, path)
    elif isinstance(node, dict):
        if node.get("logicalType") == "decimal":
            yield path, node
        for fld in node.get("fields", []):
            yield from _decimal_fields(fld["type"], f"{path}.{fld['name']}")
        for key in ("items", "values"):
            if key in node:
                yield from _decimal_fields(node[key], path)


@pytest.mark.parametrize("schema_file", SCHEMA_FILES)
def test_money_is_an_avro_decimal_38_6_and_percentages_9_6(schema_file: str) -> None:
    for path, node in _decimal_fields(raw_schema(schema_file)):
        expected = (9, 6) if path.endswith("discount_percentage") else (38, 6)
        assert (node["type"], node["precision"], node["scale"]) == ("bytes", *expected), path

    def strings(node: Any, path: str = "") -> Iterator[str]:  # no money field is left a string
        if isinstance(node, list):
            for n in node:
                yield from strings(n, path)
        elif isinstance(node, dict):
            for fld in node.get("fields", []):
                t = fld["type"]
                if t == "string" or t == ["null", "string"]:
                    yield fld["name"]
                yield from strings(t)
            for key in ("items", "values"):
                if key in node:
                    yield from strings(node[key])

    money = {"unit_price", "unit_cost", "customer_price", "credit_limit", "credit_used", "order_value"}
    money |= {"total_cost", "total_value", "open_exposure", "discount_percentage"}
    assert not money & set(strings(raw_schema(schema_file)))


def test_money_keeps_six_decimal_places_and_a_seventh_fails_at_encode(codec: Codec) -> None:
    event = product_upserted_factory(unit_price=Decimal("19.999999"), unit_cost=Decimal("123456789012.000001"))
    decoded = avro_round_trip(codec, event.model_dump(mode="json"), schema_file_of("products"))
    assert (decoded["unit_price"], decoded["unit_cost"]) == ("19.999999", "123456789012.000001")
    assert parse_input("products", decoded) == event
    record = {**event.model_dump(mode="json"), "unit_price": "19.9999991"}
    with pytest.raises(ValueError, match=r"unit_price: 19.9999991 has more than 6 decimal places"):
        codec.encode_avro(record, schema_file_of("products"))
    with pytest.raises(ValueError, match=r"unit_cost: 1E\+40 has more than 38 digits"):
        codec.encode_avro({**record, "unit_price": "1", "unit_cost": "1E+40"}, schema_file_of("products"))


def test_a_totals_decimal_beyond_the_default_context_precision_survives(codec: Codec) -> None:
    big = "12345678901234567890123456789012.123456"  # 38 digits: more than Python's default 28
    record = {**order_inventory_synced_factory().model_dump(mode="json"), "total_value": big}
    assert avro_round_trip(codec, record, schema_file_of("allocations"))["total_value"] == big


def test_a_discount_with_more_than_six_decimal_places_is_refused_at_intake() -> None:
    event = customer_pricing_updated_factory().model_dump(mode="json")
    event["updates"] = [{"sku": "SKU-1", "discount_percentage": "12.1234567"}]
    with pytest.raises(InvalidEvent, match="discount_percentage"):
        parse_input("customer_pricing", event)
