"""What one faust worker can do at all on this machine: the cheapest stateful agent there is (read a record,
write one RocksDB table key, send one record on), with the fleet's settings (at_least_once, acks=all,
rocksdb tables with a changelog, the same partition count), over records preloaded before the clock starts.

Every order line costs the fleet several such agent steps (intake, saga, customer, ledger, replies), so this
rate divided by the steps per line bounds the lines per second a worker can sustain, whatever the domain
code costs. Run it on a quiet machine:

    python -m bench.faust_floor --bootstrap 127.0.0.1:9092 --messages 30000

The worker runs in a process of its own (`python -m bench.faust_floor worker`, configured by environment).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from agents.kafka_io import make_consumer
from bench.ceiling import _create, _preload

PARTITIONS = 8


def worker() -> None:
    """The faust app: one agent, one table write and one send per event."""
    import faust

    source, target, group = os.environ["FLOOR_SOURCE"], os.environ["FLOOR_TARGET"], os.environ["FLOOR_GROUP"]
    app = faust.App(
        group,
        broker=f"kafka://{os.environ['FLOOR_BOOTSTRAP']}",
        store="rocksdb://",
        datadir=os.environ["FLOOR_DATA"],
        processing_guarantee="at_least_once",
        topic_partitions=PARTITIONS,
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        table_standby_replicas=0,
    )
    inbound = app.topic(source, key_type=bytes, value_type=bytes, partitions=PARTITIONS, internal=False)
    outbound = app.topic(target, key_type=bytes, value_type=bytes, partitions=PARTITIONS, internal=False)
    seen = app.Table(
        "seen",
        key_type=bytes,
        value_type=bytes,
        partitions=PARTITIONS,
        options={"driver": "rocksdict", "block_cache_size": 8 << 20, "write_buffer_size": 8 << 20},
    )

    @app.agent(inbound, concurrency=1)
    async def step(stream: Any) -> None:
        async for event in stream.events():
            seen[event.key] = event.value
            await outbound.send(key=event.key, value=event.value)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _delivered(probe: Any, topic: str) -> int:
    return sum(probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS))


def measure(bootstrap: str, messages: int, time_cap: float = 300.0) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    source, target, group = f"bench.floor-in.{suffix}", f"bench.floor-out.{suffix}", f"bench-floor-{suffix}"
    topics = [source, target, f"{group}-seen-changelog"]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    _create(admin, topics, PARTITIONS)
    _preload(bootstrap, source, messages)
    with tempfile.TemporaryDirectory() as data:
        env = {
            **os.environ,
            "FLOOR_SOURCE": source,
            "FLOOR_TARGET": target,
            "FLOOR_GROUP": group,
            "FLOOR_BOOTSTRAP": bootstrap,
            "FLOOR_DATA": data,
        }
        probe = make_consumer(bootstrap, f"bench-floor-probe-{suffix}")
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.faust_floor", "worker"], env=env, stdout=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + time_cap
            first = (0.0, 0.0, 0)  # wall clock, worker CPU, records out when the first output showed up
            done = 0
            while time.monotonic() < deadline:
                done = _delivered(probe, target)
                if done and not first[0]:
                    first = (time.monotonic(), _cpu_seconds(proc.pid), done)
                if done >= messages:
                    break
                time.sleep(0.2)
            wall, cpu = time.monotonic() - first[0], _cpu_seconds(proc.pid) - first[1]
        finally:
            proc.terminate()
            proc.wait(60)
            probe.close()
            for future in admin.delete_topics(topics).values():
                future.exception(30)
    counted = done - first[2]
    return {
        "messages": messages,
        "delivered": done,
        "events_per_s": round(counted / wall, 1) if wall > 0 else None,
        "events_per_cpu_s": round(counted / cpu, 1) if cpu > 0 else None,
        "seconds": round(wall, 2),
    }


def main() -> None:
    if sys.argv[1:2] == ["worker"]:
        worker()
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=1, help="repeat, and report each run and the median")
    args = parser.parse_args()
    runs = [measure(args.bootstrap, args.messages) for _ in range(args.runs)]
    rates = sorted(r["events_per_s"] or 0.0 for r in runs)
    print(json.dumps({"runs": runs, "median_events_per_s": rates[len(rates) // 2]}, indent=2))


if __name__ == "__main__":
    main()
