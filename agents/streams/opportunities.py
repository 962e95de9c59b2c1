"""The opportunity agent: one saga per `tenant|opportunity` in the opportunities table (soft holds on the
SKU ledgers), with an expiry index (agents/streams/expiry.py) on the end of expected_close_date, walked by
timer ticks so that expiry is decided in the log."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from agents.app import app, log, table, topics
from agents.core import opportunity as core
from agents.core.commands import ExpiryTick, OpportunityConverted, OpportunityPreempted, SoftReserved
from agents.core.events import OpportunityUpserted
from agents.core.ids import split_key
from agents.envelope import Envelope, SourceRef
from agents.metrics import EVENTS_PROCESSED
from agents.streams.common import count_handled, dead_letter_internal, publish, read, send_command, utcnow
from agents.streams.expiry import ExpiryIndex, send_ticks

opportunities = table("opportunities", "opportunity_changelog")
OPPORTUNITY_MESSAGES = (OpportunityUpserted, SoftReserved, OpportunityConverted, OpportunityPreempted)


def load_opportunity(key: bytes) -> core.OpportunitySaga:
    raw = opportunities.get(key)
    if raw is None:
        tenant, opportunity_id = split_key(key)
        return core.new_opportunity(tenant, opportunity_id)
    return core.OpportunitySaga.model_validate_json(raw)


def _holding(saga: core.OpportunitySaga) -> bool:
    return bool(saga.holds) or saga.round is not None


async def _apply(
    key: bytes, saga: core.OpportunitySaga, result: core.OpportunityResult, source: SourceRef | None
) -> None:
    nxt = result.saga
    opportunities[key] = nxt.model_dump_json().encode()
    if nxt.expires_at is not None and _holding(nxt) and (not _holding(saga) or saga.expires_at != nxt.expires_at):
        expiry.add(key, nxt.expires_at)
    for output in result.outputs:
        await publish(output)
    for command in result.commands:
        await send_command(command, source)
    if result.note:
        log.info("opportunity %s/%s: %s", nxt.tenant_id, nxt.opportunity_id, result.note)


async def _apply_unsourced(key: bytes, saga: core.OpportunitySaga, result: core.OpportunityResult) -> None:
    await _apply(key, saga, result, None)


def _due(saga: core.OpportunitySaga) -> datetime | None:
    return saga.expires_at if _holding(saga) else None


expiry = ExpiryIndex(opportunities, load_opportunity, _due, core.expire, core.resend, "EXPIRED")


async def apply_command(event: Any) -> None:
    message = event.message
    started = time.perf_counter()
    envelope: Envelope | None = None
    try:
        envelope, command = read(message)
        if isinstance(command, ExpiryTick):
            expired = await expiry.walk(command, _apply_unsourced)
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
    count_handled("opportunity_commands", "opportunities", result.duplicate, started)


@app.agent(topics["opportunity_commands"], name="opportunities", concurrency=1)
async def run_opportunities(stream: Any) -> None:
    async for event in stream.events():
        await apply_command(event)


send_ticks("opportunity_commands")
