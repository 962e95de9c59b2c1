"""The worker: the fleet's processors on one Quix Streams Application, beside the HTTP API, its read
models, the consumer-lag monitor and the expiry ticker.

One consumer group (settings.app_id) consumes every input topic (intake, stateless) and the four internal
command topics (stateful: SKU ledger, order saga, customer, opportunity). Each processor returns the
records to produce (agents/processors/base.py `Out`); Quix produces them, and writes the state the
processor changed, in the same checkpoint (at-least-once by default, Kafka transactions with
`INVENTORY_PROCESSING_GUARANTEE=exactly-once`). Every record the fleet produces is stamped with the time
it was produced, so the next processor measures the hop (inventory_hop_seconds).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
from confluent_kafka import Producer
from quixstreams import Application, message_context
from quixstreams.models import TopicConfig
from quixstreams.models.serializers import SerializationContext, Serializer
from quixstreams.models.serializers.simple_types import BytesDeserializer, BytesSerializer
from quixstreams.models.topics import Topic
from quixstreams.state.rocksdb import RocksDBOptions

from agents import metrics
from agents.codec import Codec, LocalSchemaRegistry
from agents.core.commands import ExpiryTick
from agents.core.ids import event_id
from agents.envelope import wrap
from agents.metrics import ASSIGNED_PARTITIONS, REBALANCES
from agents.processors.base import Out, Where
from agents.processors.customers import CustomerProcessor
from agents.processors.intake import INPUTS, Intake
from agents.processors.ledger import LedgerProcessor
from agents.processors.sagas import PLACEMENT_OUTCOMES, Opportunities, OrderSagas
from agents.runtime.partitions import partition_keys
from agents.settings import Settings
from agents.topology import Topology

log = logging.getLogger("agents")

STATEFUL = ("sku_commands", "order_commands", "customer_commands", "opportunity_commands")
TICKED = ("order_commands", "opportunity_commands")


class OutSerializer(Serializer):
    """Writes the bytes a processor produced (`Out.value`, JSON); with a schema registry, a record of an
    output or view topic goes as Avro under its topic's subject instead (agents/registry.py)."""

    def __init__(self, avro: AvroEncoder | None = None, avro_topics: frozenset[str] = frozenset()) -> None:
        self.avro = avro
        self.avro_topics = avro_topics

    def __call__(self, value: Any, ctx: SerializationContext) -> bytes:
        data = value.value if isinstance(value, Out) else bytes(value)
        if self.avro is not None and ctx.topic in self.avro_topics:
            return self.avro.encode(ctx.topic, orjson.loads(data))
        return data


class AvroEncoder(Protocol):
    def encode(self, topic_name: str, record: dict[str, Any]) -> bytes: ...


def consumed_topics(topology: Topology) -> list[str]:
    """The topic ids the fleet consumes, from the topology: the inputs with an owner, and every internal topic."""
    internal = [tid for tid, spec in topology.topics.items() if spec.role == "internal"]
    return [*INPUTS, *internal]


class Stats:
    """Rebalances and assigned partitions, from librdkafka's statistics of the fleet's consumer."""

    def __init__(self) -> None:
        self.rebalances: int | None = None

    def __call__(self, raw: str) -> None:
        try:
            group = json.loads(raw).get("cgrp") or {}
        except ValueError:
            return
        count = int(group.get("rebalance_cnt", 0))
        if self.rebalances is not None and count > self.rebalances:
            REBALANCES.inc(count - self.rebalances)
        self.rebalances = count
        ASSIGNED_PARTITIONS.set(int(group.get("assignment_size", 0)))


