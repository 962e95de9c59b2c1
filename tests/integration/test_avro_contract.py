"""Every record the fleet emits survives an Avro round trip through its topic's schema, unchanged.

One worker on a real broker runs the flows (orders allocated, rejected for stock, credit, unknown customer
and bad lines, backordered and filled, backordered and cancelled, cancelled, expired, synced, stock lost;
fulfillments accepted, completed, shipped, delivered and rejected; opportunities held, rejected, released
lost, expired and converted, and pre-empted; prices, customer views, availability, a dead letter). Then every
record on every output topic of topics.yaml is encoded with the topic's schema by the codec in the Confluent wire format, decoded, and
compared with the JSON record: every field present, no field dropped or added, money equal as Decimal values.
The view topics (customer-state, order-status, opportunity-status) and the internal command topics are the
fleet's own JSON, read only by the fleet, and are not Avro on the wire: their schemas document them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from agents.codec import AVRO_NAMESPACE, Codec, LocalSchemaRegistry
from agents.core import events as core_events
from agents.dlq import DeadLetter
from agents.topology import load_topology
from tests.integration.test_opportunities import upsert
from tests.integration.test_orders import place, setup_tenant
from tests.support import events
from tests.support.broker import ROOT
from tests.support.fleet import Fleet, OutputReader, wait_until

SCHEMAS = ROOT / "schemas"
TOPOLOGY = load_topology(ROOT / "topics.yaml")
CONTRACT_TOPICS = sorted(spec.id for spec in TOPOLOGY.by_role("output"))
READER_KEYS = ("_topic", "_partition", "_offset", "_key")

# What the flows below must have produced before the records are checked: (topic id, event_type or record).
EXPECTED = {
    "allocations": {
        "OrderInventoryAllocated",
        "OrderAllocationRejected",
        "OrderBackordered",
        "OrderInventoryReleased",
        "OrderInventorySynced",
        "OpportunityInventoryAllocated",
        "OpportunityInventoryRejected",
        "OpportunityInventoryReleased",
        "OpportunityInventoryPreempted",
    },
    "fulfillments": {"FulfillmentAccepted", "FulfillmentRejected", "FulfillmentCompleted", "FulfillmentStatusChanged"},
    "backorders": {"BackorderCreated", "BackorderFulfilled", "BackorderCancelled"},
    "availability": {"SkuAvailability"},
    "dlq": {"DeadLetter"},
}

# Output record types with a pydantic model: the decoded record must validate to the same model.
MODELS: dict[str, type[BaseModel]] = {
    cls.model_fields["event_type"].default: cls
    for cls in vars(core_events).values()
    if isinstance(cls, type)
    and issubclass(cls, core_events.Output)
    and isinstance(cls.model_fields["event_type"].default, str)
}
MODELS["DeadLetter"] = DeadLetter


def kind(record: dict[str, Any]) -> str:
    return str(record.get("event_type") or record["record"])


# ---- the schema, read from the .avsc itself (not through the codec under test) ---------------------------


def named_types(node: Any, found: dict[str, Any]) -> dict[str, Any]:
    if isinstance(node, list):
        for n in node:
            named_types(n, found)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed"):
            found[node["name"]] = found[f"{node.get('namespace', AVRO_NAMESPACE)}.{node['name']}"] = node
        for fld in node.get("fields", ()):
            named_types(fld["type"], found)
        for key in ("items", "values"):
            if key in node:
                named_types(node[key], found)
        if isinstance(node.get("type"), dict | list):
            named_types(node["type"], found)
    return found


def comparable(value: Any, node: Any, names: dict[str, Any], path: str, problems: list[str]) -> Any:
    """`value` with every decimal-typed field as a Decimal; notes in `problems` every field the record has
    and the schema lacks, and every schema field without a default that the record lacks."""
    if isinstance(node, str) and node in names:
        node = names[node]
    if isinstance(node, list):
        if value is None:
            return None
        branches = [b for b in node if b != "null"]
        if len(branches) == 1:
            return comparable(value, branches[0], names, path, problems)
        record = next(b for b in branches if isinstance(b, dict) and b.get("name") == kind(value))
        return comparable(value, record, names, path, problems)
    if isinstance(node, dict) and isinstance(node.get("type"), dict | list) and "logicalType" not in node:
        return comparable(value, node["type"], names, path, problems)
    if not isinstance(node, dict):
        return value
    if node.get("logicalType") == "decimal":
        return Decimal(str(value))
    if node.get("type") == "record":
        fields = {f["name"]: f for f in node["fields"]}
        problems.extend(f"{path}.{k}: not in the schema's {node['name']}" for k in value if k not in fields)
        problems.extend(
            f"{path}.{k}: in the schema's {node['name']} without a default, not in the record"
            for k, f in fields.items()
            if k not in value and "default" not in f
        )
        return {
            k: comparable(v, fields[k]["type"], names, f"{path}.{k}", problems) if k in fields else v
            for k, v in value.items()
        }
    if node.get("type") == "array":
        return [comparable(v, node["items"], names, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if node.get("type") == "map":
        return {k: comparable(v, node["values"], names, f"{path}.{k}", problems) for k, v in value.items()}
    return value


# ---- the flows ------------------------------------------------------------------------------------------


def wait_kinds(reader: OutputReader, tenant: str, wanted: set[str], what: str, timeout: float = 30) -> None:
    def seen() -> bool:
        reader._poll()
        return wanted <= {kind(r) for r in reader.records if r.get("tenant_id") == tenant}

    wait_until(seen, timeout, what)


def wait_for(reader: OutputReader, tenant: str, what: str, **fields: Any) -> dict[str, Any]:
    (found, *_) = reader.wait_for(
        lambda r: r.get("tenant_id") == tenant and all(r.get(k) == v for k, v in fields.items()), what=what
    )
    return found


def place_for(fleet: Fleet, tenant: str, customer_id: str, order_id: str, lines: list[Any]) -> None:
    fleet.produce("orders", events.order(tenant, order_id, customer_id, lines), key=events.key(tenant, order_id))


def run_the_flows(fleet: Fleet, tenant: str) -> None:
    key = events.key
    setup_tenant(fleet, tenant, {"A": 100, "B": 10, "C": 5, "D": 0, "E": 10, "F": 10})
    fleet.produce(
        "products",
        events.product(tenant, "P6", unit_price="19.999999", unit_cost="0.000001"),  # every decimal place there is
        key=key(tenant, "P6"),
    )
    fleet.produce("stock_movements", events.received(tenant, "P6", 50), key=key(tenant, "P6"))
    fleet.produce("customers", events.customer(tenant, "C2", tier="BRONZE", credit_limit="10"), key=key(tenant, "C2"))
    fleet.produce(
        "customer_pricing",
        events.pricing(
            tenant, "C1", [{"sku": "A", "customer_price": "87.25"}, {"sku": "B", "discount_percentage": "12.5"}]
        ),
        key=key(tenant, "C1"),
    )
    fleet.produce("orders", b"\x00\x00", key=key(tenant, "garbage"))  # a dead letter
    fleet.flush()
    allocations = fleet.reader("allocations")
    fulfillments = fleet.reader("fulfillments")
    state = fleet.reader("customer_state")
    try:
        wait_kinds(state, tenant, {"price"}, "the customer's price overrides")
        place(fleet, tenant, "O1", [("A", 5), ("B", 1), ("P6", 3)])  # allocated, then fulfilled and synced
        place(fleet, tenant, "O2", [("C", 1000)])  # rejected: insufficient inventory
        place_for(fleet, tenant, "C2", "O3", [("A", 10)])  # rejected: credit limit
        place_for(fleet, tenant, "C9", "O4", [("A", 1)])  # rejected: unknown customer
        place(fleet, tenant, "O5", [("C", 8)], backorder_policy="BACKORDER", priority="URGENT")  # later filled
        place(fleet, tenant, "O6", [("D", 2)], backorder_policy="BACKORDER")  # later cancelled
        place(fleet, tenant, "O7", [("A", 2)])  # allocated, then cancelled
        old = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        place(fleet, tenant, "O8", [("A", 1)], order_date=old)  # its hold has passed: expires at the next tick
        place(fleet, tenant, "O9", [("F", 4)])  # loses its hold to a stock count
        upsert(fleet, tenant, "OP-likely", [("B", 2)], probability=0.9)  # held, then converted by an order
        upsert(fleet, tenant, "OP-low", [("A", 1)], probability=0.1)  # rejected: low probability
        upsert(fleet, tenant, "OP-lost", [("A", 3)], probability=0.7)  # held, then lost
        upsert(fleet, tenant, "OP-maybe", [("E", 6)], probability=0.35)  # held, then pre-empted
        yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
        upsert(fleet, tenant, "OP-old", [("A", 1)], expected_close_date=yesterday)  # expires at the next tick
        for order_id in ("O1", "O7", "O9"):
            wait_for(
                allocations, tenant, f"{order_id} allocated", order_id=order_id, event_type="OrderInventoryAllocated"
            )
        wait_for(allocations, tenant, "O5 backordered", order_id="O5", event_type="OrderBackordered")
        wait_for(allocations, tenant, "O6 backordered", order_id="O6", event_type="OrderBackordered")
        wait_for(allocations, tenant, "O2 rejected", order_id="O2", event_type="OrderAllocationRejected")
        for opportunity_id in ("OP-likely", "OP-lost", "OP-maybe"):
            wait_for(
                allocations,
                tenant,
                f"{opportunity_id} held",
                opportunity_id=opportunity_id,
                event_type="OpportunityInventoryAllocated",
            )

        fleet.produce("orders", events.cancelled(tenant, "O7"), key=key(tenant, "O7"))
        fleet.produce("orders", events.cancelled(tenant, "O6"), key=key(tenant, "O6"))
        fleet.produce("stock_movements", events.received(tenant, "C", 10), key=key(tenant, "C"))
        fleet.produce("stock_movements", events.counted(tenant, "F", 1), key=key(tenant, "F"))
        fleet.produce(
            "orders", events.snapshot(tenant, "O1", "C1", [("L1", "A", 5), ("L2", "B", 2)]), key=key(tenant, "O1")
        )
        upsert(fleet, tenant, "OP-lost", [("A", 3)], probability=0.7, stage="CLOSED_LOST")
        place(fleet, tenant, "O10", [("E", 5)])  # 1 short of what is free: pre-empts OP-maybe
        place(fleet, tenant, "O11", [("B", 2)], opportunity_id="OP-likely")  # converts OP-likely's hold
        fleet.produce("shipments", events.fulfillment_started(tenant, "O1", "F1", [("A", 5)]), key=key(tenant, "O1"))
        fleet.produce("shipments", events.fulfillment_started(tenant, "O2", "F2", [("C", 1)]), key=key(tenant, "O2"))
        fleet.flush()
        wait_for(fulfillments, tenant, "F1 accepted", fulfillment_id="F1", event_type="FulfillmentAccepted")
        for shipment in (events.fulfillment_completed, events.dispatched, events.delivered):
            fleet.produce("shipments", shipment(tenant, "O1", "F1"), key=key(tenant, "O1"))
        fleet.flush()
        wait_for(fulfillments, tenant, "F1 delivered", fulfillment_id="F1", status="DELIVERED")
    finally:
        for reader in (allocations, fulfillments, state):
            reader.close()


def check(codec: Codec, topic_id: str, where: str, record: dict[str, Any], problems: list[str]) -> None:
    """Round-trip one record through its topic's schema; note in `problems` what did not survive."""
    schema_file = TOPOLOGY[topic_id].schema_file
    schema = json.loads((SCHEMAS / schema_file).read_text())
    names = named_types(schema, {})
    try:
        decoded = codec.decode(codec.encode_avro(record, schema_file))
    except Exception as exc:  # one record that cannot be encoded is one problem; keep checking the rest
        problems.append(f"{where}: {type(exc).__name__}: {exc}")
        return
    expected = comparable(record, schema, names, where, problems)
    if comparable(decoded, schema, names, where, []) != expected:
        problems.append(f"{where}: changed by the round trip:\n  sent {record}\n  got  {decoded}")
    model = MODELS.get(kind(record))
    if model is not None:
        try:
            if model.model_validate(decoded) != model.model_validate(record):
                problems.append(f"{where}: decodes to another {model.__name__}")
        except ValueError as exc:  # pydantic's ValidationError
            problems.append(f"{where}: decodes to no {model.__name__}: {exc}")


