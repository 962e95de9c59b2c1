"""agents/consumer_fix.py: while faust's flow is stopped it throws fetched records away and seeks back to the
committed offsets; a stream partition without a committed offset must be moved back too (to its beginning),
or the records thrown away are never processed (seen in tests/faults: a killed worker's shipments partition
lost its first eight FulfillmentStarted)."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, NamedTuple

import faust
from faust.transport import consumer as faust_consumer
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
        self.beginnings: dict[TP, int] = {}

    async def seek_to_committed(self) -> dict[TP, int | None]:
        for tp, offset in self.committed.items():
            if offset and offset > 0:
                self.positions[tp] = offset
        return dict(self.committed)

    async def beginning_offsets(self, partitions: list[TP]) -> dict[TP, int]:
        return {tp: self.beginnings.get(tp, 0) for tp in partitions}

    def seek(self, tp: TP, offset: int) -> None:
        self.positions[tp] = offset


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


# ---- the flow is stopped while faust seeks ------------------------------------------------------------------


def _faust_consumer() -> Any:
    """A real faust consumer (aiokafka driver), not started: nothing here talks to a broker."""
    app = faust.App("consumer-fix-test", broker="kafka://127.0.0.1:1")
    return app.consumer


def test_no_record_can_reach_an_agent_while_faust_seeks_back_to_the_committed_offsets() -> None:
    """At the end of recovery faust awaits perform_seek() and then empties the agents' queues. A record
    delivered during the seek would be emptied out after its fetch position was passed, and faust's gap filling
    would commit past it (the fault suite lost OrderPlaced and OpportunityUpserted that way). faust's fetch loop
    delivers nothing while `flow_active` is false and `suspend_flow` is set; so the seek runs with both."""
    consumer_fix.install()
    consumer = _faust_consumer()
    consumer.resume_flow()
    orders, shipments = TP("orders", 0), TP("shipments", 1)
    during_seek: list[tuple[bool, bool]] = []

    async def seek_to_committed() -> dict[TP, int | None]:
        during_seek.append((consumer.flow_active, consumer.suspend_flow.is_set()))
        await asyncio.sleep(0)  # the fetch loop gets the event loop here
        return {orders: 41, shipments: None}

    consumer.seek_to_committed = seek_to_committed
    asyncio.run(consumer.perform_seek())
    assert during_seek == [(False, True)]
    # Left stopped: faust's recovery resumes it after emptying the queues (see the next test).
    assert not consumer.flow_active
    # What faust does after the seek still happens: the next record expected is the committed one.
    assert consumer._read_offset[orders] == 41
    assert consumer._read_offset[shipments] is None


class FakeTable:
    """A faust table as far as its last applied changelog offsets go."""

    def __init__(self, applied: dict[TP, int | None]) -> None:
        self.applied = applied

    def persisted_offset(self, tp: TP) -> int | None:
        return self.applied.get(tp)


def test_standby_partitions_go_back_to_what_their_tables_last_applied() -> None:
    """Stopping the flow for the seek throws away standby changelog records fetched meanwhile, and the caller
    then empties the changelog queue: without a rewind a standby that later becomes active misses them (the
    fault suite saw a ledger lose reservations that way). Each assigned standby partition goes back to its
    table's last applied offset, or to the beginning when it has applied nothing."""
    consumer_fix.install()
    consumer = _faust_consumer()
    recovery = consumer.app.tables.recovery
    ledger_3, ledger_5, saga_2, gone = (
        TP("ledger-changelog", 3),
        TP("ledger-changelog", 5),
        TP("saga-changelog", 2),
        TP("ledger-changelog", 7),
    )
    ledgers = FakeTable({ledger_3: 455, ledger_5: None, gone: 12})
    sagas = FakeTable({saga_2: 0})
    recovery.standby_tps.update({ledger_3, ledger_5, saga_2, gone})
    recovery.tp_to_table.update({ledger_3: ledgers, ledger_5: ledgers, saga_2: sagas, gone: ledgers})
    sought: list[dict[TP, int]] = []

    async def seek_to_committed() -> dict[TP, int | None]:
        return {TP("orders", 0): 41}

    async def seek_wait(offsets: dict[TP, int]) -> None:
        sought.append(dict(offsets))

    consumer.seek_to_committed = seek_to_committed
    consumer.seek_wait = seek_wait
    consumer.assignment = lambda: {TP("orders", 0), ledger_3, ledger_5, saga_2}  # `gone` was revoked
    asyncio.run(consumer.perform_seek())
    assert sought == [{ledger_3: 455, ledger_5: 0, saga_2: 0}]


def test_faust_recovery_resumes_the_flow_after_emptying_the_queues() -> None:
    """The fix leaves the flow stopped after the seek; both recovery paths of faust that seek must resume it,
    after `flow_control.resume()` has emptied the queues. A faust upgrade that changes this fails here."""
    from faust.tables.recovery import Recovery

    for method in (Recovery.on_recovery_completed, Recovery._resume_streams):
        source = inspect.getsource(method)
        seek = source.index("consumer.perform_seek()")
        emptied = source.index("flow_control.resume()", seek)
        resumed = source.index("consumer.resume_flow()", seek)
        assert seek < emptied < resumed, method.__qualname__


def test_the_worker_installs_the_seek_fix() -> None:
    consumer_fix.install()
    consumer_fix.install()  # idempotent
    assert faust_consumer.Consumer.perform_seek is consumer_fix.perform_seek


def test_the_beginning_is_an_explicit_offset_so_the_position_is_never_unset() -> None:
    """aiokafka's seek_to_beginning() leaves the position unset until the fetcher resets it, and faust's
    livelock detector asserts on an unset position (a worker crashed so in CI). The first offset still
    held (here 3, after retention) is sought instead."""
    tp = TP("shipments", 2)
    consumer = FakeConsumer(committed={tp: None}, positions={tp: 9})
    consumer.beginnings[tp] = 3
    asyncio.run(FakeThread(consumer, set()).seek_to_committed())
    assert consumer.positions[tp] == 3
