"""Input intake: decode and validate every upstream message, then re-key it onto the internal topic of
the entity that owns it (never trusting upstream partitioning). Bad input goes to the DLQ."""

from __future__ import annotations

import time
from typing import Any

from agents.app import app, codec, log, send_dead_letter, topics, topology
from agents.codec import DecodeError
from agents.core.events import InvalidEvent, check_tenant_key, parse_input
from agents.core.ids import entity_key
from agents.core.routing import route
from agents.envelope import SourceRef, wrap
from agents.metrics import EVENTS_PROCESSED, PROCESSING_SECONDS

# The inputs whose owners run in this fleet today; the others join as their flows land.
ACTIVE_INPUTS = (
    "products",
    "stock_movements",
    "customers",
    "customer_pricing",
    "opportunities",
    "orders",
    "shipments",
)


async def forward(topic_id: str, event: Any) -> None:
    message = event.message
    started = time.perf_counter()
    payload: Any = None
    try:
        payload = codec.decode(message.value)
        parsed = parse_input(topic_id, payload)
        check_tenant_key(message.key, parsed.tenant_id)
    except (DecodeError, InvalidEvent) as exc:
        await _dead_letter(topic_id, message, exc.error, exc.reason, payload)
        return
    except Exception as exc:  # an agent exception would still ack the event: never let one escape
        log.exception("intake %s failed on %s[%d]@%d", topic_id, message.topic, message.partition, message.offset)
        await _dead_letter(topic_id, message, type(exc).__name__, f"unexpected error: {exc}", payload)
        return
    target = route(parsed)
    source = SourceRef(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        timestamp=message.timestamp,
    )
    key = entity_key(target.tenant_id, target.entity_id)
    raw_headers = message.headers or ()
    headers = dict(raw_headers.items() if isinstance(raw_headers, dict) else raw_headers) or None
    value = wrap(parsed.event_type, parsed, source, original=message.value, original_headers=headers)
    await topics[target.topic_id].send(key=key, value=value)
    if target.broadcast_to:
        for partition in range(topology[target.broadcast_to].partitions):
            await topics[target.broadcast_to].send(key=key, value=value, partition=partition)
    EVENTS_PROCESSED.labels(topic_id, "accepted").inc()
    PROCESSING_SECONDS.labels(f"intake.{topic_id}").observe(time.perf_counter() - started)


async def _dead_letter(topic_id: str, message: Any, error: str, reason: str, payload: Any) -> None:
    tenant = payload.get("tenant_id") if isinstance(payload, dict) else None
    await send_dead_letter(
        topic_id=topic_id,
        source_topic=message.topic,
        source_partition=message.partition,
        source_offset=message.offset,
        error=error,
        reason=reason,
        key=message.key,
        value=message.value,
        headers=message.headers,
        tenant_id=tenant if isinstance(tenant, str) else None,
    )
    EVENTS_PROCESSED.labels(topic_id, "dlq").inc()


def _register(topic_id: str) -> None:
    @app.agent(topics[topic_id], name=f"intake_{topic_id}")
    async def forward_input(stream: Any) -> None:
        async for event in stream.events():
            await forward(topic_id, event)


for _topic_id in ACTIVE_INPUTS:
    assert topology[_topic_id].role == "input"
    _register(_topic_id)
