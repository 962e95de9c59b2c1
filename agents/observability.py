"""Wires the fleet's own metrics into the worker: consumer lag, rebalances, assigned partitions, and the
reservation and backorder gauges of the SKU ledgers this worker owns."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from agents.app import app, settings, topics, topology
from agents.lag import LagMonitor
from agents.metrics import (
    ASSIGNED_PARTITIONS,
    BACKORDER_OLDEST_AGE,
    BACKORDER_QUEUE_DEPTH,
    REBALANCES,
    RESERVATIONS,
)
from agents.streams.intake import ACTIVE_INPUTS
from agents.streams.ledger import ledger_keys, ledger_store, sku_ledgers

CONSUMED = [topology[t].name for t in (*ACTIVE_INPUTS, "sku_commands", "order_commands", "customer_commands")]


@app.on_partitions_assigned.connect  # type: ignore[arg-type]
async def count_rebalance(sender: Any, assigned: Any, **kwargs: Any) -> None:
    REBALANCES.inc()
    ASSIGNED_PARTITIONS.set(len([tp for tp in assigned if tp.topic in CONSUMED]))


@app.task  # type: ignore[untyped-decorator]
async def start_lag_monitor() -> None:
    LagMonitor(settings.kafka_bootstrap, settings.app_id, CONSUMED, settings.lag_interval_s).start()


@app.timer(interval=15.0)  # type: ignore[untyped-decorator]
async def measure_ledgers() -> None:
    """Units held and backorders waiting on the ledgers of this worker's active partitions."""
    active = {tp.partition for tp in app.consumer.assignment() if tp.topic == topics["sku_commands"].get_topic_name()}
    held = {"ORDER": 0, "OPPORTUNITY": 0}
    depth, oldest = 0, None
    started = time.perf_counter()
    for partition in active:
        for key in ledger_keys(sku_ledgers.data._db_for_partition(partition)):
            ledger = ledger_store.peek(key)
            if ledger is None:
                continue
            for r in ledger.reservations.values():
                held[r.kind] += r.quantity
            depth += len(ledger.backorders)
            for q in ledger.backorders:
                oldest = q.queued_at if oldest is None or q.queued_at < oldest else oldest
        if time.perf_counter() - started > 2.0:
            break  # a huge partition: report what was seen rather than stall the event loop
    for kind, units in held.items():
        RESERVATIONS.labels(kind).set(units)
    BACKORDER_QUEUE_DEPTH.set(depth)
    BACKORDER_OLDEST_AGE.set((datetime.now(UTC) - oldest).total_seconds() if oldest else 0)
