"""`agents topics apply` against the real broker: creates what is missing, leaves matching topics alone,
refuses a mismatch."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from agents.admin import TopicMismatchError, apply_topics
from agents.topology import load_topology
from tests.support.fleet import Fleet, isolated_topics_file, wait_until


def test_apply_creates_missing_topics_then_leaves_them_alone(bootstrap: str, tmp_path: Path) -> None:
    topology = load_topology(isolated_topics_file(tmp_path, uuid.uuid4().hex[:8]))
    first = apply_topics(topology, bootstrap)
    assert sorted(first.created) == sorted(t.name for t in topology.topics.values())
    second = apply_topics(topology, bootstrap)
    assert second.created == []
    assert len(second.unchanged) == len(topology.topics)
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    ledger = topology["sku_commands"]
    assert len(metadata.topics[ledger.name].partitions) == ledger.partitions


def test_apply_refuses_a_topic_whose_partition_count_differs(bootstrap: str, tmp_path: Path) -> None:
    topology = load_topology(isolated_topics_file(tmp_path, uuid.uuid4().hex[:8]))
    wrong = topology["sku_commands"]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(wrong.name, wrong.partitions + 1, 1)])[wrong.name].result(timeout=30)
    wait_until(lambda: wrong.name in admin.list_topics(timeout=10).topics, 30, f"{wrong.name} to be visible")
    with pytest.raises(TopicMismatchError, match=rf"{wrong.name}: has {wrong.partitions + 1} partitions"):
        apply_topics(topology, bootstrap)
    assert wrong.name in admin.list_topics(timeout=10).topics


def test_the_worker_creates_the_changelogs_quix_uses_under_the_names_topics_yaml_gives(
    fleet_factory: Callable[[], Fleet],
) -> None:
    fleet = fleet_factory()
    fleet.add_worker().wait_ready()
    topology = load_topology(fleet.topics_file)
    expected = {spec.name for spec in topology.changelogs(fleet.app_id).topics.values()}
    assert len(expected) == len(topology.by_role("internal"))
    found = AdminClient({"bootstrap.servers": fleet.bootstrap}).list_topics(timeout=10).topics
    assert {name for name in found if name.startswith(f"changelog__{fleet.app_id}--")} == expected
    for name in expected:
        assert len(found[name].partitions) == topology.stateful_partitions