# ---- the test ---------------------------------------------------------------------------------------------


def test_every_record_the_fleet_emits_survives_an_avro_round_trip_unchanged(
    fleet_factory: Callable[[], Fleet], tenant: str, capsys: Any
) -> None:
    fleet = fleet_factory()
    fleet.add_worker(INVENTORY_RESERVATION_HOLD_S="60").wait_ready()
    run_the_flows(fleet, tenant)

    reader = fleet.reader(*CONTRACT_TOPICS)
    topic_ids = {fleet.names[t]: t for t in CONTRACT_TOPICS}
    try:

        def everything_expected() -> bool:
            reader.drain()
            got = {(topic_ids[r["_topic"]], kind(r)) for r in reader.records}
            return all((t, k) in got for t, kinds in EXPECTED.items() for k in kinds)

        wait_until(everything_expected, 45, "every expected record type on the contract topics")
        records = list(reader.records)
    finally:
        reader.close()

    codec = Codec(LocalSchemaRegistry(SCHEMAS))
    problems: list[str] = []
    checked: Counter[tuple[str, str]] = Counter()
    failed: Counter[tuple[str, str]] = Counter()
    for raw in records:
        topic_id = topic_ids[raw["_topic"]]
        record = {k: v for k, v in raw.items() if k not in READER_KEYS}
        before = len(problems)
        check(codec, topic_id, f"{raw['_topic']}@{raw['_partition']}:{raw['_offset']} {kind(raw)}", record, problems)
        checked[(topic_id, kind(record))] += 1
        failed[(topic_id, kind(record))] += len(problems) > before

    summary = (
        f"Avro contract: {len(records)} records of {len(checked)} types on {len(CONTRACT_TOPICS)} topics, "
        f"{sum(failed.values())} records of {sum(1 for n in failed.values() if n)} types changed or refused"
    )
    with capsys.disabled():
        print(
            f"\n{summary}: " + ", ".join(f"{t}/{k} {n} ({failed[t, k]} bad)" for (t, k), n in sorted(checked.items()))
        )
    assert not problems, f"{summary}; {len(problems)} problems:\n" + "\n".join(problems[:60])
    assert sum(checked.values()) == len(records)
    assert {k for _, k in checked} >= {k for kinds in EXPECTED.values() for k in kinds}


def test_the_contract_covers_every_record_type_of_the_output_schemas() -> None:
    """Each record type of an output schema is among what the flows above must produce."""
    for spec in TOPOLOGY.by_role("output"):
        schema = json.loads((SCHEMAS / spec.schema_file).read_text())
        assert {r["name"] for r in schema} == EXPECTED[spec.id], spec.id
