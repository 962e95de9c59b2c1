"""The SKU ledger agent: one writer per `tenant|sku`, state in the sku_ledger table (RocksDB)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from agents.app import app, log, send_dead_letter, settings, table, topics
from agents.codec import encode_json
from agents.core import ledger as core
from agents.core.events import load_input_json
from agents.core.ids import split_key
from agents.envelope import Envelope
from agents.metrics import DUPLICATES, EVENTS_PROCESSED, PROCESSING_SECONDS

sku_ledgers = table("sku_ledger", "sku_ledger_changelog")


def load_ledger(key: bytes) -> core.SkuLedger:
    raw = sku_ledgers.get(key)
    if raw is None:
        tenant, sku = split_key(key)
        return core.new_ledger(tenant, sku)
    return core.SkuLedger.model_validate_json(raw)


def output_key(tenant_id: str, entity_id: str) -> bytes:
    return f"{tenant_id}:{entity_id}".encode()


async def apply_command(event: Any) -> None:
    message = event.message
    started = time.perf_counter()
    envelope: Envelope | None = None
    try:
        envelope = Envelope.from_bytes(message.value)
        command = load_input_json(envelope.body)
        ledger = load_ledger(message.key)
        result = core.handle(ledger, command, datetime.now(UTC), settings.dedup_window)  # type: ignore[arg-type]
    except core.BusinessRuleViolation as exc:
        await _dead_letter(message, envelope, "BusinessRuleViolation", exc.reason)
        return
    except Exception as exc:
        log.exception("sku ledger failed on %s[%d]@%d", message.topic, message.partition, message.offset)
        await _dead_letter(message, envelope, type(exc).__name__, f"unexpected error: {exc}")
        return
    # Written even for a duplicate: the first attempt may not have reached the changelog.
    sku_ledgers[message.key] = result.ledger.model_dump_json().encode()
    for output in result.outputs:
        await topics["availability"].send(
            key=output_key(output.tenant_id, result.ledger.sku), value=encode_json(output)
        )
    if result.duplicate:
        DUPLICATES.labels("sku_ledger").inc()
    EVENTS_PROCESSED.labels("sku_commands", "duplicate" if result.duplicate else "applied").inc()
    PROCESSING_SECONDS.labels("sku_ledger").observe(time.perf_counter() - started)


async def _dead_letter(message: Any, envelope: Envelope | None, error: str, reason: str) -> None:
    source = envelope.source if envelope else None
    await send_dead_letter(
        topic_id="sku_commands",
        source_topic=source.topic if source else message.topic,
        source_partition=source.partition if source else message.partition,
        source_offset=source.offset if source else message.offset,
        error=error,
        reason=reason,
        key=source.key if source else message.key,
        value=envelope.body.encode() if envelope else message.value,
        tenant_id=split_key(message.key)[0] if message.key else None,
    )
    EVENTS_PROCESSED.labels("sku_commands", "dlq").inc()


@app.agent(topics["sku_commands"], name="sku_ledger", concurrency=1)
async def maintain_sku_ledgers(stream: Any) -> None:
    async for event in stream.events():
        await apply_command(event)
