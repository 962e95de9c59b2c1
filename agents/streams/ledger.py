"""The SKU ledger agent: one writer per `tenant|sku`, state in the sku_ledger table (RocksDB)."""

from __future__ import annotations

import time
from typing import Any

from agents import state_store
from agents.app import app, log, settings, table, topics
from agents.core import ledger as core
from agents.core.commands import ProcessBackorders
from agents.core.ids import split_key
from agents.envelope import Envelope
from agents.state_store import is_entry_key
from agents.streams.common import (
    count_handled,
    dead_letter_internal,
    forget_on_rebalance,
    publish,
    read,
    send_command,
    utcnow,
)

sku_ledgers = table("sku_ledger", "sku_ledger_changelog")
# A reservation and a queued backorder line per record: a busy SKU's ledger never makes a big record.
ledger_store = forget_on_rebalance(
    state_store.ledger_store(sku_ledgers, settings.dedup_window, settings.state_cache_entries)
)


def load_ledger(key: bytes) -> core.SkuLedger:
    ledger = ledger_store.get(key)
    if ledger is None:
        tenant, sku = split_key(key)
        return core.new_ledger(tenant, sku)
    return ledger


def ledger_keys(db: Any, prefix: bytes = b"") -> list[bytes]:
    """The ledger keys (headers) of one partition's database, from `prefix` on while they match it."""
    found = []
    for key in db.keys(from_key=prefix):
        if not key.startswith(prefix):
            break
        if not key.startswith(b"\x00") and not is_entry_key(key):
            found.append(key)
    return found


async def process_backorders(partition: int, command: ProcessBackorders) -> int:
    """Re-run the backorder queues of the tenant's ledgers in this partition; returns how many changed."""
    prefix = f"{command.tenant_id}|".encode()
    changed = 0
    for key in ledger_keys(sku_ledgers.data._db_for_partition(partition), prefix):
        ledger = load_ledger(key)
        filled, replies = core.fill_backorders(ledger, utcnow())
        if filled is ledger:
            continue
        ledger_store.put(key, filled)
        await publish(core.availability(filled))
        for reply in replies:
            await send_command(reply, None)
        changed += 1
    return changed


async def apply_command(event: Any) -> None:
    message = event.message
    started = time.perf_counter()
    envelope: Envelope | None = None
    try:
        envelope, command = read(message)
        if isinstance(command, ProcessBackorders):
            changed = await process_backorders(message.partition, command)
            log.info(
                "processed backorders of %s on partition %d: %d ledger(s) changed",
                command.tenant_id,
                message.partition,
                changed,
            )
            return
        result = core.handle(load_ledger(message.key), command, utcnow(), settings.dedup_window)  # type: ignore[arg-type]
    except core.BusinessRuleViolation as exc:
        await dead_letter_internal("sku_commands", message, envelope, "BusinessRuleViolation", exc.reason)
        return
    except Exception as exc:
        log.exception("sku ledger failed on %s[%d]@%d", message.topic, message.partition, message.offset)
        await dead_letter_internal("sku_commands", message, envelope, type(exc).__name__, f"unexpected error: {exc}")
        return
    # A duplicate writes every record again: the first attempt may not have reached the changelog.
    ledger_store.put(message.key, result.ledger, refresh=result.duplicate)
    for output in result.outputs:
        await publish(output)
    for reply in result.replies:
        await send_command(reply, envelope.source)
    count_handled("sku_commands", "sku_ledger", result.duplicate, started)


@app.agent(topics["sku_commands"], name="sku_ledger", concurrency=1)
async def maintain_sku_ledgers(stream: Any) -> None:
    async for event in stream.events():
        await apply_command(event)
