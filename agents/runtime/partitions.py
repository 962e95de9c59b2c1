"""Keys that land on a chosen partition.

The fleet's producers partition by murmur2 of the key, as Java clients and Kafka Streams do
(`partitioner=murmur2_random` in librdkafka). A record that must reach one partition of a stateful topic,
whatever entity it is about (an expiry tick, a catalog copy, a backorder scan), is keyed with that
partition's *partition key*: a short key found once per topic width whose murmur2 lands on the partition.
Its state (Quix state is scoped to the message key) is then the partition's own index.

`murmur2` is Kafka's (`org.apache.kafka.common.utils.Utils.murmur2`); a test checks it against
librdkafka's partitioner on the real broker.
"""

from __future__ import annotations

from functools import lru_cache

PARTITION_KEY_PREFIX = b"\x00p"  # never an entity key: those start with a tenant id, which is printable


def murmur2(data: bytes) -> int:
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = data[i4] | (data[i4 + 1] << 8) | (data[i4 + 2] << 16) | (data[i4 + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    extra = length % 4
    if extra >= 3:
        h ^= data[(length & ~3) + 2] << 16
    if extra >= 2:
        h ^= data[(length & ~3) + 1] << 8
    if extra >= 1:
        h ^= data[length & ~3]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_of(key: bytes, partitions: int) -> int:
    """The partition murmur2_random (and the Java client) gives a non-empty key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@lru_cache(maxsize=64)
def partition_keys(partitions: int) -> tuple[bytes, ...]:
    """One key per partition of a topic `partitions` wide: `partition_keys(n)[p]` lands on p."""
    found: dict[int, bytes] = {}
    salt = 0
    while len(found) < partitions:
        candidate = PARTITION_KEY_PREFIX + str(salt).encode()
        found.setdefault(partition_of(candidate, partitions), candidate)
        salt += 1
    return tuple(found[p] for p in range(partitions))


def is_partition_key(key: bytes | None) -> bool:
    return key is not None and key.startswith(PARTITION_KEY_PREFIX)
