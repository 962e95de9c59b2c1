"""Where an order's latency goes: every internal command carries the upstream record it came from (its
envelope's `source`), so the commands of one OrderPlaced can be found on the internal topics and their
record timestamps (set when the worker produced them) split the end-to-end latency into hops."""

from __future__ import annotations

import base64
import json
import time
from collections import defaultdict
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench import report

HOPS = (
    ("upstream -> intake re-key", "sent", "intake"),
    ("intake -> priced, credit held (customer)", "intake", "opened"),
    ("opened -> reserve commands (saga)", "opened", "reserve"),
    ("reserve -> last stock reserved (SKU ledgers)", "reserve", "reserved"),
    ("last reserved -> outcome produced (saga)", "reserved", "outcome"),
    ("outcome produced -> read by the bench", "outcome", "seen"),
)
MARKS = {  # (topic id, command kind) -> mark; the last record of a kind counts (one per SKU for reserves)
    ("customer_commands", "OrderPlaced"): "intake",
    ("order_commands", "OpenOrder"): "opened",
    ("sku_commands", "ReserveStock"): "reserve",
    ("order_commands", "StockReserved"): "reserved",
}


def _read_all(bootstrap: str, names: dict[str, str], time_cap: float) -> list[tuple[str, dict[str, Any], float]]:
    """(topic id, envelope, record timestamp) of every record on the internal command topics, up to now."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-hops", "enable.auto.commit": False})
    topic_ids = {names[t]: t for t in ("order_commands", "customer_commands", "sku_commands")}
    metadata = consumer.list_topics(timeout=10)
    parts = [TopicPartition(name, p) for name in topic_ids for p in metadata.topics[name].partitions]
    ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
    remaining = {k for k, end in ends.items() if end > 0}
    consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in parts])
    out: list[tuple[str, dict[str, Any], float]] = []
    deadline = time.monotonic() + time_cap
    while remaining and time.monotonic() < deadline:
        for msg in consumer.consume(5000, timeout=0.5):
            if msg.error():
                continue
            if msg.offset() + 1 >= ends[(msg.topic(), msg.partition())]:
                remaining.discard((msg.topic(), msg.partition()))
            try:
                envelope = json.loads(msg.value())
            except ValueError:
                continue
            out.append((topic_ids[msg.topic()], envelope, msg.timestamp()[1] / 1000))
    consumer.close()
    return out


def trace(
    bootstrap: str, names: dict[str, str], orders: dict[str, Any], time_cap: float = 30.0
) -> dict[str, dict[str, Any]]:
    """Per step: hop -> latency summary (ms), over the orders the bench sent (tracker records)."""
    marks: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)
    order_of: dict[tuple[int, int], str] = {}
    for topic_id, envelope, ts in _read_all(bootstrap, names, time_cap):
        source = envelope.get("source") or {}
        if source.get("topic") != names["orders"]:
            continue
        ref = (source["partition"], source["offset"])
        mark = MARKS.get((topic_id, envelope.get("kind")))
        if mark is None:
            continue
        marks[ref][mark] = max(ts, marks[ref].get(mark, 0.0))
        if mark == "intake" and source.get("key"):
            order_of[ref] = base64.b64decode(source["key"]).decode().split(":", 1)[1]
    per_step: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for ref, order_id in order_of.items():
        timed = orders.get(order_id)
        if timed is None or timed.done is None or timed.outcome != "OrderInventoryAllocated":
            continue
        points = {**marks[ref], "sent": timed.sent, "outcome": timed.done_record_ts, "seen": timed.done}
        for name, a, b in HOPS:
            if points.get(a) is not None and points.get(b) is not None:
                per_step[timed.step][name].append(max(0.0, points[b] - points[a]))
    return {step: {name: report.summary_ms(values) for name, values in hops.items()} for step, hops in per_step.items()}
