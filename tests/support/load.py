"""Mixed upstream traffic for the fault suite: scarce stock so orders compete, every kind of input, and the
faults an upstream system can add on its own (duplicates, reordering, garbage). Every record produced is
kept with the partition and offset the broker gave it, so the checker can account for each one."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Producer

from tests.support import events
from tests.support.fleet import Fleet

PRIORITIES = ("LOW", "MEDIUM", "HIGH", "URGENT")
STAGES = ("LEAD", "QUALIFIED", "PROPOSAL", "NEGOTIATION", "CLOSED_LOST")


@dataclass
class Sent:
    """One record as produced: what it was, and where the broker put it (filled in on delivery)."""

    topic_id: str
    topic_name: str
    key: bytes
    value: bytes
    event: dict[str, Any] | None  # None for bytes that are not a JSON object at all
    kind: str  # "valid", "duplicate" (the same bytes again) or "fuzz"
    partition: int = -1
    offset: int = -1
    error: str | None = None


def opportunity(
    tenant: str, opportunity_id: str, customer: str, items: list[tuple[str, int]], probability: float, stage: str
) -> dict[str, Any]:
    close = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    return events._common(
        "OpportunityUpserted",
        tenant,
        opportunity_id=opportunity_id,
        customer_id=customer,
        sales_rep_id="REP-1",
        stage=stage,
        probability=probability,
        expected_close_date=close,
        items=[{"sku": sku, "quantity": qty, "location": "WH1", "unit_price": "40.00"} for sku, qty in items],
    )


@dataclass
class Workload:
    """A deterministic stream of upstream events (given the seed) over a few tenants with scarce stock."""

    tenants: tuple[str, ...]
    skus: int = 8
    initial_stock: int = 40
    customers: int = 4
    seed: int = 11
    rng: random.Random = field(init=False)
    orders: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # order id -> (tenant, event)
    opportunities: dict[str, tuple[str, list[tuple[str, int]]]] = field(default_factory=dict)
    _n: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def sku(self, n: int) -> str:
        return f"S{n:02d}"

    def customer(self, n: int) -> str:
        return f"C{n}"

    def setup(self) -> list[tuple[str, bytes, dict[str, Any]]]:
        out: list[tuple[str, bytes, dict[str, Any]]] = []
        for tenant in self.tenants:
            for n in range(self.customers):
                customer = self.customer(n)
                # One customer per tenant has a tight credit limit, so credit refusals happen too.
                limit = "400" if n == 0 else "10000000"
                out.append(
                    ("customers", events.key(tenant, customer), events.customer(tenant, customer, credit_limit=limit))
                )
            for n in range(self.skus):
                sku = self.sku(n)
                out.append(("products", events.key(tenant, sku), events.product(tenant, sku)))
                out.append(
                    ("stock_movements", events.key(tenant, sku), events.received(tenant, sku, self.initial_stock))
                )
        return out

    def _order(self, tenant: str, order_id: str | None = None) -> tuple[str, bytes, dict[str, Any]]:
        self._n += 1
        order_id = order_id or f"O{self._n:05d}"
        count = self.rng.choice((1, 1, 2, 2, 3))
        skus = self.rng.sample(range(self.skus), count)
        lines: list[tuple[str, int] | tuple[str, int, str]] = [
            (self.sku(s), self.rng.choice((1, 2, 3, 5))) for s in skus
        ]
        fields: dict[str, Any] = {
            "priority": self.rng.choice(PRIORITIES),
            "backorder_policy": "BACKORDER" if self.rng.random() < 0.3 else "REJECT",
        }
        mine = [oid for oid, (t, _) in self.opportunities.items() if t == tenant]
        if mine and self.rng.random() < 0.1:
            fields["opportunity_id"] = self.rng.choice(mine)
        event = events.order(tenant, order_id, self.customer(self.rng.randrange(self.customers)), lines, **fields)
        self.orders[order_id] = (tenant, event)
        return "orders", events.key(tenant, order_id), event

    def step(self) -> list[tuple[str, bytes, dict[str, Any]]]:
        """The next few upstream events: an order and, now and then, the follow-ups around it."""
        tenant = self.rng.choice(self.tenants)
        out = [self._order(tenant)]
        roll = self.rng.random()
        earlier = [oid for oid, (t, _) in self.orders.items() if t == tenant]
        if roll < 0.08 and earlier:
            order_id = self.rng.choice(earlier)
            out.append(("orders", events.key(tenant, order_id), events.cancelled(tenant, order_id)))
        elif roll < 0.25 and earlier:
            order_id = self.rng.choice(earlier)
            event = self.orders[order_id][1]
            items = [(line["sku"], line["quantity"]) for line in event["lines"]]
            fulfillment_id = f"F-{order_id}-{uuid.uuid4().hex[:6]}"
            out.append(
                (
                    "shipments",
                    events.key(tenant, order_id),
                    events.fulfillment_started(tenant, order_id, fulfillment_id, items),
                )
            )
            if self.rng.random() < 0.5:
                out.append(
                    (
                        "shipments",
                        events.key(tenant, order_id),
                        events.fulfillment_completed(tenant, order_id, fulfillment_id),
                    )
                )
        elif roll < 0.40:
            sku = self.sku(self.rng.randrange(self.skus))
            movement = (
                events.received(tenant, sku, self.rng.choice((3, 5, 10)))
                if self.rng.random() < 0.7
                else events.adjusted(tenant, sku, self.rng.choice((-4, -2, 2, 6)))
            )
            out.append(("stock_movements", events.key(tenant, sku), movement))
        elif roll < 0.50:
            out.append(self._opportunity(tenant))
        return out

    def _opportunity(self, tenant: str) -> tuple[str, bytes, dict[str, Any]]:
        mine = [oid for oid, (t, _) in self.opportunities.items() if t == tenant]
        if mine and self.rng.random() < 0.5:
            opportunity_id = self.rng.choice(mine)
            items = self.opportunities[opportunity_id][1]
        else:
            opportunity_id = f"P{len(self.opportunities) + 1:04d}"
            items = [(self.sku(s), self.rng.choice((1, 2, 4))) for s in self.rng.sample(range(self.skus), 2)]
            self.opportunities[opportunity_id] = (tenant, items)
        stage = self.rng.choice(STAGES)
        probability = 0.0 if stage == "CLOSED_LOST" else self.rng.choice((0.1, 0.3, 0.5, 0.9))
        customer = self.customer(1 + self.rng.randrange(self.customers - 1))
        event = opportunity(tenant, opportunity_id, customer, items, probability, stage)
        return "opportunities", events.key(tenant, opportunity_id), event


def mutate(rng: random.Random, event: dict[str, Any]) -> bytes:
    """A valid event with one thing wrong (or, now and then, nothing wrong that matters)."""
    body = json.loads(json.dumps(event))
    choice = rng.randrange(7)
    field_name = rng.choice([k for k in body if k != "event_type"] or ["event_id"])
    if choice == 0:
        body.pop(field_name, None)
    elif choice == 1:
        body[field_name] = rng.choice([None, -1, "", [], {}, "x" * 300, 1e308, True])
    elif choice == 2:
        body["event_type"] = rng.choice(["OrderPlaced", "StockReceived", "Nope", "", 7])
    elif choice == 3:
        for line in body.get("lines", []) + body.get("items", []):
            line["quantity"] = rng.choice([0, -3, "7", 2**40, None])
    elif choice == 4:
        body["tenant_id"] = rng.choice(["", None, 42, "has:colon", "x" * 500])
    elif choice == 5:
        text = json.dumps(body).encode()
        return text[: rng.randrange(1, len(text))]  # truncated
    else:
        body["unexpected_extra"] = {"nested": [1, 2, 3]}  # unknown extra fields are ignored: stays valid
    return json.dumps(body).encode()


def garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
    if kind == 1:
        return b"\x00" + bytes(rng.randrange(256) for _ in range(rng.randrange(4, 40)))  # Avro magic, junk id
    if kind == 2:
        return json.dumps(rng.choice([[], 3, "text", None, {"event_type": None}])).encode()
    return "\u00e9\u20ac not json".encode("latin-1", errors="replace")


class Load:
    """Produces a Workload at `rate` steps/s in a thread, adding duplicates, reordering and fuzz on request."""

    def __init__(
        self,
        fleet: Fleet,
        workload: Workload,
        rate: float = 20.0,
        duplicates: float = 0.0,
        reorder: float = 0.0,
        fuzz: float = 0.0,
        seed: int = 5,
    ) -> None:
        self.fleet = fleet
        self.workload = workload
        self.rate = rate
        self.duplicates = duplicates
        self.reorder = reorder
        self.fuzz = fuzz
        self.rng = random.Random(seed)
        self.sent: list[Sent] = []
        self.producer = Producer(
            {"bootstrap.servers": fleet.bootstrap, "linger.ms": 2, "acks": "all", "message.timeout.ms": 120000}
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held: list[tuple[str, bytes, dict[str, Any]]] = []
        self.steps = 0

    def _deliver(self, sent: Sent) -> Callable[[Any, Any], None]:
        def done(err: Any, msg: Any) -> None:
            if err is not None:
                sent.error = str(err)
            else:
                sent.partition, sent.offset = msg.partition(), msg.offset()

        return done

    def produce(self, topic_id: str, key: bytes, value: bytes, kind: str) -> None:
        try:
            event = json.loads(value)
        except ValueError:
            event = None
        sent = Sent(topic_id, self.fleet.names[topic_id], key, value, event if isinstance(event, dict) else None, kind)
        self.sent.append(sent)
        while True:
            try:
                self.producer.produce(sent.topic_name, key=key, value=value, on_delivery=self._deliver(sent))
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)

    def emit(self, topic_id: str, key: bytes, event: dict[str, Any]) -> None:
        value = json.dumps(event).encode()
        self.produce(topic_id, key, value, "valid")
        if self.rng.random() < self.duplicates:
            self.produce(topic_id, key, value, "duplicate")
        if self.rng.random() < self.fuzz:
            self.produce(topic_id, key, mutate(self.rng, event), "fuzz")
        if self.rng.random() < self.fuzz / 2:
            self.produce(topic_id, key, garbage(self.rng), "fuzz")

    def emit_step(self, batch: list[tuple[str, bytes, dict[str, Any]]]) -> None:
        if self.reorder and self.rng.random() < self.reorder:
            # Hold this step back and send it after the next one: with its follow-ups reversed, so a
            # cancellation or a completion can arrive before what it refers to.
            self._held.extend(reversed(batch))
            return
        for item in batch:
            self.emit(*item)
        held, self._held = self._held, []
        for item in held:
            self.emit(*item)

    def setup(self) -> None:
        for item in self.workload.setup():
            self.emit(*item)
        self.flush()

    def _run(self, steps: int | None) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set() and (steps is None or self.steps < steps):
            self.emit_step(self.workload.step())
            self.steps += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def start(self, steps: int | None = None) -> Load:
        self._thread = threading.Thread(target=self._run, args=(steps,), daemon=True, name="load")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        for item in self._held:
            self.emit(*item)
        self._held = []
        self.flush()

    def wait(self, timeout: float = 600) -> None:
        """Until the planned steps are all produced."""
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the load did not finish"
        self.stop()

    def flush(self) -> None:
        assert self.producer.flush(120) == 0, "records still undelivered after 120 s"
        failed = [s for s in self.sent if s.error]
        assert not failed, f"{len(failed)} records were not delivered: {failed[0].error}"
