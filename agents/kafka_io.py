"""confluent-kafka clients used outside the Quix application (CLI, demo feed, sync, tests, benchmarks).

Producers use murmur2 so that a key lands on the same partition as when the fleet (Quix) or a Java
client produces it; librdkafka's default (consistent_random / CRC32) would not.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer


def make_producer(bootstrap: str, **overrides: Any) -> Producer:
    config = {
        "bootstrap.servers": bootstrap,
        "partitioner": "murmur2_random",
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        **overrides,
    }
    return Producer(config)


def make_consumer(bootstrap: str, group_id: str, **overrides: Any) -> Consumer:
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        **overrides,
    }
    return Consumer(config)
