"""The SKU ledger processor: one writer per `tenant|sku` (topic sku_commands), the ledger in Quix state in
the split layout (agents/runtime/store.py). The partition key's state is the partition's backorder index
(agents/processors/indexes.py)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from agents.core import ledger as core
from agents.core.commands import FillBackorders, ProcessBackorders, WatchBackorders
from agents.core.ids import event_id, split_key
from agents.envelope import Envelope
from agents.metrics import EVENTS_PROCESSED
from agents.processors import indexes
from agents.processors.base import (
    Out,
    Where,
    addressed,
    checked,
    child,
    count_handled,
    log,
    observe_hop,
    outs_of,
    read,
    refused,
    utcnow,
)
from agents.runtime.partitions import is_partition_key, partition_keys
from agents.runtime.store import ledger_store

TOPIC = "sku_commands"


class LedgerProcessor:
    def __init__(self, partitions: int, dedup_window: int, cache_entries: int) -> None:
        self.partitions = partitions
        self.dedup_window = dedup_window
        self.store = ledger_store(dedup_window, cache_entries)

    def __call__(self, value: bytes, key: bytes, timestamp: int, state: Any, where: Where) -> list[Out]:
        started = time.perf_counter()
        observe_hop(TOPIC, timestamp)
        envelope: Envelope | None = None
        try:
            envelope, command = read(value)
            if is_partition_key(key):
                return self._index(state, command)
            ledger = self.store.get(state, key)
            if ledger is None:
                tenant, sku = split_key(key)
                ledger = core.new_ledger(tenant, sku)
            now = utcnow()
            if isinstance(command, FillBackorders):
                filled, replies = core.fill_backorders(ledger, now)
                result = core.LedgerResult(filled, [core.availability(filled)] if filled is not ledger else [], replies)
            else:
                result = core.handle(ledger, command, now, self.dedup_window)  # type: ignore[arg-type]
            out = checked(outs_of(result.outputs, result.replies, envelope.source))
            if bool(ledger.backorders) != bool(result.ledger.backorders):
                out.append(self._watch(result.ledger, where.partition, now))
            # A duplicate writes nothing new: Quix keeps state and outputs of a message in one checkpoint.
            if result.ledger is not ledger:
                self.store.put(state, key, result.ledger)
        except Exception as exc:  # a refusal or a bug: dead-lettered, the partition moves on
            return refused(TOPIC, "sku ledger", where, key, value, envelope, exc)
        count_handled(TOPIC, "sku_ledger", result.duplicate, started)
        return out

    def _watch(self, ledger: core.SkuLedger, partition: int, now: datetime) -> Out:
        waiting = bool(ledger.backorders)
        command = WatchBackorders(
            command_id=event_id("WatchBackorders", ledger.tenant_id, ledger.sku, ledger.version, waiting),
            tenant_id=ledger.tenant_id,
            issued_at=now,
            sku=ledger.sku,
            waiting=waiting,
        )
        return Out(TOPIC, partition_keys(self.partitions)[partition], addressed(command, None))

    def _index(self, state: Any, command: Any) -> list[Out]:
        if isinstance(command, WatchBackorders):
            indexes.watch_backorders(state, command)
            EVENTS_PROCESSED.labels(TOPIC, "indexed").inc()
            return []
        if isinstance(command, ProcessBackorders):
            out = indexes.fan_out_backorders(state, command)
            log.info("process backorders of %s: %d SKU(s) with a queue", command.tenant_id, len(out))
            child(EVENTS_PROCESSED, TOPIC, "applied").inc()
            return out
        raise TypeError(f"{type(command).__name__} does not belong on a partition key of {TOPIC}")
