"""The one reader of topics.yaml: topic ids used in code map to names and settings here."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

Role = Literal["input", "output", "internal", "view"]
CleanupPolicy = Literal["delete", "compact", "compact,delete"]


class TopicSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    role: Role
    partitions: int = Field(gt=0)
    replication_factor: int = Field(gt=0)
    cleanup_policy: CleanupPolicy
    retention_ms: int
    key: str
    schema_file: str = Field(alias="schema")

    def config(self) -> dict[str, str]:
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}


class Topology(BaseModel):
    model_config = ConfigDict(frozen=True)

    stateful_partitions: int
    topics: dict[str, TopicSpec]

    def __getitem__(self, topic_id: str) -> TopicSpec:
        return self.topics[topic_id]

    def by_role(self, role: Role) -> list[TopicSpec]:
        return [t for t in self.topics.values() if t.role == role]

    def by_name(self, name: str) -> TopicSpec:
        for spec in self.topics.values():
            if spec.name == name:
                return spec
        raise KeyError(name)


class TopologyError(ValueError):
    pass


def load_topology(path: Path, replication_factor: int | None = None) -> Topology:
    raw = yaml.safe_load(path.read_text())
    topics = {}
    for topic_id, body in raw["topics"].items():
        if replication_factor is not None:
            body = {**body, "replication_factor": replication_factor}
        topics[topic_id] = TopicSpec(id=topic_id, **body)
    topology = Topology(stateful_partitions=raw["stateful_partitions"], topics=topics)
    stateful = [t for t in topology.topics.values() if t.role in ("internal", "view")]
    bad = [t.name for t in stateful if t.partitions != topology.stateful_partitions]
    if bad:
        raise TopologyError(
            f"stateful topics must all have {topology.stateful_partitions} partitions: {', '.join(bad)}"
        )
    names = [t.name for t in topology.topics.values()]
    if len(names) != len(set(names)):
        raise TopologyError("a topic name appears twice in topics.yaml")
    return topology


@lru_cache(maxsize=4)
def cached_topology(path: Path, replication_factor: int | None = None) -> Topology:
    return load_topology(path, replication_factor)
