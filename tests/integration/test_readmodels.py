"""agents/readmodels.py against the real broker: the four view topics (fresh, uniquely named) read from the
beginning by assignment, caught up to the high watermarks of the start, fresh records seen while running,
`behind()` counting what was not read yet, nothing committed for the group, committed transactions shown
and aborted ones never, and every worker's read models holding everything."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from agents import views
from agents.codec import encode_json
from agents.core.customer import CustomerState, reserved_for
from agents.core.events import LocationAvailability, SkuAvailability
from agents.core.opportunity import OpportunitySaga
from agents.core.saga import OrderSaga
from agents.readmodels import TOPIC_IDS, ReadModels
from agents.settings import Settings
from agents.topology import Topology, load_topology
from tests.support.fleet import wait_until

pytestmark = pytest.mark.broker

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
Record = tuple[str, bytes, bytes]


@pytest.fixture
def views_topology(bootstrap: str) -> Iterator[Topology]:
    """The project's topology with the four view topics renamed to fresh topics, created as topics.yaml says."""
    base = load_topology(Settings(_env_file=None).topics_file)
    suffix = uuid.uuid4().hex[:10]
    renamed = {
        tid: spec.model_copy(update={"name": f"{spec.name}.rm-{suffix}"}) if tid in TOPIC_IDS else spec
        for tid, spec in base.topics.items()
    }
    topology = Topology(stateful_partitions=base.stateful_partitions, topics=renamed)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    specs = [topology[tid] for tid in TOPIC_IDS]
    futures = admin.create_topics([NewTopic(s.name, s.partitions, 1, config=s.config()) for s in specs])
    for future in futures.values():
        future.result(timeout=30)
    wait_until(
        lambda: all(s.name in admin.list_topics(timeout=10).topics for s in specs), 30, "the view topics to be visible"
    )
    yield topology
    admin.delete_topics([s.name for s in specs])


def config(bootstrap: str) -> Settings:
    return Settings(_env_file=None, kafka_bootstrap=bootstrap, app_id=f"rm-test-{uuid.uuid4().hex[:6]}")


def produce(bootstrap: str, topology: Topology, records: list[Record]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 2})
    for topic_id, key, value in records:
        producer.produce(topology[topic_id].name, key=key, value=value)
    assert producer.flush(30) == 0


def availability(tenant: str, sku: str, on_hand: int, version: int = 1) -> Record:
    record = SkuAvailability(
        event_id=f"av-{sku}-{version}",
        tenant_id=tenant,
        occurred_at=T0,
        causation_id="cause",
        sku=sku,
        description=f"product {sku}",
        unit_price=Decimal("10.00"),
        lead_time_days=2,
        locations=(
            LocationAvailability(
                location="WH1", on_hand=on_hand, reserved=0, soft_allocated=0, backordered=0, available=on_hand
            ),
        ),
        version=version,
        as_of=T0,
    )
    return "availability", f"{tenant}:{sku}".encode(), encode_json(record)


def some_views(tenant: str, count: int) -> list[Record]:
    """`count` SKUs, customers, orders and opportunities of `tenant`, as their processors publish them."""
    records: list[Record] = []
    for n in range(count):
        records.append(availability(tenant, f"S{n}", 10 + n))
        state = CustomerState(
            tenant_id=tenant,
            customer_id=f"C{n}",
            known=True,
            name=f"Customer {n}",
            tier="GOLD",
            credit_limit=Decimal(1000),
            exposures={f"O{n}": Decimal(50)},
            holds={f"O{n}": {f"S{n}": n + 1}},
            version=1,
        )
        records.extend(views.customer_views(None, state))
        records.append(
            views.order_view(OrderSaga(tenant_id=tenant, order_id=f"O{n}", placed=True, customer_id=f"C{n}"))
        )
        records.append(views.opportunity_view(OpportunitySaga(tenant_id=tenant, opportunity_id=f"P{n}", known=True)))
    return records


def assert_holds(rm: ReadModels, tenant: str, count: int) -> None:
    assert sorted(rm.skus(tenant)) == sorted(f"S{n}" for n in range(count))
    assert sorted(o["order_id"] for o in rm.orders(tenant)) == sorted(f"O{n}" for n in range(count))
    assert sorted(o["opportunity_id"] for o in rm.opportunities(tenant)) == sorted(f"P{n}" for n in range(count))
    for n in range(count):
        state = rm.customer(tenant, f"C{n}")
        assert state is not None
        assert (state.tier, state.available_credit(), reserved_for(state, f"S{n}")) == ("GOLD", Decimal(950), n + 1)


def started(rm: ReadModels) -> ReadModels:
    rm.start()
    return rm


