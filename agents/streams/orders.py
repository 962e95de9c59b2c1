"""The order saga agent: one saga per `tenant|order` in the order_sagas table, and an expiry index per
partition (bucketed by reserved_until) that a timer's ticks walk, so expiry is decided in the log."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
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
from agents.core.ids import event_id, split_key
from agents.envelope import Envelope, SourceRef, wrap
from agents.metrics import DUPLICATES, EVENTS_PROCESSED, ORDER_ALLOCATION_SECONDS, PROCESSING_SECONDS
from agents.streams.common import dead_letter_internal, publish, read, send_command, utcnow

sagas = table("order_sagas", "order_saga_changelog")
BUCKET_S = 10
INDEX_PREFIX = b"\x00expiry|"  # + bucket start (epoch seconds): order keys due in that bucket
CURSOR_KEY = b"\x00expiry-cursor"  # the oldest bucket that may still hold due orders
TICK_KEY = b"\x00tick"
TICKS_REMEMBERED = 32
EXPIRY_GRACE_S = 60  # expired orders stay in the index this long, for a redelivered tick to re-send
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


def _bucket(moment: datetime) -> int:
    seconds = int(moment.timestamp())
    return seconds - seconds % BUCKET_S


def _slot(bucket: int) -> bytes:
    return INDEX_PREFIX + str(bucket).encode()


def _read_slot(bucket: int) -> dict[str, list[str]]:
    raw = sagas.get(_slot(bucket))
    return json.loads(raw) if raw else {"pending": [], "expired": []}


def _index_add(key: bytes, due: datetime) -> None:
    bucket = _bucket(due)
    slot = _read_slot(bucket)
    if key.decode() not in slot["pending"]:
        slot["pending"].append(key.decode())
        sagas[_slot(bucket)] = json.dumps(slot).encode()
    index = _read_index()
    if index["cursor"] is None or index["cursor"] > bucket:
        sagas[CURSOR_KEY] = json.dumps({**index, "cursor": bucket}).encode()


def _read_index() -> dict[str, Any]:
    raw = sagas.get(CURSOR_KEY)
    return json.loads(raw) if raw else {"cursor": None, "ticks": []}


async def _apply(key: bytes, saga: core.OrderSaga, result: core.SagaResult, source: SourceRef | None) -> None:
    sagas[key] = result.saga.model_dump_json().encode()
    if result.saga.status == "INVENTORY_ALLOCATED" and saga.status != "INVENTORY_ALLOCATED":
        assert result.saga.reserved_until is not None
        _index_add(key, result.saga.reserved_until)
    for output in result.outputs:
        await publish(output)
        if source is not None and source.timestamp and output.event_type in PLACEMENT_OUTCOMES and not result.duplicate:
            ORDER_ALLOCATION_SECONDS.labels(output.event_type).observe(max(time.time() - source.timestamp, 0.0))
    for command in result.commands:
        await send_command(command, source)
    if result.note:
        log.info("order %s/%s: %s", result.saga.tenant_id, result.saga.order_id, result.note)


async def _expire_due(tick: ExpiryTick) -> int:
    """Walk the index from its cursor to the tick's time and expire what is due; returns how many.

    The index records the ticks it has seen before anything else is written for a tick, and keeps the
    orders it expired for a grace period: a tick redelivered after a crash re-sends their releases (the
    changelog keeps a prefix of a partition's writes, the sends to other topics may have been lost)."""
    now = tick.issued_at
    index = _read_index()
    redelivery = tick.command_id in index["ticks"]
    if not redelivery:
        index = {**index, "ticks": [*index["ticks"], tick.command_id][-TICKS_REMEMBERED:]}
        sagas[CURSOR_KEY] = json.dumps(index).encode()
    if index["cursor"] is None:
        return 0
    bucket, cursor, expired = int(index["cursor"]), None, 0
    while bucket <= _bucket(now):
        slot = _read_slot(bucket)
        if slot["pending"] or redelivery:
            waiting: list[str] = []
            for order_key in slot["pending"] + (slot["expired"] if redelivery else []):
                key = order_key.encode()
                saga = load_saga(key)
                result = core.expire(saga, now, tick.command_id)
                if result.saga is not saga:
                    await _apply(key, saga, result, None)
                    slot["expired"].append(order_key)
                    expired += 1
                elif saga.status == "INVENTORY_ALLOCATED":
                    waiting.append(order_key)  # not due yet (later in this bucket)
                elif redelivery and saga.status == "EXPIRED":
                    await _apply(key, saga, core.resend(saga, now, "expiry re-sent after redelivery"), None)
            slot = {"pending": waiting, "expired": sorted(set(slot["expired"]))}
            sagas[_slot(bucket)] = json.dumps(slot).encode()
        settled = not slot["pending"] and bucket + BUCKET_S + EXPIRY_GRACE_S <= now.timestamp()
        if settled and cursor is None:
            if sagas.get(_slot(bucket)) is not None:
                del sagas[_slot(bucket)]
        elif cursor is None:
            cursor = bucket
        bucket += BUCKET_S
    sagas[CURSOR_KEY] = json.dumps({**index, "cursor": cursor if cursor is not None else bucket}).encode()
    return expired


async def apply_command(event: Any) -> None:
    message = event.message
    started = time.perf_counter()
    envelope: Envelope | None = None
    try:
        envelope, command = read(message)
        if isinstance(command, ExpiryTick):
            expired = await _expire_due(command)
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
    if result.duplicate:
        DUPLICATES.labels("order_sagas").inc()
    EVENTS_PROCESSED.labels("order_commands", "duplicate" if result.duplicate else "applied").inc()
    PROCESSING_SECONDS.labels("order_sagas").observe(time.perf_counter() - started)


@app.agent(topics["order_commands"], name="order_sagas", concurrency=1)
async def run_order_sagas(stream: Any) -> None:
    async for event in stream.events():
        await apply_command(event)


@app.timer(interval=settings.expiry_tick_s)  # type: ignore[untyped-decorator]
async def tick_expiry() -> None:
    """Send a tick to each order partition this worker owns; the saga agent decides in log order."""
    name = topics["order_commands"].get_topic_name()
    now = datetime.now(UTC)
    for tp in app.consumer.assignment():
        if tp.topic != name:
            continue
        tick = ExpiryTick(
            command_id=event_id("ExpiryTick", tp.partition, now.isoformat()), tenant_id="-", issued_at=now
        )
        await topics["order_commands"].send(key=TICK_KEY, value=wrap("ExpiryTick", tick, None), partition=tp.partition)