def build(settings: Settings, topology: Topology) -> tuple[Application, dict[str, Topic]]:
    app = Application(
        broker_address=settings.kafka_bootstrap,
        consumer_group=settings.app_id,
        auto_offset_reset="earliest",
        commit_interval=settings.commit_interval_s,
        state_dir=str(settings.data_dir / "state"),
        processing_guarantee=settings.processing_guarantee,
        producer_extra_config={
            "partitioner": "murmur2_random",  # Java-compatible, as every producer of the fleet's topics
            "linger.ms": settings.producer_linger_ms,
            "acks": "all",
            "enable.idempotence": True,
        },
        consumer_extra_config={
            "fetch.wait.max.ms": settings.fetch_wait_max_ms,
            "session.timeout.ms": int(settings.session_timeout_s * 1000),
            "heartbeat.interval.ms": int(min(3.0, settings.session_timeout_s / 3) * 1000),
            "statistics.interval.ms": 5000,
            "stats_cb": Stats(),
            **({"group.instance.id": settings.member_id} if settings.member_id else {}),
        },
        rocksdb_options=RocksDBOptions(
            block_cache_size=settings.rocksdb_block_cache_mb * 1024 * 1024,
            write_buffer_size=settings.rocksdb_write_buffer_mb * 1024 * 1024,
            max_write_buffer_number=settings.rocksdb_max_write_buffers,
            # The changelog is the durable copy; the checkpoint's WriteBatch carries its offset, so a local
            # database that lost its last writes to a power cut is replayed from there. An fsync per store
            # per checkpoint (32 stores) stalled processing by hundreds of ms on this machine's disk.
            use_fsync=settings.rocksdb_fsync,
        ),
        loglevel=None,  # the worker configures logging
        auto_create_topics=True,  # Quix's changelog topics; the fleet's own come from `topics apply`
        request_timeout=30,
    )
    serde = None
    if settings.schema_registry_url:
        from agents.registry import RegistrySerde

        serde = RegistrySerde(settings, topology)
    avro_topics = frozenset(spec.name for tid, spec in topology.topics.items() if serde and serde.produced_as_avro(tid))
    serializer = OutSerializer(serde, avro_topics)
    topics = {
        tid: app.topic(
            spec.name,
            key_deserializer=BytesDeserializer(),  # type: ignore[no-untyped-call]
            value_deserializer=BytesDeserializer(),  # type: ignore[no-untyped-call]
            key_serializer=BytesSerializer(),
            value_serializer=serializer,
            config=TopicConfig(
                num_partitions=spec.partitions, replication_factor=spec.replication_factor, extra_config=spec.config()
            ),
        )
        for tid, spec in topology.topics.items()
    }
    codec = Codec(LocalSchemaRegistry(settings.schemas_dir), serde)
    widths = {tid: spec.partitions for tid, spec in topology.topics.items()}
    processors: dict[str, Callable[..., list[Out]]] = {
        "sku_commands": LedgerProcessor(widths["sku_commands"], settings.dedup_window, settings.state_cache_entries),
        "order_commands": OrderSagas(
            widths["order_commands"], settings.state_cache_entries, timedelta(seconds=settings.reservation_hold_s)
        ),
        "customer_commands": CustomerProcessor(
            widths["customer_commands"], settings.dedup_window, settings.state_cache_entries, settings.tier_discounts
        ),
        "opportunity_commands": Opportunities(widths["opportunity_commands"], settings.state_cache_entries),
    }

    def now_ms(value: Any, key: Any, timestamp: int, headers: Any) -> int:
        return int(time.time() * 1000)

    def no_headers(value: Any, key: Any, timestamp: int, headers: Any) -> list[tuple[str, bytes]]:
        return []

    def target(value: Out, key: Any, timestamp: int, headers: Any) -> Topic:
        return topics[value.topic_id]

    for tid in consumed_topics(topology):
        sdf = app.dataframe(topics[tid])
        if tid in processors:
            sdf = sdf.apply(_stateful(processors[tid]), stateful=True, metadata=True, expand=True)
        else:
            sdf = sdf.apply(_stateless(Intake(tid, codec, widths)), metadata=True, expand=True)
        sdf = sdf.set_timestamp(now_ms).set_headers(no_headers)
        sdf.to_topic(target, key=lambda out: out.key)
    return app, topics


def _where() -> Where:
    ctx = message_context()
    return Where(ctx.topic, ctx.partition, ctx.offset)


def _stateful(processor: Callable[..., list[Out]]) -> Callable[..., list[Out]]:
    def run(value: Any, key: Any, timestamp: int, headers: Any, state: Any) -> list[Out]:
        return processor(value, key, timestamp, state, _where())

    return run


def _stateless(intake: Intake) -> Callable[..., list[Out]]:
    def run(value: Any, key: Any, timestamp: int, headers: Any) -> list[Out]:
        return intake(value, key, timestamp, headers, _where())

    return run


