"""Issue 11's fuzz suite through intake (agents/processors/intake.py), without Kafka: 10,000 generated
inputs across every input topic, valid events with one thing broken (oversized fields, separators in every
id, key/body tenant mismatches, deep nesting, numeric extremes, missing or mistyped fields) and raw bytes.
Every one ends accepted (routed, under the bound) or as exactly one dead letter with its reason; none
raises, none is lost."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.codec import Codec, LocalSchemaRegistry
from agents.processors.base import MAX_REASON_CHARS, Where
from agents.processors.intake import INPUTS, Intake
from agents.runtime.bounds import MAX_RECORD_BYTES
from agents.settings import PROJECT_ROOT
from agents.topology import load_topology
from tests.support import events

TOPOLOGY = load_topology(PROJECT_ROOT / "topics.yaml")
WIDTHS = {tid: spec.partitions for tid, spec in TOPOLOGY.topics.items()}
CODEC = Codec(LocalSchemaRegistry(PROJECT_ROOT / "schemas"))
INTAKES = {tid: Intake(tid, CODEC, WIDTHS) for tid in INPUTS}
INTERNAL = {spec.id for spec in TOPOLOGY.by_role("internal")}

VALID = {
    "products": lambda t: events.product(t, "SKU-1"),
    "stock_movements": lambda t: events.received(t, "SKU-1", 5),
    "customers": lambda t: events.customer(t, "C-1"),
    "customer_pricing": lambda t: events.pricing(t, "C-1", [{"sku": "SKU-1", "customer_price": "9.50"}]),
    "opportunities": lambda t: events._common(
        "OpportunityUpserted",
        t,
        opportunity_id="OP-1",
        customer_id="C-1",
        sales_rep_id="R-1",
        stage="PROPOSAL",
        probability=0.5,
        expected_close_date="2026-12-31",
        items=[{"sku": "SKU-1", "quantity": 2, "location": "WH1", "unit_price": "10"}],
    ),
    "orders": lambda t: events.order(t, "O-1", "C-1", [("SKU-1", 2)]),
    "shipments": lambda t: events.fulfillment_started(t, "O-1", "F-1", [("SKU-1", 2)]),
}

odd_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["|", ":", "/", "a|b", "t:x", "\x00", "\u202e", "%2F", "😀" * 60, " ", ""]),
    st.text(min_size=190, max_size=260),
    st.just("x" * 300_000),
)
extreme = st.one_of(
    st.sampled_from([2**31, 2**63, -(2**63), -1, 0, 1e308, -1e308, "NaN", "Infinity", "1e400", True, None]),
    st.integers(),
    st.floats(allow_nan=False),
)
nested = st.recursive(st.none() | st.integers() | st.text(max_size=3), lambda c: st.lists(c, max_size=3), max_leaves=40)


def deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def fuzzed(draw: st.DrawFn) -> tuple[str, bytes | None, bytes | None]:
    topic_id = draw(st.sampled_from(INPUTS))
    tenant = draw(st.sampled_from(["acme", "globex", "t.1-x"]))
    event = VALID[topic_id](tenant)
    key: bytes | None = f"{tenant}:entity".encode()
    how = draw(
        st.sampled_from(
            ["valid", "field-text", "field-number", "drop", "nest", "deep", "tenant", "key", "bytes", "lines", "type"]
        )
    )
    fields = sorted(event)
    if how == "field-text":
        event[draw(st.sampled_from(fields))] = draw(odd_text)
    elif how == "field-number":
        event[draw(st.sampled_from(fields))] = draw(extreme)
    elif how == "drop":
        event.pop(draw(st.sampled_from(fields)))
    elif how == "nest":
        event[draw(st.sampled_from(fields))] = draw(nested)
    elif how == "deep":
        event[draw(st.sampled_from(fields))] = deep(draw(st.integers(50, 3000)))
    elif how == "tenant":
        key = f"{draw(st.sampled_from(['other', 'acme', 'globex']))}:{draw(odd_text)[:50]}".encode()
    elif how == "key":
        key = draw(st.none() | st.binary(max_size=300))
    elif how == "type":
        event["event_type"] = draw(st.sampled_from(["OrderPlaced", "ProductUpserted", "Nope", "", 5]))
    elif how == "lines":
        items = next((f for f in ("lines", "items", "updates") if f in event), None)
        if items is not None:
            event[items] = event[items] * draw(st.sampled_from([0, 2, 999, 1001, 4000]))
    if how == "bytes":
        value: bytes | None = draw(st.none() | st.binary(max_size=2000) | st.just(b"\x00\x00\x00\x00\x01garbage"))
    else:
        try:
            value = json.dumps(event).encode()
        except (ValueError, RecursionError):
            value = b"[" * 5000
    return topic_id, key, value


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(fuzzed())
def test_every_input_is_accepted_under_the_bound_or_dead_lettered_with_a_reason(
    case: tuple[str, bytes | None, bytes | None],
) -> None:
    topic_id, key, value = case
    where = Where(TOPOLOGY[topic_id].name, 3, 42)
    out = INTAKES[topic_id](value, key, 1_700_000_000_000, [("h", b"v")], where)
    assert out, "an input vanished"
    for record in out:
        assert len(record.key) + len(record.value) <= MAX_RECORD_BYTES
    if out[0].topic_id == "dlq":
        (dead,) = out
        letter = json.loads(dead.value)
        assert letter["error"] and 0 < len(letter["reason"]) <= MAX_REASON_CHARS
        assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (where.topic, 3, 42)
        if letter["original_value"] is not None:
            assert base64.b64decode(letter["original_value"]) == value
        else:
            assert value is None or "not copied" in letter["reason"]
        return
    assert {r.topic_id for r in out} <= INTERNAL
    body = json.loads(json.loads(out[0].value)["body"])
    try:
        claimed, colon, _ = (key or b"").decode().partition(":")
    except UnicodeDecodeError:
        claimed, colon = "", ""  # bytes that name no tenant claim none
    assert not colon or claimed == body["tenant_id"]  # never accepted across tenants
    assert out[0].key.decode().split("|", 1)[0] == body["tenant_id"]
