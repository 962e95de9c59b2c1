from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agents.admin import check_topology
from agents.topology import TopologyError, load_topology

ROOT = Path(__file__).resolve().parents[2]


def test_topics_yaml_agrees_with_the_schemas() -> None:
    assert check_topology(load_topology(ROOT / "topics.yaml"), ROOT / "schemas") == []


def test_every_stateful_topic_has_the_same_partition_count() -> None:
    topology = load_topology(ROOT / "topics.yaml")
    stateful = topology.by_role("internal") + topology.by_role("view")
    assert {t.partitions for t in stateful} == {topology.stateful_partitions}


def test_a_stateful_topic_with_another_partition_count_is_refused(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "topics.yaml").read_text())
    raw["topics"]["sku_commands"]["partitions"] = 3
    (tmp_path / "topics.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(TopologyError, match=r"inventory\.internal\.sku-commands\.v1"):
        load_topology(tmp_path / "topics.yaml")


def test_check_reports_a_missing_schema_file(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "topics.yaml").read_text())
    raw["topics"]["orders"]["schema"] = "nope.avsc"
    (tmp_path / "topics.yaml").write_text(yaml.safe_dump(raw))
    problems = check_topology(load_topology(tmp_path / "topics.yaml"), ROOT / "schemas")
    assert problems == ["orders: schema file nope.avsc does not exist"]


def test_replication_factor_can_be_overridden_for_a_three_node_cluster() -> None:
    topology = load_topology(ROOT / "topics.yaml", replication_factor=3)
    assert {t.replication_factor for t in topology.topics.values()} == {3}