class Ticker(threading.Thread):
    """Every tick interval, an ExpiryTick to the partition key of every partition of the ticked topics.
    Every worker ticks every partition: a tick is cheap, and a partition keeps ticking while its owner
    changes. A tick's time is the expiry clock of the partition (event time, in the log)."""

    def __init__(self, settings: Settings, topology: Topology) -> None:
        super().__init__(name="expiry-ticker", daemon=True)
        self.interval = settings.expiry_tick_s
        self.member = settings.member_id or settings.app_id
        self.targets = [(tid, topology[tid].name, topology[tid].partitions) for tid in TICKED]
        self.producer = Producer(
            {"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5, "log_level": 3, "acks": "all"}
        )
        self.stopping = threading.Event()

    def tick(self) -> None:
        now = datetime.now(UTC)
        for tid, name, partitions in self.targets:
            for partition, key in enumerate(partition_keys(partitions)):
                command = ExpiryTick(
                    command_id=event_id("ExpiryTick", tid, partition, now.isoformat(), self.member),
                    tenant_id="-",
                    issued_at=now,
                )
                self.producer.produce(name, key=key, value=wrap("ExpiryTick", command, None), partition=partition)
        self.producer.poll(0)

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.tick()
            except Exception:  # a full local queue or a broker away: the next tick tries again
                log.warning("could not send expiry ticks", exc_info=True)
        self.producer.flush(5)

    def stop(self) -> None:
        self.stopping.set()


class Gauges(threading.Thread):
    """Units held (by kind) and backorders waiting, fleet-wide, from this worker's read models: every worker
    reports the same figures (dashboards take `max`)."""

    def __init__(self, readmodels: Any, interval_s: float = 15.0) -> None:
        super().__init__(name="gauges", daemon=True)
        self.readmodels = readmodels
        self.interval_s = interval_s
        self.stopping = threading.Event()

    def measure(self) -> None:
        held = {"ORDER": 0, "OPPORTUNITY": 0}
        depth, oldest = 0, None
        for tenant in self.readmodels.tenants():
            for record in self.readmodels.skus(tenant).values():
                for loc in record.get("locations", ()):
                    held["ORDER"] += loc.get("reserved", 0)
                    held["OPPORTUNITY"] += loc.get("soft_allocated", 0)
            for saga in self.readmodels.order_sagas(tenant):
                if saga.backorder_status == "PENDING" and saga.status == "BACKORDERED":
                    depth += 1
                    if saga.backordered_at and (oldest is None or saga.backordered_at < oldest):
                        oldest = saga.backordered_at
        for kind, units in held.items():
            metrics.RESERVATIONS.labels(kind).set(units)
        metrics.BACKORDER_QUEUE_DEPTH.set(depth)
        metrics.BACKORDER_OLDEST_AGE.set((datetime.now(UTC) - oldest).total_seconds() if oldest else 0)

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            try:
                self.measure()
            except Exception:  # a view record of an unexpected shape: the next round tries again
                log.warning("could not measure the reservation gauges", exc_info=True)

    def stop(self) -> None:
        self.stopping.set()


def run_worker(settings: Settings, topology: Topology) -> int:
    from agents.admin import apply_topics
    from agents.http import make_app, serve
    from agents.lag import LagMonitor
    from agents.readmodels import ReadModels

    apply_topics(topology, settings.kafka_bootstrap)
    apply_topics(topology.changelogs(settings.app_id), settings.kafka_bootstrap)
    if settings.schema_registry_url and not settings.schema_registry_auto_register:
        from agents.registry import AVRO_ROLES, RegistrySerde

        serde = RegistrySerde(settings, topology)
        missing = serde.missing(serde.subjects(AVRO_ROLES))
        if missing:
            log.error(
                "the schema registry at %s lacks the fleet's schemas for %s: run `python -m agents schemas"
                " register` (or set INVENTORY_SCHEMA_REGISTRY_AUTO_REGISTER=true)",
                settings.schema_registry_url,
                ", ".join(missing),
            )
            return 1
    metrics.initialize(list(STATEFUL), PLACEMENT_OUTCOMES)
    app, _ = build(settings, topology)
    readmodels = ReadModels(settings, topology)
    readmodels.start()
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 1, "log_level": 3, "acks": "all"})
    running = threading.Event()

    def send(topic: str, key: bytes, value: bytes, partition: int) -> None:
        producer.produce(topic, key=key, value=value, partition=partition)
        producer.flush(10)

    serve(settings, make_app(settings, topology, readmodels, send, running.is_set))
    lag = LagMonitor(
        settings.kafka_bootstrap,
        settings.app_id,
        [topology[tid].name for tid in consumed_topics(topology)],
        settings.lag_interval_s,
    )
    lag.start()
    ticker = Ticker(settings, topology)
    ticker.start()
    gauges = Gauges(readmodels, settings.lag_interval_s * 3)
    gauges.start()
    stopping = threading.Event()
    running.set()
    log.info(
        "worker %s of %s starting (%s, commit every %.2fs)",
        settings.member_id or "-",
        settings.app_id,
        settings.processing_guarantee,
        settings.commit_interval_s,
    )
    try:
        while True:
            current = app

            def stop(*_: Any, current: Application = current) -> None:
                stopping.set()
                current.stop()

            signal.signal(signal.SIGTERM, stop)
            try:
                app.run()  # returns when stopped (SIGTERM, SIGINT)
                break
            except Exception:
                if stopping.is_set():
                    raise
                # A broker lost in the middle of a rebalance fails the assignment (Quix stops without
                # committing): start a new application on the same state, as a restarted pod would.
                log.exception("the stream application failed; starting it again in 2 s")
                time.sleep(2)
                app, _ = build(settings, topology)
    finally:
        running.clear()
        ticker.stop()
        gauges.stop()
        lag.stop()
        readmodels.stop()
    log.info("worker stopped")
    return 0
