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

A second defect of the same family loses records in the middle of a partition. At the end of table recovery
faust resumes the stream partitions, awaits `perform_seek()` and then calls `flow_control.resume()`, which
empties every agent's queue. The flow is already running during that await (standby recovery resumed it), so
the fetcher delivers records into the queues, some after the seek has moved the fetch position back; those
are emptied out by the resume and never fetched again, and the next record delivered leaves a "gap" that
faust fills as if acknowledged, so the commit moves past them. The fault suite lost one to seven OrderPlaced
and OpportunityUpserted this way when a worker took over partitions (CI run of 2026-11-25; reproduced in 4 of
28 runs of the rebalance test). Here `perform_seek` stops the flow before it seeks and leaves it stopped: both
of faust's recovery paths resume the flow themselves right after emptying the queues, so nothing is delivered
between the seek and the emptying, and everything after the committed offset is fetched again. The same
stop throws away standby changelog records fetched meanwhile, so the standby partitions are sought back to
what their tables last applied.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

from faust.transport import consumer as faust_consumer
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
        # An explicit offset, not aiokafka's seek_to_beginning(): that leaves the position unset until the
        # fetcher resets it, and faust's livelock detector asserts on an unset position (a worker crashed
        # so when this ran again right after it became ready).
        beginnings = await consumer.beginning_offsets(fresh)
        for tp in fresh:
            consumer.seek(tp, beginnings[tp])
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


_faust_perform_seek = faust_consumer.Consumer.perform_seek


async def perform_seek(self: Any) -> None:
    """faust's Consumer.perform_seek with the flow stopped first, so that no record is delivered to an agent's
    queue between the seek and the queue being emptied by the caller's `flow_control.resume()`. The flow is
    left stopped: faust's callers resume it (recovery) or it was stopped already (`getmany`).

    Standby changelog partitions are sought back too: records of theirs that the stopped flow threw away, or
    that wait in the changelog queue the caller empties, would otherwise never be applied, while the standby's
    persisted offset moves past them with the next batch (a standby that then became active lost reservations
    in the fault suite). They go back to their last applied offset, as faust's own standby recovery does;
    applying a changelog record again writes the same value."""
    self.stop_flow()
    await _faust_perform_seek(self)
    await rewind_standbys(self)


async def rewind_standbys(consumer: Any) -> dict[Any, int]:
    """Seek every assigned standby changelog partition back to its table's last applied offset (the
    beginning when it has applied none). Returns the offsets sought."""
    recovery = consumer.app.tables.recovery
    if not recovery.standby_tps:
        return {}
    assigned = consumer.assignment()
    offsets: dict[Any, int] = {}
    for tp in recovery.standby_tps:
        table = recovery.tp_to_table.get(tp)
        if tp not in assigned or table is None:
            continue
        applied = table.persisted_offset(tp)
        offsets[tp] = applied if applied is not None and applied > 0 else 0
    if not offsets:
        return offsets
    try:
        await consumer.seek_wait(offsets)
    except Exception as exc:  # a rebalance took them meanwhile: its recovery seeks its standbys itself
        log.warning("could not rewind %d standby partition(s): %r", len(offsets), exc)
        return {}
    return offsets


def install() -> None:
    if getattr(faust_aiokafka.AIOKafkaConsumerThread.seek_to_committed, "__module__", "") != __name__:
        setattr(faust_aiokafka.AIOKafkaConsumerThread, "seek_to_committed", seek_to_committed)  # noqa: B010
    if getattr(faust_consumer.Consumer.perform_seek, "__module__", "") != __name__:
        setattr(faust_consumer.Consumer, "perform_seek", perform_seek)  # noqa: B010
