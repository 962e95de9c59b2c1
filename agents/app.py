"""The faust app of the fleet: settings, topics (from topics.yaml), codecs and the dead-letter sender.

Agents live in agents/streams/; importing agents.streams registers them on `app`.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from agents import consumer_fix
from agents.codec import Codec, LocalSchemaRegistry, encode_json
from agents.dlq import dead_letter
from agents.metrics import DLQ_MESSAGES
from agents.settings import Settings, get_settings
from agents.topology import TopicSpec, Topology, load_topology

log = logging.getLogger("agents")
consumer_fix.install()  # records thrown away during a rebalance must be read again (agents/consumer_fix.py)

settings: Settings = get_settings()
topology: Topology = load_topology(settings.topics_file, settings.replication_factor)
codec = Codec(LocalSchemaRegistry(settings.schemas_dir))


def _brokers(bootstrap: str) -> list[str]:
    return [f"kafka://{hostport.strip()}" for hostport in bootstrap.split(",") if hostport.strip()]


app = faust.App(
    settings.app_id,
    broker=_brokers(settings.kafka_bootstrap),
    store="rocksdb://",
    datadir=str(settings.data_dir),
    processing_guarantee="at_least_once",
    topic_partitions=topology.stateful_partitions,
    topic_replication_factor=topology["sku_commands"].replication_factor,
    topic_disable_leader=True,
    key_serializer="raw",
    value_serializer="raw",
    web_enabled=True,
    web_bind=settings.web_host,
    web_host=settings.web_advertised_host or settings.web_host,
    web_port=settings.web_port,
    web_tables_enabled=False,
    broker_commit_interval=settings.commit_interval_s,
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    table_standby_replicas=settings.standby_replicas,
    consumer_group_instance_id=settings.member_id,
    broker_session_timeout=settings.session_timeout_s,
    broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
)


def kafka_topic(spec: TopicSpec) -> Any:
    # Our topics are created by `agents topics apply` from topics.yaml, never declared by faust.
    return app.topic(spec.name, partitions=spec.partitions, key_type=bytes, value_type=bytes, internal=False)


topics: dict[str, Any] = {topic_id: kafka_topic(spec) for topic_id, spec in topology.topics.items()}


def rocksdb_options() -> dict[str, Any]:
    # A fresh dict per table: faust pops keys from it. The defaults would give each partition's
    # database a 2 GiB block cache.
    return {
        "driver": "rocksdict",
        "block_cache_size": settings.rocksdb_block_cache_mb * 1024 * 1024,
        "block_cache_compressed_size": 0,
        "write_buffer_size": settings.rocksdb_write_buffer_mb * 1024 * 1024,
        "max_write_buffer_number": settings.rocksdb_max_write_buffers,
    }


def table(name: str, changelog_id: str) -> Any:
    spec = topology[changelog_id]
    changelog = app.topic(
        spec.name,
        partitions=spec.partitions,
        key_type=bytes,
        value_type=bytes,
        internal=True,
        compacting=True,
    )
    return app.Table(
        name,
        key_type=bytes,
        value_type=bytes,
        partitions=spec.partitions,
        changelog_topic=changelog,
        options=rocksdb_options(),
    )


async def send_dead_letter(
    *,
    topic_id: str,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    error: str,
    reason: str,
    key: bytes | None,
    value: bytes | None,
    headers: Any = None,
    tenant_id: str | None = None,
) -> None:
    record = dead_letter(
        source_topic=source_topic,
        source_partition=source_partition,
        source_offset=source_offset,
        error=error,
        reason=reason,
        key=key,
        value=value,
        headers=headers,
        tenant_id=tenant_id,
    )
    log.warning("dead letter from %s[%d]@%d: %s: %s", source_topic, source_partition, source_offset, error, reason)
    DLQ_MESSAGES.labels(topic_id, error).inc()
    await topics["dlq"].send(key=key, value=encode_json(record))
