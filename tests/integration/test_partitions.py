"""agents/runtime/partitions.py against librdkafka on the real broker: our murmur2 puts every key where
the fleet's producers (partitioner murmur2_random, Java-compatible) put it, and each partition key lands on
its partition."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.runtime.partitions import partition_keys, partition_of
from tests.support.fleet import wait_until


def _topic(bootstrap: str, partitions: int) -> str:
    name = f"partitions-{partitions}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)
    wait_until(lambda: name in admin.list_topics(timeout=10).topics, 30, f"{name} to be visible")
    return name


def _where_librdkafka_puts(bootstrap: str, topic: str, keys: list[bytes]) -> list[int]:
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 5})
    found: dict[int, int] = {}
    for n, key in enumerate(keys):
        producer.produce(
            topic, key=key, value=b"", on_delivery=lambda err, msg, n=n: found.__setitem__(n, msg.partition())
        )
    assert producer.flush(30) == 0
    return [found[n] for n in range(len(keys))]


@pytest.mark.parametrize("partitions", [1, 3, 8, 12])
def test_partition_keys_land_on_their_partition(bootstrap: str, partitions: int) -> None:
    topic = _topic(bootstrap, partitions)
    keys = list(partition_keys(partitions))
    assert _where_librdkafka_puts(bootstrap, topic, keys) == list(range(partitions))


@settings(max_examples=3, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=64) | st.text(min_size=1).map(str.encode), min_size=50, max_size=200))
def test_murmur2_agrees_with_librdkafka_for_any_key(bootstrap: str, keys: list[bytes]) -> None:
    topic = _topic(bootstrap, 8)
    assert _where_librdkafka_puts(bootstrap, topic, keys) == [partition_of(k, 8) for k in keys]
