"""The order saga agent: one saga per `tenant|order` in the order_sagas table, and an expiry index per
partition (bucketed by reserved_until) that a timer's ticks walk, so expiry is decided in the log."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from agents.app import app, log, settings, table, topics
from agents.core import saga as core
from agents.core.commands import BackorderFilled, ExpiryTick, OrderPriced, StockLost, StockReserved
from agents.core.events import (
    FulfillmentCompleted,
    FulfillmentStarted,
    OrderCancelled,
    OrderPlaced,
    OrderSnapshot,
    ShipmentDelivered,
    ShipmentDispatched,
)
from agents.core.ids import split_key
from agents.envelope import Envelope, SourceRef
from agents.metrics import EVENTS_PROCESSED, ORDER_ALLOCATION_SECONDS
from agents.streams.common import count_handled, dead_letter_internal, publish, read, send_command, utcnow
from agents.streams.expiry import ExpiryIndex, send_ticks

sagas = table("order_sagas", "order_saga_changelog")
hold = timedelta(seconds=settings.reservation_hold_s)
PLACEMENT_OUTCOMES = frozenset(
    {"OrderInventoryAllocated", "OrderAllocationRejected", "OrderBackordered", "OrderInventoryReleased"}
)
SAGA_MESSAGES = (
    OrderPlaced,
    OrderCancelled,
    OrderSnapshot,
    OrderPriced,
    StockReserved,
    StockLost,
    BackorderFilled,
    FulfillmentStarted,
    FulfillmentCompleted,
    ShipmentDispatched,
    ShipmentDelivered,
)


def load_saga(key: bytes) -> core.OrderSaga:
    raw = sagas.get(key)
    if raw is None:
        tenant, order_id = split_key(key)
        return core.new_saga(tenant, order_id)
    return core.OrderSaga.model_validate_json(raw)


async def _apply(key: bytes, saga: core.OrderSaga, result: core.SagaResult, source: SourceRef | None) -> None:
    sagas[key] = result.saga.model_dump_json().encode()
    if result.saga.status == "INVENTORY_ALLOCATED" and saga.status != "INVENTORY_ALLOCATED":
        assert result.saga.reserved_until is not None
        expiry.add(key, result.saga.reserved_until)
    for output in result.outputs:
        await publish(output)
        if source is not None and source.timestamp and output.event_type in PLACEMENT_OUTCOMES and not result.duplicate:
            ORDER_ALLOCATION_SECONDS.labels(output.event_type).observe(max(time.time() - source.timestamp, 0.0))
    for command in result.commands:
        await send_command(command, source)
    if result.note:
        log.info("order %s/%s: %s", result.saga.tenant_id, result.saga.order_id, result.note)


async def _apply_unsourced(key: bytes, saga: core.OrderSaga, result: core.SagaResult) -> None:
    await _apply(key, saga, result, None)


def _due(saga: core.OrderSaga) -> datetime | None:
    return saga.reserved_until if saga.status == "INVENTORY_ALLOCATED" else None


expiry = ExpiryIndex(sagas, load_saga, _due, core.expire, core.resend, "EXPIRED")


async def apply_command(event: Any) -> None:
    message = event.message
    started = time.perf_counter()
    envelope: Envelope | None = None
    try:
        envelope, command = read(message)
        if isinstance(command, ExpiryTick):
            expired = await expiry.walk(command, _apply_unsourced)
            EVENTS_PROCESSED.labels("order_commands", "tick").inc()
            if expired:
                log.info("expired %d order(s) on partition %d", expired, message.partition)
            return
        if not isinstance(command, SAGA_MESSAGES):
            raise TypeError(f"{type(command).__name__} does not belong on the order topic")
        saga = load_saga(message.key)
        result = core.handle(saga, command, utcnow(), hold)
    except Exception as exc:
        log.exception("order saga failed on %s[%d]@%d", message.topic, message.partition, message.offset)
        await dead_letter_internal("order_commands", message, envelope, type(exc).__name__, f"unexpected error: {exc}")
        return
    await _apply(message.key, saga, result, envelope.source)
    count_handled("order_commands", "order_sagas", result.duplicate, started)


@app.agent(topics["order_commands"], name="order_sagas", concurrency=1)
async def run_order_sagas(stream: Any) -> None:
    async for event in stream.events():
        await apply_command(event)


send_ticks("order_commands")
