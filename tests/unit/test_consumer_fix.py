"""agents/consumer_fix.py: while faust's flow is stopped it throws fetched records away and seeks back to the
committed offsets; a stream partition without a committed offset must be moved back too (to its beginning),
or the records thrown away are never processed (seen in tests/faults: a killed worker's shipments partition
lost its first eight FulfillmentStarted)."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

from faust.transport.drivers import aiokafka as faust_aiokafka

from agents import consumer_fix


class TP(NamedTuple):
    topic: str
    partition: int


class FakeConsumer:
    """aiokafka's AIOKafkaConsumer as far as seeking goes: seek_to_committed moves only the partitions whose
    committed offset is above zero, and returns every assigned partition's committed offset."""

    def __init__(self, committed: dict[TP, int | None], positions: dict[TP, int]) -> None:
        self.committed = committed
        self.positions = dict(positions)

    async def seek_to_committed(self) -> dict[TP, int | None]:
        for tp, offset in self.committed.items():
            if offset and offset > 0:
                self.positions[tp] = offset
        return dict(self.committed)

    async def seek_to_beginning(self, *partitions: TP) -> bool:
        for tp in partitions:
            self.positions[tp] = 0
        return True


class FakeThread:
    """faust's AIOKafkaConsumerThread, with the patched seek_to_committed."""

    def __init__(self, consumer: FakeConsumer, changelogs: set[str]) -> None:
        self._consumer = consumer
        self.app: Any = type("App", (), {"tables": type("Tables", (), {"changelog_topics": changelogs})()})()

    def _ensure_consumer(self) -> FakeConsumer:
        return self._consumer

    async def call_thread(self, fun: Any, *args: Any) -> Any:
        return await fun(*args)

    seek_to_committed = consumer_fix.seek_to_committed


def test_a_stream_partition_without_a_committed_offset_goes_back_to_its_beginning() -> None:
    orders, shipments, changelog = TP("orders", 0), TP("shipments", 0), TP("saga-changelog", 0)
    # The fetcher had read ahead while faust's flow was stopped; those records were thrown away.
    consumer = FakeConsumer(
        committed={orders: 12, shipments: None, changelog: None},
        positions={orders: 20, shipments: 8, changelog: 40},
    )
    committed = asyncio.run(FakeThread(consumer, {"saga-changelog"}).seek_to_committed())
    assert committed == {orders: 12, shipments: None, changelog: None}  # what faust records as committed
    assert consumer.positions == {
        orders: 12,  # back to the committed offset (aiokafka did that)
        shipments: 0,  # no committed offset: back to the beginning (aiokafka alone left it at 8)
        changelog: 40,  # changelogs are positioned by faust's recovery, not here
    }


def test_committed_zero_is_treated_like_no_commit() -> None:
    tp = TP("orders", 3)
    consumer = FakeConsumer(committed={tp: 0}, positions={tp: 5})
    asyncio.run(FakeThread(consumer, set()).seek_to_committed())
    assert consumer.positions[tp] == 0


def test_the_worker_installs_the_fix() -> None:
    consumer_fix.install()
    consumer_fix.install()  # idempotent
    assert faust_aiokafka.AIOKafkaConsumerThread.seek_to_committed is consumer_fix.seek_to_committed
