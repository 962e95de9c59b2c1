"""A three-broker KRaft cluster (replication 3, min.insync.replicas 2): the broker leading the most
partitions of the fleet's topics is killed under load. Nothing is lost, nothing is counted twice."""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.faults.conftest import settle_and_audit, start_load
from tests.support.broker import SCRIPT, kafka_cluster
from tests.support.fleet import Fleet

PORT = int(os.environ.get("INVENTORY_FAULTS_CLUSTER_PORT", "19892"))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    with kafka_cluster(PORT, tmp_path / "kafka") as found:
        yield found


def test_partition_leader_broker_killed_under_load(
    cluster: tuple[str, dict[str, str]], fleet_factory: Callable[..., Fleet]
) -> None:
    bootstrap, env = cluster
    fleet = fleet_factory(bootstrap)
    for _ in range(2):
        fleet.add_worker(INVENTORY_REPLICATION_FACTOR="3")
    for worker in fleet.workers:
        worker.wait_ready(timeout=180)
    load = start_load(fleet, rate=15).start()
    time.sleep(5)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(timeout=30)
    ours = [t for name, t in metadata.topics.items() if name.endswith(fleet.suffix)]
    assert ours and all(len(p.replicas) == 3 for t in ours for p in t.partitions.values())
    leaders = Counter(p.leader for t in ours for p in t.partitions.values())
    victim, led = leaders.most_common(1)[0]
    subprocess.run([str(SCRIPT), "stop-node", str(victim)], env=env, check=True)
    time.sleep(15)  # the load runs on against two brokers
    load.stop()
    verdict = settle_and_audit(fleet, load, timeout=300)
    assert len(verdict.outcomes) >= 100
    assert led > 0
