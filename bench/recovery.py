"""Recovery time of a worker's state, per 100 MB of changelog: one worker builds SKU ledgers for many SKUs,
then (1) is SIGKILLed and restarted on its local RocksDB (Quix replays only the changelog tail), and (2) is
stopped and restarted with its data folder deleted (Quix replays every changelog from the beginning).
Each restart is timed from the process start to the first output of a probe produced right after it.

    .venv/bin/python -m bench.recovery [--skus 150000] [--bootstrap HOST:PORT]

With no --bootstrap it starts a broker of its own (port 19492, .kafka/bench-recovery) and stops it.
Results: bench/results/recovery-<UTC time>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from rich.console import Console
from rich.progress import Progress

from agents.topology import load_topology
from tests.support import events
from tests.support.fleet import Fleet, Worker, wait_until

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"
TENANT = "recovery"


def changelog_bytes(bootstrap: str, names: list[str]) -> tuple[int, int]:
    """(records, bytes of key + value) in the given topics, read from the beginning."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"size-{time.time_ns()}", "enable.auto.commit": False}
    )
    try:
        tps = [
            TopicPartition(name, p)
            for name in names
            for p in consumer.list_topics(name, timeout=10).topics[name].partitions
        ]
        ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        consumer.assign(
            [TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in tps if ends[(tp.topic, tp.partition)]]
        )
        left = sum(ends.values())
        records = size = 0
        while left > 0:
            batch = consumer.consume(10_000, timeout=1.0)
            for msg in batch:
                if msg.error():
                    continue
                records += 1
                size += len(msg.key() or b"") + len(msg.value() or b"")
                left -= 1
            if not batch:
                positions = consumer.position([tp for tp in tps if ends[(tp.topic, tp.partition)]])
                if all(p.offset >= ends[(p.topic, p.partition)] for p in positions):
                    break
        return records, size
    finally:
        consumer.close()


def lag(worker: Worker, topics: list[str]) -> float:
    return sum(worker.metric("inventory_consumer_lag_messages", topic=t) for t in topics)


def probe(fleet: Fleet, worker: Worker, label: str) -> float:
    """Start the worker, produce one receipt on a new SKU at once, and time start -> its availability."""
    reader = fleet.reader("availability")
    reader.drain()
    sku = f"PROBE-{label}-{time.time_ns()}"
    started = time.monotonic()
    worker.start()
    fleet.produce("stock_movements", events.received(TENANT, sku, 1), key=events.key(TENANT, sku))
    fleet.flush()
    reader.wait_for(lambda r: r.get("sku") == sku, timeout=1800, what=f"the probe after {label}")
    took = time.monotonic() - started
    reader.close()
    worker.wait_ready(timeout=600)
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.recovery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--skus", type=int, default=150_000, help="SKU ledgers to build (one receipt each)")
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--kafka-port", type=int, default=19492)
    args = parser.parse_args(argv)
    console = Console()
    own = args.bootstrap is None
    bootstrap = args.bootstrap or f"127.0.0.1:{args.kafka_port}"
    kafka_env = {**os.environ, "KAFKA_PORT": str(args.kafka_port), "KAFKA_DATA": str(ROOT / ".kafka/bench-recovery")}
    if own:
        shutil.rmtree(ROOT / ".kafka/bench-recovery", ignore_errors=True)
        subprocess.run([str(KAFKA_SH), "up"], env=kafka_env, check=True)
    workdir = Path(tempfile.mkdtemp(prefix="inventory-recovery-"))
    fleet = Fleet(bootstrap, workdir)
    try:
        # Static membership: the restarted worker takes its partitions back without waiting out the session.
        worker = fleet.add_worker(
            INVENTORY_LAG_INTERVAL_S="1", INVENTORY_LOG_LEVEL="warning", INVENTORY_MEMBER_ID="recovery-w1"
        )
        worker.wait_ready(timeout=180)
        topology = load_topology(fleet.topics_file)
        consumed = [fleet.names["stock_movements"], fleet.names["sku_commands"]]
        started = time.monotonic()
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("receipts", total=args.skus)
            for n in range(args.skus):
                sku = f"SKU-{n:07d}"
                fleet.produce("stock_movements", events.received(TENANT, sku, 1 + n % 50), key=events.key(TENANT, sku))
                if n % 5000 == 0:
                    progress.update(task, completed=n)
            fleet.flush()
            progress.update(task, completed=args.skus, description="processing")
            time.sleep(2)
            wait_until(lambda: lag(worker, consumed) == 0, 3600, "the worker to process every receipt", interval=1)
        build_s = time.monotonic() - started
        changelogs = [spec.name for spec in topology.changelogs(fleet.app_id).topics.values()]
        records, size = changelog_bytes(bootstrap, changelogs)
        console.log(f"{args.skus:,} ledgers in {build_s:.0f}s; changelogs: {records:,} records, {size / 1e6:.1f} MB")

        worker.kill()
        warm = probe(fleet, worker, "sigkill")
        console.log(f"SIGKILL, restart on local state: first output after {warm:.1f}s")
        worker.stop()
        shutil.rmtree(Path(worker.env["INVENTORY_DATA_DIR"]))
        cold = probe(fleet, worker, "empty")
        console.log(f"data folder deleted, full changelog replay: first output after {cold:.1f}s")
    finally:
        fleet.close()
        if own:
            subprocess.run([str(KAFKA_SH), "down"], env=kafka_env, check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {
        "skus": args.skus,
        "changelog_records": records,
        "changelog_mb": round(size / 1e6, 1),
        "restart_after_sigkill_s": round(warm, 2),
        "restart_empty_s": round(cold, 2),
        "full_replay_s_per_100mb": round(cold / (size / 1e8), 1) if size else None,
        # the replay alone: what a cold restart costs beyond a warm one (same start-up and group join)
        "replay_only_s_per_100mb": round(max(cold - warm, 0) / (size / 1e8), 1) if size else None,
        "at": datetime.now(UTC).isoformat(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"recovery-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = (
        f"# Recovery ({result['at']})\n\n`python -m bench.recovery --skus {args.skus}`\n\n"
        "| changelog | restart after SIGKILL (local state + tail) | restart with no local state (full replay) "
        "| per 100 MB (whole restart) | per 100 MB (replay alone: cold - warm) |\n|---|---:|---:|---:|---:|\n"
        f"| {records:,} records, {size / 1e6:.1f} MB | {warm:.1f} s | {cold:.1f} s "
        f"| {result['full_replay_s_per_100mb']} s | {result['replay_only_s_per_100mb']} s |\n\n"
        "Each time is from the worker process's start to the availability record of a receipt produced at that"
        " moment, so it includes the interpreter's start-up and the group join.\n"
    )
    (RESULTS / f"recovery-{stamp}.md").write_text(md)
    console.print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
