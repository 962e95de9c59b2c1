"""The reliability suite (`make test-faults`): the fleet under load while workers are killed, added and
removed, brokers die, and upstream sends duplicates, reordered events and garbage. After each run the
independent checker (tests/support/checker.audit) reads the outputs and judges DESIGN.md section 4.

FAULT_SCALE (default 1) multiplies how many faults and how much load each test uses."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.support.checker import Verdict, audit
from tests.support.fleet import Fleet, wait_until
from tests.support.load import Load, Workload

pytestmark = [pytest.mark.broker, pytest.mark.faults]

SCALE = float(os.environ.get("FAULT_SCALE", "1"))
OUTPUTS = ("allocations", "availability", "fulfillments", "dlq")


def scaled(n: int) -> int:
    return max(1, round(n * SCALE))


@pytest.fixture
def fleet_factory(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Fleet]]:
    fleets: list[Fleet] = []

    def make(servers: str | None = None) -> Fleet:
        fleet = Fleet(servers or bootstrap, Path(tmp_path_factory.mktemp("fleet")))
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.close()


def tenants() -> tuple[str, ...]:
    run = uuid.uuid4().hex[:6]
    return (f"fa{run}", f"fb{run}")


def consumed(fleet: Fleet) -> list[str]:
    """The topics the fleet's consumer group reads: inputs and internal command topics (from topics.yaml)."""
    raw = yaml.safe_load(fleet.topics_file.read_text())
    return [body["name"] for body in raw["topics"].values() if body["role"] in ("input", "internal")]


def group_caught_up(fleet: Fleet) -> bool:
    """The fleet's consumer group has committed the end of every partition it reads (inputs and internal
    commands), but for the expiry ticks each worker sends its order and opportunity partitions every second:
    a partition whose only uncommitted records are ticks counts as caught up (otherwise the group is hardly
    ever seen caught up, and a run waits for a lucky moment)."""
    admin = AdminClient({"bootstrap.servers": fleet.bootstrap})
    request = ConsumerGroupTopicPartitions(fleet.app_id)
    probe = Consumer({"bootstrap.servers": fleet.bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        metadata = probe.list_topics(timeout=10)
        ends = {}
        for name in consumed(fleet):
            for partition in metadata.topics[name].partitions:
                ends[(name, partition)] = probe.get_watermark_offsets(TopicPartition(name, partition), timeout=10)[1]
        try:
            result = admin.list_consumer_group_offsets([request])[fleet.app_id].result(timeout=10)
        except Exception:
            return False
        committed = {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions}
        behind = []
        for (name, partition), high in ends.items():
            offset = committed.get((name, partition), -1)
            if high > 0 and offset < 0:
                return False  # records the group never committed at all
            if 0 <= offset < high:
                behind.append(TopicPartition(name, partition, offset))
        return only_ticks(probe, behind, ends)
    finally:
        probe.close()


def only_ticks(probe: Consumer, behind: list[TopicPartition], ends: dict[tuple[str, int], int]) -> bool:
    """Whether every record from each partition's committed offset to its end (read as of `ends`) is an
    expiry tick."""
    if not behind:
        return True
    probe.assign(behind)
    left = {(tp.topic, tp.partition) for tp in behind}
    deadline = time.monotonic() + 10
    while left and time.monotonic() < deadline:
        for msg in probe.consume(100, timeout=0.5):
            where = (msg.topic(), msg.partition())
            if msg.error() or where not in left:
                continue
            if json.loads(msg.value()).get("kind") != "ExpiryTick":
                return False
            if msg.offset() + 1 >= ends[where]:
                left.discard(where)
    return not left


def settle_and_audit(fleet: Fleet, load: Load, timeout: float = 180) -> Verdict:
    """Wait until the fleet has consumed everything and the checker is satisfied (or time is up), then
    judge once more from a fresh read of every output topic."""
    names = set(load.workload.tenants)
    readers = {topic: fleet.reader(topic) for topic in OUTPUTS}
    try:

        def verdict() -> Verdict:
            return audit(names, load.sent, {topic: list(r.drain()) for topic, r in readers.items()})

        last: list[Verdict] = []

        def settled() -> bool:
            if not group_caught_up(fleet):
                return False
            last[:] = [verdict()]
            return not last[0].problems

        try:
            wait_until(settled, timeout, "the fleet to catch up and the checker to be satisfied", interval=1.0)
        except AssertionError:
            dump(fleet, load, {topic: r.records for topic, r in readers.items()})
            if last:
                last[0].assert_ok()
            raise
    finally:
        for reader in readers.values():
            reader.close()
    fresh = {topic: fleet.reader(topic) for topic in OUTPUTS}
    try:
        final = audit(names, load.sent, {topic: list(r.drain()) for topic, r in fresh.items()})
    finally:
        for reader in fresh.values():
            reader.close()
    if final.problems:
        dump(fleet, load, {topic: r.records for topic, r in fresh.items()})
    final.assert_ok()
    return final


def dump(fleet: Fleet, load: Load, outputs: dict[str, list[dict[str, Any]]]) -> None:
    """On a failed audit: keep what the checker saw (audit.json, to re-run tests.support.checker.audit on it)
    next to the worker logs, and show where they are with the end of each worker's log."""
    sent = [
        {
            **{k: v for k, v in vars(s).items() if k not in ("key", "value")},
            "key": s.key.decode(errors="replace"),
            "value": base64.b64encode(s.value).decode(),
        }
        for s in load.sent
    ]
    path = fleet.directory / "audit.json"
    path.write_text(json.dumps({"tenants": list(load.workload.tenants), "sent": sent, "outputs": outputs}, default=str))
    print(f"audit data: {path}")
    for worker in fleet.workers:
        print(f"---- {worker.name} ({worker.log_path}) ----\n{worker.tail_log(40)}")


def start_load(fleet: Fleet, rate: float = 15.0, **faults: float) -> Load:
    load = Load(fleet, Workload(tenants()), rate=rate, **faults)
    load.setup()
    return load
