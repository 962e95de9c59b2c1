"""deploy/kafka/kafka.sh with NODES=3: a three-broker KRaft cluster on one machine that keeps accepting
acks=all writes with one broker killed (replication 3, min.insync.replicas 2)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.support.broker import SCRIPT, kafka_cluster
from tests.support.fleet import wait_until

PORT = int(os.environ.get("INVENTORY_TEST_CLUSTER_PORT", "19792"))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    with kafka_cluster(PORT, tmp_path / "kafka") as found:
        yield found


def test_three_brokers_keep_acks_all_writes_going_with_one_broker_killed(cluster: tuple[str, dict[str, str]]) -> None:
    bootstrap, env = cluster
    admin = AdminClient({"bootstrap.servers": bootstrap})
    assert sorted(admin.list_topics(timeout=30).brokers) == [1, 2, 3]
    topic = f"rf3-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 3, 3, config={"min.insync.replicas": "2"})])[topic].result(timeout=60)

    def fully_replicated() -> bool:
        meta = admin.list_topics(timeout=10).topics.get(topic)  # a new topic takes a moment to show everywhere
        return (
            meta is not None and len(meta.partitions) == 3 and all(len(p.isrs) == 3 for p in meta.partitions.values())
        )

    wait_until(
        fully_replicated,
        60,
        "every partition to have three in-sync replicas",
    )
    subprocess.run([str(SCRIPT), "stop-node", "2"], env=env, check=True)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "message.timeout.ms": 60000}
    )
    delivered: list[object] = []
    for n in range(30):
        producer.produce(topic, key=str(n).encode(), value=b"x", on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(90) == 0
    assert delivered == [None] * 30
