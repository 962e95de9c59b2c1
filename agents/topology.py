"""The one reader of topics.yaml: topic ids used in code map to names and settings here."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

Role = Literal["input", "output", "internal", "view", "changelog"]
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


class ChangelogRule(BaseModel):
    """How Quix Streams names the changelog of a stateful topic's store (topics.yaml `changelogs`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    of_role: Role = "internal"
    cleanup_policy: CleanupPolicy = "compact"
    retention_ms: int = -1


class Topology(BaseModel):
    model_config = ConfigDict(frozen=True)

    stateful_partitions: int
    topics: dict[str, TopicSpec]
    changelog_rule: ChangelogRule | None = None

    def changelogs(self, app_id: str) -> Topology:
        """The changelog topics of the fleet's state for consumer group `app_id`, as a topology of their own."""
        rule = self.changelog_rule
        if rule is None:
            return Topology(stateful_partitions=self.stateful_partitions, topics={})
        specs = {
            f"{t.id}_changelog": TopicSpec(
                id=f"{t.id}_changelog",
                name=rule.name.format(app_id=app_id, topic=t.name),
                role="changelog",
                partitions=t.partitions,
                replication_factor=t.replication_factor,
                cleanup_policy=rule.cleanup_policy,
                retention_ms=rule.retention_ms,
                key=t.key,
                schema="-",
            )
            for t in self.by_role(rule.of_role)
        }
        return Topology(stateful_partitions=self.stateful_partitions, topics=specs)

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
    rule = ChangelogRule(**raw["changelogs"]) if raw.get("changelogs") else None
    topology = Topology(stateful_partitions=raw["stateful_partitions"], topics=topics, changelog_rule=rule)
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
