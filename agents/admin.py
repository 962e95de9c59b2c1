"""Topic administration from topics.yaml (confluent-kafka AdminClient) and its checks against schemas/."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from agents.codec import AVRO_NAMESPACE, LocalSchemaRegistry
from agents.core.events import INPUT_EVENTS_BY_TOPIC
from agents.topology import TopicSpec, Topology


class TopicMismatchError(RuntimeError):
    pass


_MISMATCH = "topics on the broker disagree with topics.yaml (fix the broker or the file; nothing was changed):\n  "


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def admin_client(bootstrap: str) -> AdminClient:
    # Connection failures come back as the KafkaException the CLI turns into one line: no log lines too.
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000, "log_level": 2})


def apply_topics(topology: Topology, bootstrap: str, timeout: float = 30.0) -> ApplyReport:
    """Create the topics that are missing; leave matching ones alone; refuse any mismatch."""
    admin = admin_client(bootstrap)
    existing = admin.list_topics(timeout=timeout).topics
    report = ApplyReport()
    missing: list[TopicSpec] = []
    problems: list[str] = []
    present = [spec for spec in topology.topics.values() if spec.name in existing]
    configs = _describe_configs(admin, [spec.name for spec in present], timeout)
    for spec in topology.topics.values():
        if spec.name not in existing:
            missing.append(spec)
            continue
        found = _mismatches(spec, existing[spec.name], configs.get(spec.name, {}))
        problems.extend(found)
        if not found:
            report.unchanged.append(spec.name)
    if problems:
        raise TopicMismatchError(_MISMATCH + "\n  ".join(problems))
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication_factor, config=s.config()) for s in missing],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        raced: list[TopicSpec] = []
        for spec in missing:
            try:
                futures[spec.name].result()
                report.created.append(spec.name)
                raced.append(spec)  # then wait until it is visible and describable, as below
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
                raced.append(spec)  # created meanwhile by someone else: it must still match
        if raced:
            existing = _wait_visible(admin, [spec.name for spec in raced], timeout)
            configs = _describe_configs(admin, [spec.name for spec in raced], timeout)
            problems = [p for spec in raced for p in _mismatches(spec, existing[spec.name], configs.get(spec.name, {}))]
            if problems:
                raise TopicMismatchError(_MISMATCH + "\n  ".join(problems))
            report.unchanged.extend(spec.name for spec in raced if spec.name not in report.created)
    return report


def _wait_visible(admin: AdminClient, names: list[str], timeout: float) -> dict[str, Any]:
    """Topic metadata once every named topic shows up (a topic created a moment ago may not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        if all(name in topics and topics[name].partitions for name in names) or time.monotonic() > deadline:
            return dict(topics)
        time.sleep(0.2)


def _mismatches(spec: TopicSpec, meta: Any, config: dict[str, str]) -> list[str]:
    found = []
    partitions = len(meta.partitions)
    replicas = len(next(iter(meta.partitions.values())).replicas) if meta.partitions else 0
    if partitions != spec.partitions:
        found.append(f"{spec.name}: has {partitions} partitions, topics.yaml says {spec.partitions}")
    if replicas != spec.replication_factor:
        found.append(f"{spec.name}: replication factor {replicas}, topics.yaml says {spec.replication_factor}")
    policy = config.get("cleanup.policy")
    if policy is not None and set(policy.split(",")) != set(spec.cleanup_policy.split(",")):
        found.append(f"{spec.name}: cleanup.policy {policy}, topics.yaml says {spec.cleanup_policy}")
    return found


def _describe_configs(
    admin: AdminClient, names: list[str], timeout: float, attempts: int = 20
) -> dict[str, dict[str, str]]:
    """Topic configs; a topic created a moment ago may be unknown to the broker answering, so retry."""
    if not names:
        return {}
    out: dict[str, dict[str, str]] = {}
    pending = list(names)
    for attempt in range(attempts):
        futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, n) for n in pending])
        retry = []
        for resource, future in futures.items():
            try:
                entries = future.result(timeout=timeout)
            except KafkaException as exc:
                if exc.args[0].name() != "UNKNOWN_TOPIC_OR_PART" or attempt == attempts - 1:
                    raise
                retry.append(resource.name)
                continue
            out[resource.name] = {k: v.value for k, v in entries.items() if v.value is not None}
        if not retry:
            break
        pending = retry
        time.sleep(0.25)
    return out


def check_topology(topology: Topology, schemas_dir: Path) -> list[str]:
    """Every problem found between topics.yaml and schemas/; an empty list means they agree."""
    problems: list[str] = []
    try:
        registry = LocalSchemaRegistry(schemas_dir)
    except FileNotFoundError as exc:
        return [f"schemas/local-registry.yaml: {exc}"]
    registered = set(registry.files())
    for spec in topology.topics.values():
        path = schemas_dir / spec.schema_file
        if not path.exists():
            problems.append(f"{spec.id}: schema file {spec.schema_file} does not exist")
            continue
        if spec.schema_file not in registered:
            problems.append(f"{spec.id}: schema file {spec.schema_file} has no id in local-registry.yaml")
        try:
            registry.schema(spec.schema_file)
        except Exception as exc:
            problems.append(f"{spec.id}: {spec.schema_file} is not valid Avro: {exc}")
            continue
        for model in INPUT_EVENTS_BY_TOPIC.get(spec.id, ()):
            problems.extend(_check_record(spec, path, model.__name__, set(model.model_fields)))
    return problems


def _check_record(spec: TopicSpec, path: Path, record_name: str, fields: set[str]) -> list[str]:
    raw = json.loads(path.read_text())
    branches = raw if isinstance(raw, list) else [raw]
    for branch in branches:
        if isinstance(branch, dict) and branch.get("name") in (
            record_name,
            f"{AVRO_NAMESPACE}.{record_name}",
        ):
            names = {f["name"] for f in branch.get("fields", [])}
            missing = sorted(fields - names)
            return [f"{spec.id}: record {record_name} lacks fields {', '.join(missing)}"] if missing else []
    return [f"{spec.id}: {spec.schema_file} has no record {record_name}"]