def test_reads_every_view_topic_from_the_beginning_and_catches_up(bootstrap: str, views_topology: Topology) -> None:
    records = some_views("ta", 12)
    produce(bootstrap, views_topology, [*records, ("order_status", b"garbage", b"\x00not json")])
    rm = started(ReadModels(config(bootstrap), views_topology))
    try:
        wait_until(rm.caught_up, 60, "the read models to catch up")
        # Caught up means read up to the start's high watermarks: everything produced before is there.
        assert_holds(rm, "ta", 12)
        assert rm.skipped == 1
        assert rm.assigned
        assert rm.behind() == 0
        assert rm.last_message_at is not None and time.time() - rm.last_message_at < 60
        assert rm.last_read("availability") is not None
        assert rm.skus("tb") == {}
        # Nothing was committed for the read models' group: they assign, they never join or commit.
        probe = Consumer({"bootstrap.servers": bootstrap, "group.id": rm.group_id, "enable.auto.commit": False})
        try:
            parts = [
                TopicPartition(views_topology[tid].name, p)
                for tid in TOPIC_IDS
                for p in range(views_topology[tid].partitions)
            ]
            assert all(tp.offset < 0 for tp in probe.committed(parts, timeout=30))
        finally:
            probe.close()
    finally:
        rm.stop()


def test_records_produced_while_running_are_seen(bootstrap: str, views_topology: Topology) -> None:
    rm = started(ReadModels(config(bootstrap), views_topology))
    try:
        wait_until(rm.caught_up, 60, "the read models to catch up on empty topics")
        assert (rm.behind(), rm.skus("ta"), rm.last_message_at) == (0, {}, None)
        produce(bootstrap, views_topology, some_views("ta", 3))
        wait_until(lambda: len(rm.orders("ta")) == 3 and len(rm.skus("ta")) == 3, 30, "the new records")
        wait_until(lambda: rm.customer("ta", "C2") is not None and rm.opportunities("ta"), 30, "customers too")
        assert_holds(rm, "ta", 3)
        produce(bootstrap, views_topology, [availability("ta", "S1", 99, version=2)])

        def updated() -> bool:
            record = rm.availability("ta", "S1")
            return record is not None and record["locations"][0]["on_hand"] == 99

        wait_until(updated, 30, "the SKU's newer availability")
        wait_until(lambda: rm.behind() == 0, 30, "behind() to come back to 0")
    finally:
        rm.stop()


class Held(ReadModels):
    """Read models whose first record waits until released: what was not read yet stays unread."""

    def __init__(self, settings: Settings, topology: Topology) -> None:
        super().__init__(settings, topology)
        self.entered = threading.Event()
        self.release = threading.Event()

    def apply(self, topic_id: str, key: bytes | None, value: bytes | None) -> bool:
        self.entered.set()
        self.release.wait(30)
        return super().apply(topic_id, key, value)


def test_behind_counts_the_messages_not_read_yet(bootstrap: str, views_topology: Topology) -> None:
    produce(bootstrap, views_topology, [availability("ta", f"S{n}", n) for n in range(7)])
    rm = Held(config(bootstrap), views_topology)
    rm.start()
    try:
        assert rm.entered.wait(60), "the read models never got a record"
        assert rm.behind() == 7
        assert rm.behind("availability") == 7
        assert rm.behind("order_status") == 0
        assert not rm.caught_up()
        rm.release.set()
        wait_until(rm.caught_up, 30, "the read models to catch up once released")
        assert (rm.behind(), len(rm.skus("ta"))) == (0, 7)
    finally:
        rm.release.set()
        rm.stop()


def test_committed_transactions_are_read_and_aborted_ones_never(bootstrap: str, views_topology: Topology) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "transactional.id": f"rm-test-{uuid.uuid4().hex}",
        }
    )
    producer.init_transactions(30)
    for committed in (True, False):
        producer.begin_transaction()
        for n in range(4):
            topic_id, key, value = availability("ta", f"{'kept' if committed else 'aborted'}-{n}", n)
            producer.produce(views_topology[topic_id].name, key=key, value=value)
        if committed:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    # The log of every partition written to now ends in transaction markers, which no consumer is given.
    rm = started(ReadModels(config(bootstrap), views_topology))
    try:
        wait_until(rm.caught_up, 60, "the read models to catch up past the transaction markers")
        assert sorted(rm.skus("ta")) == [f"kept-{n}" for n in range(4)]
        wait_until(lambda: rm.behind() == 0, 30, "behind() to count the markers as read")
    finally:
        rm.stop()


def test_every_read_model_holds_everything(bootstrap: str, views_topology: Topology) -> None:
    produce(bootstrap, views_topology, some_views("ta", 5) + some_views("tb", 2))
    workers = [started(ReadModels(config(bootstrap), views_topology)) for _ in range(2)]
    try:
        for rm in workers:
            wait_until(rm.caught_up, 60, "each worker's read models to catch up")
            assert_holds(rm, "ta", 5)
            assert_holds(rm, "tb", 2)
        assert workers[0].group_id != workers[1].group_id
    finally:
        for rm in workers:
            rm.stop()


def test_stop_ends_the_thread(bootstrap: str, views_topology: Topology) -> None:
    rm = started(ReadModels(config(bootstrap), views_topology))
    wait_until(rm.caught_up, 60, "the read models to catch up")
    thread = rm._thread
    assert thread is not None and thread.is_alive() and thread.daemon
    started_at = time.monotonic()
    rm.stop()
    assert not thread.is_alive()
    assert time.monotonic() - started_at < 5
