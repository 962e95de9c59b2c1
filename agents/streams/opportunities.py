"""The opportunity agent: one saga per `tenant|opportunity` in the opportunities table (soft holds on the
SKU ledgers), and an expiry index per partition (bucketed by the end of expected_close_date) that a timer's
ticks walk, so expiry is decided in the log.

The index is a copy of the order saga's (agents/streams/orders.py), not shared with it, with two changes an
opportunity needs: a due time already past is filed under the current bucket (a close date months ago must
not make the next tick walk months of empty buckets), and an entry whose close date moved later is moved to
its new bucket instead of pinning the cursor.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from agents.app import app, log, settings, table, topics
from agents.core import opportunity as core
from agents.core.commands import ExpiryTick, OpportunityConverted, OpportunityPreempted, SoftReserved
from agents.core.events import OpportunityUpserted
from agents.core.ids import event_id, split_key
from agents.envelope import Envelope, SourceRef, wrap
from agents.metrics import DUPLICATES, EVENTS_PROCESSED, PROCESSING_SECONDS
from agents.streams.common import dead_letter_internal, publish, read, send_command, utcnow

opportunities = table("opportunities", "opportunity_changelog")
BUCKET_S = 10
INDEX_PREFIX = b"\x00expiry|"  # + bucket start (epoch seconds): opportunity keys due in that bucket
CURSOR_KEY = b"\x00expiry-cursor"  # the oldest bucket that may still hold due opportunities
TICK_KEY = b"\x00tick"
TICKS_REMEMBERED = 32
EXPIRY_GRACE_S = 60  # expired opportunities stay in the index this long, for a redelivered tick to re-send
OPPORTUNITY_MESSAGES = (OpportunityUpserted, SoftReserved, OpportunityConverted, OpportunityPreempted)


def load_opportunity(key: bytes) -> core.OpportunitySaga:
    raw = opportunities.get(key)
    if raw is None:
        tenant, opportunity_id = split_key(key)
        return core.new_opportunity(tenant, opportunity_id)
    return core.OpportunitySaga.model_validate_json(raw)


def _bucket(moment: datetime) -> int:
    seconds = int(moment.timestamp())
    return seconds - seconds % BUCKET_S


def _slot(bucket: int) -> bytes:
    return INDEX_PREFIX + str(bucket).encode()


def _read_slot(bucket: int) -> dict[str, list[str]]:
    raw = opportunities.get(_slot(bucket))
    return json.loads(raw) if raw else {"pending": [], "expired": []}


def _read_index() -> dict[str, Any]:
    raw = opportunities.get(CURSOR_KEY)
    return json.loads(raw) if raw else {"cursor": None, "ticks": []}


def _index_add(key: bytes, due: datetime) -> None:
    bucket = max(_bucket(due), _bucket(utcnow()))  # already due: the next tick takes it
    slot = _read_slot(bucket)
    if key.decode() not in slot["pending"]:
        slot["pending"].append(key.decode())
        opportunities[_slot(bucket)] = json.dumps(slot).encode()
    index = _read_index()
    if index["cursor"] is None or index["cursor"] > bucket:
        opportunities[CURSOR_KEY] = json.dumps({**index, "cursor": bucket}).encode()


def _holding(saga: core.OpportunitySaga) -> bool:
    return bool(saga.holds) or saga.round is not None


async def _apply(
    key: bytes, saga: core.OpportunitySaga, result: core.OpportunityResult, source: SourceRef | None
) -> None:
    nxt = result.saga
    opportunities[key] = nxt.model_dump_json().encode()
    if nxt.expires_at is not None and _holding(nxt) and (not _holding(saga) or saga.expires_at != nxt.expires_at):
        _index_add(key, nxt.expires_at)
    for output in result.outputs:
        await publish(output)
    for command in result.commands:
        await send_command(command, source)
    if result.note:
        log.info("opportunity %s/%s: %s", nxt.tenant_id, nxt.opportunity_id, result.note)


async def _expire_due(tick: ExpiryTick) -> int:
    """Walk the index from its cursor to the tick's time and expire what is due; returns how many (see
    agents/streams/orders.py, whose walk this follows, for how a redelivered tick re-sends)."""
    now = tick.issued_at
    index = _read_index()
    redelivery = tick.command_id in index["ticks"]
    if not redelivery:
        index = {**index, "ticks": [*index["ticks"], tick.command_id][-TICKS_REMEMBERED:]}
        opportunities[CURSOR_KEY] = json.dumps(index).encode()
    if index["cursor"] is None:
        return 0
    bucket, cursor, expired = int(index["cursor"]), None, 0
    while bucket <= _bucket(now):
        slot = _read_slot(bucket)
        if slot["pending"] or redelivery:
            waiting: list[str] = []
            for entry in slot["pending"] + (slot["expired"] if redelivery else []):
                key = entry.encode()
                saga = load_opportunity(key)
                result = core.expire(saga, now, tick.command_id)
                if result.saga is not saga:
                    await _apply(key, saga, result, None)
                    slot["expired"].append(entry)
                    expired += 1
                elif _holding(saga) and saga.expires_at is not None:
                    if _bucket(saga.expires_at) > bucket:
                        _index_add(key, saga.expires_at)  # the close date moved later: file it there
                    else:
                        waiting.append(entry)  # not due yet (later in this bucket)
                elif redelivery and saga.status == "EXPIRED":
                    await _apply(key, saga, core.resend(saga, now, "expiry re-sent after redelivery"), None)
            slot = {"pending": waiting, "expired": sorted(set(slot["expired"]))}
            opportunities[_slot(bucket)] = json.dumps(slot).encode()
        settled = not slot["pending"] and bucket + BUCKET_S + EXPIRY_GRACE_S <= now.timestamp()
        if settled and cursor is None:
            if opportunities.get(_slot(bucket)) is not None:
                del opportunities[_slot(bucket)]
        elif cursor is None:
            cursor = bucket
        bucket += BUCKET_S
    # An entry moved to a later bucket is past the tick's bucket, so never before this cursor.
    opportunities[CURSOR_KEY] = json.dumps({**index, "cursor": cursor if cursor is not None else bucket}).encode()
    return expired


async def apply_command(event: Any) -> None:
    message = event.message
    started = time.perf_counter()
    envelope: Envelope | None = None
    try:
        envelope, command = read(message)
        if isinstance(command, ExpiryTick):
            expired = await _expire_due(command)
            EVENTS_PROCESSED.labels("opportunity_commands", "tick").inc()
            if expired:
                log.info("expired %d opportunity(ies) on partition %d", expired, message.partition)
            return
        if not isinstance(command, OPPORTUNITY_MESSAGES):
            raise TypeError(f"{type(command).__name__} does not belong on the opportunity topic")
        saga = load_opportunity(message.key)
        result = core.handle(saga, command, utcnow())
    except Exception as exc:
        log.exception("opportunity agent failed on %s[%d]@%d", message.topic, message.partition, message.offset)
        await dead_letter_internal(
            "opportunity_commands", message, envelope, type(exc).__name__, f"unexpected error: {exc}"
        )
        return
    await _apply(message.key, saga, result, envelope.source)
    if result.duplicate:
        DUPLICATES.labels("opportunities").inc()
    EVENTS_PROCESSED.labels("opportunity_commands", "duplicate" if result.duplicate else "applied").inc()
    PROCESSING_SECONDS.labels("opportunities").observe(time.perf_counter() - started)


@app.agent(topics["opportunity_commands"], name="opportunities", concurrency=1)
async def run_opportunities(stream: Any) -> None:
    async for event in stream.events():
        await apply_command(event)


@app.timer(interval=settings.expiry_tick_s)  # type: ignore[untyped-decorator]
async def tick_opportunity_expiry() -> None:
    """Send a tick to each opportunity partition this worker owns; the agent decides in log order."""
    name = topics["opportunity_commands"].get_topic_name()
    now = datetime.now(UTC)
    for tp in app.consumer.assignment():
        if tp.topic != name:
            continue
        tick = ExpiryTick(
            command_id=event_id("ExpiryTick", "opportunities", tp.partition, now.isoformat()),
            tenant_id="-",
            issued_at=now,
        )
        await topics["opportunity_commands"].send(
            key=TICK_KEY, value=wrap("ExpiryTick", tick, None), partition=tp.partition
        )
