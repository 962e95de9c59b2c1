"""CPU per order line in the fleet's own code: the processors of agents/processors run in one process on real
Quix RocksDB store partitions, and the records they return are handed to the next processor in memory (no
broker, no Quix consumer loop). What a worker spends on top of this is Kafka and Quix's loop
(bench/runtimes.py measures those).

    .venv/bin/python -m bench.cpu [--orders 3000] [--profile 25]

Prints CPU µs per order line and per record handled, by processor, and with --profile the top functions
(cProfile, cumulative) over the same run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

from quixstreams.state.rocksdb import RocksDBStorePartition
from rich.console import Console
from rich.table import Table

from agents.codec import Codec, LocalSchemaRegistry
from agents.processors.base import Out, Where
from agents.processors.customers import CustomerProcessor
from agents.processors.intake import INPUTS, Intake
from agents.processors.ledger import LedgerProcessor
from agents.processors.sagas import Opportunities, OrderSagas
from agents.settings import Settings
from agents.topology import load_topology
from bench.traffic import Traffic

Processor = Callable[..., list[Out]]


class Pipeline:
    """The stateful processors on one store partition each, and the intakes; `feed` runs a record and
    every record it leads to, breadth first, in a transaction per store that is written every
    `checkpoint_every` records (as Quix writes at each checkpoint)."""

    def __init__(self, folder: Path, checkpoint_every: int = 500) -> None:
        settings = Settings()
        codec = Codec(LocalSchemaRegistry(settings.schemas_dir))
        topology = load_topology(settings.topics_file)
        widths = {tid: spec.partitions for tid, spec in topology.topics.items()}
        self.partitions = widths["sku_commands"]
        self.stateful: dict[str, Processor] = {
            "sku_commands": LedgerProcessor(self.partitions, settings.dedup_window, settings.state_cache_entries),
            "order_commands": OrderSagas(self.partitions, settings.state_cache_entries, timedelta(minutes=15)),
            "customer_commands": CustomerProcessor(
                self.partitions, settings.dedup_window, settings.state_cache_entries, {}
            ),
            "opportunity_commands": Opportunities(self.partitions, settings.state_cache_entries),
        }
        self.intakes = {tid: Intake(tid, codec, widths) for tid in INPUTS}
        self.stores = {tid: RocksDBStorePartition(str(folder / tid)) for tid in self.stateful}
        self.cpu: Counter[str] = Counter()
        self.handled: Counter[str] = Counter()
        self.offset = 0
        self.transactions: dict[str, Any] = {}
        self.checkpoint_every = checkpoint_every

    def checkpoint(self) -> None:
        """Write every open transaction, as Quix does at each checkpoint (prepare, then flush to RocksDB)."""
        for tid, tx in self.transactions.items():
            started = time.process_time()
            tx.prepare()
            tx.flush()
            self.cpu[tid] += time.process_time() - started
        self.transactions.clear()

    def close(self) -> None:
        for store in self.stores.values():
            store.close()

    def feed(self, topic_id: str, key: bytes, value: bytes) -> None:
        queue: deque[tuple[str, bytes, bytes]] = deque([(topic_id, key, value)])
        while queue:
            tid, k, v = queue.popleft()
            self.offset += 1
            where = Where(tid, 0, self.offset)
            started = time.process_time()
            if tid in self.intakes:
                outs = self.intakes[tid](v, k, int(time.time() * 1000), None, where)
            elif tid in self.stateful:
                tx = self.transactions.get(tid)
                if tx is None:
                    tx = self.transactions[tid] = self.stores[tid].begin()
                outs = self.stateful[tid](v, k, int(time.time() * 1000), tx.as_state(prefix=k), where)
            else:
                continue  # an output or view topic: the end of this record's path
            self.cpu[tid] += time.process_time() - started
            self.handled[tid] += 1
            if self.offset % self.checkpoint_every == 0:
                self.checkpoint()
            queue.extend((out.topic_id, out.key, out.value) for out in outs)


def run(orders: int, profile: int, console: Console, sort: str = "cumulative") -> dict[str, Any]:
    traffic = Traffic(tenants=4, skus_per_tenant=100, customers_per_tenant=20)
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cpu-")))
        pipeline = Pipeline(folder)
        stack.callback(pipeline.close)
        for topic_id, key, event in traffic.setup_events():
            pipeline.feed(topic_id, key, json.dumps(event).encode())
        warm = [traffic.order("warmup") for _ in range(200)]
        for planned in warm:
            pipeline.feed("orders", f"{planned.tenant}:{planned.order_id}".encode(), json.dumps(planned.event).encode())
        pipeline.cpu.clear()
        pipeline.handled.clear()
        planned_orders = [traffic.order("cpu") for _ in range(orders)]
        profiler = cProfile.Profile() if profile else None
        lines = 0
        started = time.process_time()
        if profiler:
            profiler.enable()
        for planned in planned_orders:
            lines += planned.lines
            pipeline.feed("orders", f"{planned.tenant}:{planned.order_id}".encode(), json.dumps(planned.event).encode())
        if profiler:
            profiler.disable()
        pipeline.checkpoint()
        total = time.process_time() - started
    table = Table(title=f"CPU per order line, in-process ({orders} orders, {lines} lines)")
    for column in ("processor", "records", "records per line", "CPU µs per record", "CPU µs per line"):
        table.add_column(column, justify="right" if column != "processor" else "left")
    for tid, seconds in sorted(pipeline.cpu.items(), key=lambda kv: -kv[1]):
        n = pipeline.handled[tid]
        table.add_row(tid, f"{n:,}", f"{n / lines:.2f}", f"{seconds / n * 1e6:,.0f}", f"{seconds / lines * 1e6:,.0f}")
    table.add_row("all", f"{sum(pipeline.handled.values()):,}", "", "", f"{total / lines * 1e6:,.0f}")
    console.print(table)
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(profile)
        console.print(out.getvalue())
    return {
        "orders": orders,
        "lines": lines,
        "cpu_us_per_line": round(total / lines * 1e6, 1),
        "per_topic_us_per_line": {t: round(s / lines * 1e6, 1) for t, s in pipeline.cpu.items()},
        "records_per_line": round(sum(pipeline.handled.values()) / lines, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.cpu", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions (cProfile)")
    parser.add_argument("--sort", default="cumulative", help="cProfile order: cumulative or tottime")
    args = parser.parse_args(argv)
    console = Console()
    result = run(args.orders, args.profile, console, args.sort)
    console.print(f"CPU per order line: {result['cpu_us_per_line']} µs ({result['records_per_line']} records per line)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
