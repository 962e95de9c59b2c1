"""A fix for input records silently skipped by faust-streaming 0.15.3 on aiokafka 0.14.

While its flow is stopped (a rebalance, table recovery), faust's `Consumer.getmany` throws away whatever the
fetcher returned and calls `perform_seek()`, which relies on aiokafka's `seek_to_committed()` to move the
fetcher back to the committed offsets. aiokafka only seeks the partitions whose committed offset is above
zero. A partition the group has not committed yet (one that had no record until now, or whose previous owner
died before its first commit) keeps the position it had advanced to, so the records thrown away are never
processed: the fault suite lost every FulfillmentStarted of a shipments partition that way, when a worker
took over partitions of a killed one.

Here a stream partition without a committed offset is moved back to where the reset policy says a consumer
without a committed offset starts (the beginning: `consumer_auto_offset_reset="earliest"`), exactly as a
partition with one is moved back to it. Records seen again are handled again; every handler is idempotent.
Changelog partitions are left alone: faust positions them itself for recovery and standbys.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger("agents")


async def seek_uncommitted_to_beginning(
    consumer: Any, committed: Mapping[Any, int | None], changelog_topics: Collection[str]
) -> list[Any]:
    """After `consumer.seek_to_committed()` returned `committed`: seek every stream partition without a
    committed offset (None, or 0, which aiokafka does not seek either) to its beginning. Returns them."""
    fresh = sorted(
        (tp for tp, offset in committed.items() if not offset and tp.topic not in changelog_topics),
        key=lambda tp: (tp.topic, tp.partition),
    )
    if fresh:
        log.info("seeking %d partition(s) without a committed offset to their beginning", len(fresh))
        await consumer.seek_to_beginning(*fresh)
    return fresh


async def _seek_to_committed(consumer: Any, changelog_topics: Collection[str]) -> Mapping[Any, int | None]:
    committed: Mapping[Any, int | None] = await consumer.seek_to_committed()
    await seek_uncommitted_to_beginning(consumer, committed, changelog_topics)
    return committed


async def seek_to_committed(self: Any) -> Mapping[Any, int | None]:
    """AIOKafkaConsumerThread.seek_to_committed, also for partitions without a committed offset."""
    changelog_topics = set(self.app.tables.changelog_topics)
    result: Mapping[Any, int | None] = await self.call_thread(
        _seek_to_committed, self._ensure_consumer(), changelog_topics
    )
    return result


def install() -> None:
    if getattr(faust_aiokafka.AIOKafkaConsumerThread.seek_to_committed, "__module__", "") == __name__:
        return
    setattr(faust_aiokafka.AIOKafkaConsumerThread, "seek_to_committed", seek_to_committed)  # noqa: B010
