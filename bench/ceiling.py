"""The ceiling: a plain confluent-kafka consume -> produce passthrough on the same broker, over a fresh
topic pair with the stateful partition count. No decoding, no state: what Kafka and a Python client
loop allow on this machine. Messages are realistic OrderPlaced bodies, preloaded before the clock starts.

Each passthrough process gets a fixed share of the partitions (assign, not subscribe), so no group
rebalance is timed; the producer has the fleet's guarantees (acks=all, idempotent, murmur2)."""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from agents.kafka_io import make_consumer, make_producer
from tests.support import events


@dataclass
class CeilingResult:
    messages: int
    seconds: float
    partitions: int
    processes: int
    value_bytes: int
    cpu_seconds: float = 0.0  # of the passthrough processes (all their threads)

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "seconds": round(self.seconds, 3),
            "msgs_per_s": round(self.msgs_per_s, 1),
            "partitions": self.partitions,
            "processes": self.processes,
            "value_bytes": self.value_bytes,
            "cpu_seconds": round(self.cpu_seconds, 3),
            "msgs_per_cpu_s": round(self.messages / self.cpu_seconds, 1) if self.cpu_seconds else None,
        }


def _create(admin: AdminClient, names: list[str], partitions: int) -> None:
    futures = admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names])
    for future in futures.values():
        future.result(30)


def _preload(bootstrap: str, topic: str, count: int) -> int:
    producer = make_producer(bootstrap, **{"linger.ms": 20, "batch.size": 262144})
    sample = events.order("bench-t0", "O-000000", "C-000", [("SKU-0001", 2), ("SKU-0007", 1), ("SKU-0042", 5)])
    value_bytes = 0
    for i in range(count):
        sample["order_id"] = f"O-{i:06d}"
        value = json.dumps(sample).encode()
        value_bytes = len(value)
        while True:
            try:
                producer.produce(topic, value=value, key=f"bench-t0:O-{i:06d}".encode())
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0, "preload not delivered"
    return value_bytes


def _passthrough(args: tuple[str, str, str, list[tuple[int, int]], float]) -> tuple[int, float, float, float]:
    """Consume the given (partition, end offset) pairs from the beginning and produce every record on.
    Returns (records, first consume time, time the last produce was acknowledged, CPU seconds used)."""
    bootstrap, source, target, ends, time_cap = args
    consumer = make_consumer(bootstrap, f"bench-passthrough-{uuid.uuid4().hex[:8]}")
    producer = make_producer(bootstrap)
    consumer.assign([TopicPartition(source, p, OFFSET_BEGINNING) for p, _ in ends])
    remaining = {p: end for p, end in ends if end > 0}
    count, first, last_commit = 0, 0.0, time.monotonic()
    cpu_started = 0.0
    deadline = time.monotonic() + time_cap
    while remaining and time.monotonic() < deadline:
        head = consumer.poll(0.5)  # consume(n, timeout) alone would sit out the timeout on the last batch
        batch = [head, *consumer.consume(999, 0)] if head is not None else []
        if batch and not first:
            first, cpu_started = time.time(), time.process_time()
        for msg in batch:
            if msg.error():
                continue
            while True:
                try:
                    producer.produce(target, value=msg.value(), key=msg.key())
                    break
                except BufferError:
                    producer.poll(0.05)
            count += 1
            if msg.offset() + 1 >= remaining.get(msg.partition(), 0):
                remaining.pop(msg.partition(), None)
        producer.poll(0)
        if time.monotonic() - last_commit >= 1.0:  # like the fleet's commit interval
            try:
                consumer.commit(asynchronous=True)
            except KafkaException:
                pass
            last_commit = time.monotonic()
    producer.flush(60)
    done, cpu = time.time(), time.process_time() - cpu_started
    consumer.close()
    return count, first, done, cpu


def measure(
    bootstrap: str, partitions: int, messages: int, processes: int = 1, time_cap: float = 30.0
) -> CeilingResult:
    suffix = uuid.uuid4().hex[:8]
    source, target = f"bench.passthrough-in.{suffix}", f"bench.passthrough-out.{suffix}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    _create(admin, [source, target], partitions)
    try:
        value_bytes = _preload(bootstrap, source, messages)
        probe = make_consumer(bootstrap, f"bench-probe-{suffix}")
        ends = [(p, probe.get_watermark_offsets(TopicPartition(source, p), timeout=10)[1]) for p in range(partitions)]
        probe.close()
        shares = [
            (bootstrap, source, target, [e for i, e in enumerate(ends) if i % processes == k], time_cap)
            for k in range(processes)
        ]
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            results = pool.map(_passthrough, shares)
        count = sum(r[0] for r in results)
        start = min(r[1] for r in results if r[1])
        end = max(r[2] for r in results)
        cpu = sum(r[3] for r in results)
        return CeilingResult(count, end - start, partitions, processes, value_bytes, cpu)
    finally:
        for future in admin.delete_topics([source, target]).values():
            try:
                future.result(30)
            except KafkaException:
                pass
