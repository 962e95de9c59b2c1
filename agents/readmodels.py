"""Every worker's read models of the fleet's compacted view topics (agents/views.py): the latest
availability of every SKU, every customer's header, price overrides and reserved units, every order saga and
every opportunity saga, indexed by tenant. The HTTP API (agents/http.py) answers every request from them, so
any worker answers any request and nothing is forwarded.

One daemon thread owns one confluent_kafka Consumer. It joins no group and commits nothing: it *assigns*
every partition of the four view topics from the beginning (a unique group.id only because librdkafka wants
one), so each worker rebuilds the whole read model at start, whatever the fleet's rebalances do. Records are
applied in log order, last write wins per key, exactly what compaction keeps; a tombstone (never sent by the
fleet, but a topic may get one by hand) removes the key's entry. A record that cannot be read is logged (the
log line is bounded) and skipped; nothing stops the thread. The consumer reads `read_committed`, so views a
processor produced inside an aborted transaction (exactly-once) are never shown.

Freshness: `behind()` is the number of messages between what was read and the high watermarks (measured by
the thread with get_watermark_offsets, at most once a second); `last_message_at` the time of the last record;
`caught_up()` turns true once, when every partition has been read up to the high watermark it had when the
thread started (readiness: /readyz in agents/ops.py).

Reads are thread-safe: every change is made under one lock, and every record a query returns is replaced
whole by later records, never changed in place, so callers may keep it (and must not change it).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from agents.core.customer import CustomerState
from agents.core.events import SkuAvailability
from agents.core.ids import compose, decompose
from agents.core.opportunity import OpportunitySaga
from agents.core.saga import OrderSaga
from agents.settings import Settings
from agents.topology import Topology
from agents.views import customer_from_views

log = logging.getLogger("agents.readmodels")

TOPIC_IDS = ("availability", "customer_state", "order_status", "opportunity_status")
MEASURE_INTERVAL_S = 1.0  # the least time between two high-watermark measurements
LOG_TEXT_MAX = 200  # characters of a key or a reason in a "skipped" log line
SKIP_LOGS_PER_WINDOW = 20  # "skipped" log lines per window; the rest are counted in one line
SKIP_LOG_WINDOW_S = 10.0
BATCH = 500


class BadRecord(ValueError):
    """A view record that cannot be read (or does not belong under its key)."""


@dataclass
class _CustomerViews:
    header: dict[str, Any] | None = None
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)  # sku -> `price` record
    reserved: dict[str, int] = field(default_factory=dict)  # sku -> units on open orders


@dataclass
class _Partition:
    topic_id: str
    low: int
    high: int  # the latest high watermark measured
    target: int  # the high watermark when the thread started: caught up once `next` reaches it
    next: int  # the offset of the next record to read
    read_at: float | None = None


@dataclass(frozen=True)
class _Change:
    """One decoded record: `index` names the dict, `value` None removes the entry."""

    index: str  # availability | customer | price | reserved | order | opportunity
    tenant: str
    entity: str
    sub: str | None
    value: Any


def _short(value: object) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return repr(text[:LOG_TEXT_MAX] + ("..." if len(text) > LOG_TEXT_MAX else ""))


def _text(record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    if not isinstance(value, str) or not value:
        raise BadRecord(f"field {name} is missing or not a string")
    return value


def _decimal_or_none(record: dict[str, Any], name: str) -> None:
    if name not in record:
        raise BadRecord(f"field {name} is missing")
    value = record[name]
    if value is not None and not Decimal(str(value)).is_finite():
        raise BadRecord(f"field {name} is not a finite number")


def _expect_key(key: bytes | None, expected: str) -> None:
    if key != expected.encode():
        raise BadRecord(f"the key does not match the record (expected {_short(expected)})")


def decode(topic_id: str, key: bytes | None, value: bytes | None) -> _Change:
    """The change one view record makes; BadRecord (or another ValueError) when it cannot be read."""
    if value is None:
        return _tombstone(topic_id, key)
    if topic_id == "availability":
        availability = SkuAvailability.model_validate_json(value)
        tenant, sku = availability.tenant_id, availability.sku
        _expect_key(key, f"{tenant}:{sku}")
        return _Change("availability", tenant, sku, None, availability.model_dump(mode="json"))
    record = orjson.loads(value)
    if not isinstance(record, dict):
        raise BadRecord("the value is not a JSON object")
    kind = record.get("record")
    if topic_id == "customer_state":
        tenant, customer = _text(record, "tenant_id"), _text(record, "customer_id")
        if kind == "customer":
            _expect_key(key, compose("customer", tenant, customer))
            customer_from_views(record, {})  # the header can price a view
            return _Change("customer", tenant, customer, None, record)
        if kind == "price":
            sku = _text(record, "sku")
            _expect_key(key, compose("price", tenant, customer, sku))
            _decimal_or_none(record, "customer_price")
            _decimal_or_none(record, "discount_percentage")
            gone = record["customer_price"] is None and record["discount_percentage"] is None
            return _Change("price", tenant, customer, sku, None if gone else record)
        if kind == "reserved":
            sku = _text(record, "sku")
            _expect_key(key, compose("reserved", tenant, customer, sku))
            quantity = record.get("quantity")
            if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0:
                raise BadRecord("field quantity is not a whole number >= 0")
            return _Change("reserved", tenant, customer, sku, quantity or None)
        raise BadRecord(f"unknown record kind {_short(kind)} on customer_state")
    if topic_id == "order_status":
        if kind != "order":
            raise BadRecord(f"unknown record kind {_short(kind)} on order_status")
        saga = OrderSaga.model_validate(record)
        _expect_key(key, compose("order", saga.tenant_id, saga.order_id))
        return _Change("order", saga.tenant_id, saga.order_id, None, saga)
    if topic_id == "opportunity_status":
        if kind != "opportunity":
            raise BadRecord(f"unknown record kind {_short(kind)} on opportunity_status")
        opportunity = OpportunitySaga.model_validate(record)
        _expect_key(key, compose("opportunity", opportunity.tenant_id, opportunity.opportunity_id))
        return _Change("opportunity", opportunity.tenant_id, opportunity.opportunity_id, None, opportunity)
    raise BadRecord(f"{_short(topic_id)} is not a view topic")


def _tombstone(topic_id: str, key: bytes | None) -> _Change:
    if key is None:
        raise BadRecord("a tombstone without a key")
    text = key.decode()
    if topic_id == "availability":
        tenant, sep, sku = text.partition(":")
        if not sep or not tenant or not sku:
            raise BadRecord("an availability key is tenant:sku")
        return _Change("availability", tenant, sku, None, None)
    parts = decompose(text)
    shapes = {
        "customer_state": {"customer": 3, "price": 4, "reserved": 4},
        "order_status": {"order": 3},
        "opportunity_status": {"opportunity": 3},
    }
    arity = shapes.get(topic_id, {}).get(parts[0] if parts else "")
    if arity is None or len(parts) != arity:
        raise BadRecord(f"a tombstone whose key is not one of {topic_id}'s")
    return _Change(parts[0], parts[1], parts[2], parts[3] if arity == 4 else None, None)


class ReadModels:
    """The view topics in memory, per tenant; `start()` reads them in a daemon thread, `apply()` feeds one
    record directly (what the thread does for every record, and what unit tests do without Kafka)."""

    def __init__(self, settings: Settings, topology: Topology) -> None:
        self.bootstrap = settings.kafka_bootstrap
        self.group_id = f"{settings.app_id}-readmodels-{uuid.uuid4().hex}"
        self.topic_names = {tid: topology[tid].name for tid in TOPIC_IDS}
        self._topic_of = {name: tid for tid, name in self.topic_names.items()}
        self._lock = threading.Lock()
        self._availability: dict[str, dict[str, dict[str, Any]]] = {}
        self._customers: dict[str, dict[str, _CustomerViews]] = {}
        self._orders: dict[str, dict[str, OrderSaga]] = {}
        self._opportunities: dict[str, dict[str, OpportunitySaga]] = {}
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._assigned = False
        self._caught_up = False
        self._last_message_at: float | None = None
        self._started_at: float | None = None
        self._polled_at: float | None = None  # monotonic time the thread last went round its loop
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.skipped = 0  # records that could not be read
        self._avro: Any = None  # with a schema registry, view records come as Avro (agents/registry.py)
        if settings.schema_registry_url:
            from agents.registry import RegistrySerde

            self._avro = RegistrySerde(settings, topology)
        self._skip_window = (0.0, 0)  # (window start, lines logged in it)

    # ---- feeding ---------------------------------------------------------------------------------------

    def apply(self, topic_id: str, key: bytes | None, value: bytes | None) -> bool:
        """Apply one record of the view topic `topic_id`; False (logged, nothing changed) if unreadable."""
        try:
            if value and value[0] == 0 and self._avro is not None:  # the Confluent framing's magic byte
                value = orjson.dumps(self._avro.decode(topic_id, value), default=str)
            change = decode(topic_id, key, value)
        except Exception as exc:
            self._skip(topic_id, key, exc)
            return False
        with self._lock:
            self._commit(change)
        return True

    def _commit(self, change: _Change) -> None:
        t, e, value = change.tenant, change.entity, change.value
        if change.index == "availability":
            _put(self._availability, t, e, value)
        elif change.index == "order":
            _put(self._orders, t, e, value)
        elif change.index == "opportunity":
            _put(self._opportunities, t, e, value)
        else:
            customers = self._customers.setdefault(t, {})
            views = customers.setdefault(e, _CustomerViews())
            if change.index == "customer":
                views.header = value
            elif change.sub is not None:
                part: dict[str, Any] = views.prices if change.index == "price" else views.reserved
                if value is None:
                    part.pop(change.sub, None)
                else:
                    part[change.sub] = value
            if views.header is None and not views.prices and not views.reserved:
                del customers[e]
                if not customers:
                    del self._customers[t]

    def _skip(self, topic_id: str, key: bytes | None, exc: Exception) -> None:
        self.skipped += 1
        now = time.monotonic()
        start, logged = self._skip_window
        if now - start > SKIP_LOG_WINDOW_S:
            if logged > SKIP_LOGS_PER_WINDOW:
                log.warning("read models: %d more unreadable records skipped", logged - SKIP_LOGS_PER_WINDOW)
            start, logged = now, 0
        self._skip_window = (start, logged + 1)
        if logged < SKIP_LOGS_PER_WINDOW:
            log.warning(
                "read models: skipped an unreadable %s record (key %s): %s: %s",
                _short(topic_id),
                _short(key or b""),
                type(exc).__name__,
                _short(exc),
            )

    # ---- queries (one tenant's index each: no query looks at another tenant) -----------------------------

    def availability(self, tenant: str, sku: str) -> dict[str, Any] | None:
        """The SKU's latest SkuAvailability (JSON form), or None."""
        with self._lock:
            return self._availability.get(tenant, {}).get(sku)

    def skus(self, tenant: str) -> dict[str, dict[str, Any]]:
        """sku -> latest SkuAvailability of the tenant: stock by location, and the catalog entry
        (description, unit_price, lead_time_days; null until the product is known)."""
        with self._lock:
            return dict(self._availability.get(tenant, {}))

    def customer(self, tenant: str, customer: str) -> CustomerState | None:
        """The customer as its views show it: header and price overrides (views.customer_from_views), the
        open orders' exposure as one total, and the units its open orders reserve per SKU (`holds` under the
        pseudo order "*", so customer.reserved_for works). None until its `customer` record arrived."""
        with self._lock:
            views = self._customers.get(tenant, {}).get(customer)
            if views is None or views.header is None:
                return None
            header, prices, reserved = views.header, dict(views.prices), dict(views.reserved)
        state = customer_from_views(header, prices)
        return state.model_copy(update={"holds": {"*": reserved}} if reserved else {})

    def order_saga(self, tenant: str, order: str) -> OrderSaga | None:
        with self._lock:
            return self._orders.get(tenant, {}).get(order)

    def tenants(self) -> list[str]:
        """Every tenant the views know of (for fleet-wide gauges, never served over HTTP)."""
        with self._lock:
            return sorted(set(self._availability) | set(self._orders) | set(self._customers))

    def order_sagas(self, tenant: str) -> list[OrderSaga]:
        with self._lock:
            return list(self._orders.get(tenant, {}).values())

    def opportunity_sagas(self, tenant: str) -> list[OpportunitySaga]:
        with self._lock:
            return list(self._opportunities.get(tenant, {}).values())

    def order(self, tenant: str, order: str) -> dict[str, Any] | None:
        """The order's latest `order` record (an OrderSaga, JSON form), or None."""
        saga = self.order_saga(tenant, order)
        return None if saga is None else saga.model_dump(mode="json")

    def orders(self, tenant: str) -> list[dict[str, Any]]:
        return [saga.model_dump(mode="json") for saga in self.order_sagas(tenant)]

    def opportunities(self, tenant: str) -> list[dict[str, Any]]:
        return [saga.model_dump(mode="json") for saga in self.opportunity_sagas(tenant)]

    # ---- freshness -------------------------------------------------------------------------------------

    def behind(self, topic_id: str | None = None) -> int:
        """Messages between what was read and the high watermarks last measured (of one view topic, or of
        all four). Before the partitions are assigned nothing is known: 0, and caught_up() is False."""
        with self._lock:
            return sum(
                max(p.high - p.next, 0) for p in self._partitions.values() if topic_id is None or p.topic_id == topic_id
            )

    @property
    def last_message_at(self) -> float | None:
        """When the last record (of any view topic) was read, epoch seconds."""
        return self._last_message_at

    def last_read(self, topic_id: str) -> float | None:
        """When the last record of one view topic was read, epoch seconds."""
        with self._lock:
            times = [p.read_at for p in self._partitions.values() if p.topic_id == topic_id and p.read_at]
        return max(times) if times else None

    def caught_up(self) -> bool:
        """True once every partition was read up to the high watermark it had when the thread started."""
        return self._caught_up

    @property
    def assigned(self) -> bool:
        """The thread found every view topic and assigned all their partitions."""
        return self._assigned

    def stalled_for(self) -> float | None:
        """Seconds since the thread last went round its consume loop (it does every 0.1 s, or every second
        while it cannot connect); None before it started."""
        polled = self._polled_at
        return None if polled is None else max(time.monotonic() - polled, 0.0)

    # ---- the thread ------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="read-models", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        consumer: Any = None
        measured = 0.0
        while not self._stopping.is_set():
            self._polled_at = time.monotonic()
            try:
                if consumer is None:
                    consumer = self._connect()
                    if consumer is None:
                        self._stopping.wait(1.0)
                        continue
                    measured = time.monotonic()
                self._consume(consumer)
                if time.monotonic() - measured >= MEASURE_INTERVAL_S:
                    self._measure(consumer)
                    measured = time.monotonic()
            except Exception:  # never let the thread die: log, wait a little, go on
                log.exception("read models: the consumer loop failed; going on")
                self._stopping.wait(1.0)
        if consumer is not None:
            consumer.close()

    def _connect(self) -> Any:
        """A consumer with every partition of the view topics assigned from the beginning, and the high
        watermarks measured; None (after closing it) if a topic is missing or the broker does not answer."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": self.group_id,
                "client.id": "inventory-readmodels",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,  # the end is reached even when the last offsets are txn markers
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "log_level": 3,
            }
        )
        try:
            partitions: dict[tuple[str, int], _Partition] = {}
            for tid, name in self.topic_names.items():
                topic = consumer.list_topics(name, timeout=10).topics.get(name)
                if topic is None or topic.error is not None or not topic.partitions:
                    log.warning("read models: topic %s is not there yet (%s)", name, topic.error if topic else "-")
                    consumer.close()
                    return None
                for p in sorted(topic.partitions):
                    low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10, cached=False)
                    partitions[(name, p)] = _Partition(tid, low, high, target=high, next=low)
            consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for name, p in partitions])
        except Exception:
            log.warning("read models: could not assign the view topics; trying again", exc_info=True)
            consumer.close()
            return None
        with self._lock:
            self._partitions = partitions
            self._assigned = True
        log.info(
            "read models: reading %d partitions of %s (%d messages)",
            len(partitions),
            ", ".join(self.topic_names.values()),
            sum(p.high - p.low for p in partitions.values()),
        )
        self._check_caught_up()
        return consumer

    def _consume(self, consumer: Any) -> None:
        for message in consumer.consume(BATCH, timeout=0.1):
            name, partition = message.topic(), message.partition()
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._advance(name, partition, message.offset(), None)
                else:
                    log.warning("read models: consumer error: %s", _short(error))
                continue
            topic_id = self._topic_of.get(name)
            if topic_id is not None:
                self.apply(topic_id, message.key(), message.value())
            now = time.time()
            self._last_message_at = now
            self._advance(name, partition, message.offset() + 1, now)
        self._check_caught_up()

    def _advance(self, name: str, partition: int, offset: int, read_at: float | None) -> None:
        with self._lock:
            part = self._partitions.get((name, partition))
            if part is not None:
                part.next = max(part.next, offset)
                part.high = max(part.high, part.next)
                if read_at is not None:
                    part.read_at = read_at

    def _measure(self, consumer: Any) -> None:
        """The high watermarks as the last fetch responses told them (no broker request)."""
        with self._lock:
            keys = list(self._partitions)
        highs = {}
        for name, partition in keys:
            _, high = consumer.get_watermark_offsets(TopicPartition(name, partition), cached=True)
            if high >= 0:
                highs[(name, partition)] = high
        with self._lock:
            for key, high in highs.items():
                self._partitions[key].high = max(high, self._partitions[key].next)

    def _check_caught_up(self) -> None:
        if self._caught_up or not self._assigned:
            return
        with self._lock:
            done = all(p.next >= p.target for p in self._partitions.values())
        if done:
            self._caught_up = True
            took = time.monotonic() - (self._started_at or time.monotonic())
            log.info("read models: caught up with the view topics in %.1f s", took)


def _put(index: dict[str, dict[str, Any]], tenant: str, entity: str, value: Any) -> None:
    if value is not None:
        index.setdefault(tenant, {})[entity] = value
        return
    entries = index.get(tenant)
    if entries is not None:
        entries.pop(entity, None)
        if not entries:
            del index[tenant]
