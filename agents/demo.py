"""The demo feed of `make run`: realistic upstream events for two tenants and a live console summary of
what the fleet publishes. Also `produce`, which sends a file of JSON events to an input topic."""

from __future__ import annotations

import json
import random
import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from agents.kafka_io import make_consumer, make_producer
from agents.settings import Settings
from agents.topology import Topology

TENANTS = ("acme", "globex")
CUSTOMERS = (  # id, name, tier, credit limit
    ("C-100", "Northwind Traders", "PLATINUM", "250000"),
    ("C-200", "Contoso Manufacturing", "GOLD", "60000"),
    ("C-300", "Fabrikam Tools", "SILVER", "15000"),
    ("C-400", "Tailspin Repairs", "BRONZE", "2500"),
)
LOCATIONS = ("WH1", "WH2")
CATALOG = (
    ("WIDGET-100", "Steel widget", "12.50", "7.10", 3),
    ("GEAR-220", "Helical gear", "48.00", "29.00", 7),
    ("BOLT-M8", "M8 bolt, box of 100", "9.90", "4.20", 2),
    ("MOTOR-3KW", "3 kW motor", "640.00", "410.00", 21),
    ("PUMP-X2", "Centrifugal pump", "1290.00", "860.00", 30),
    ("VALVE-15", "Ball valve DN15", "18.40", "9.75", 5),
)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _event(event_type: str, tenant: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "tenant_id": tenant,
        "occurred_at": _now(),
        **fields,
    }


@dataclass
class DemoFeed:
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    recent_orders: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=50))
    order_seq: int = 0
    allocated: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=200))  # seen on the output
    shipping: deque[tuple[str, str, str, int]] = field(default_factory=lambda: deque(maxlen=200))
    opportunity_seq: int = 0
    # Order ids differ per run: a local broker keeps earlier runs' orders, and an order id is an identity.
    run_id: str = field(default_factory=lambda: datetime.now(UTC).strftime("%H%M%S"))

    def saw(self, record: dict[str, Any]) -> None:
        """The fleet's outputs steer the feed: allocated orders get fulfilled and shipped."""
        if record.get("event_type") == "OrderInventoryAllocated":
            self.allocated.append(record)

    def fulfil(self) -> list[tuple[str, str, dict[str, Any]]]:
        if self.shipping and self.rng.random() < 0.6:
            tenant, order_id, fid, step = self.shipping.popleft()
            kinds = ("FulfillmentCompleted", "ShipmentDispatched", "ShipmentDelivered")
            extra: dict[str, Any] = {}
            if kinds[step] == "ShipmentDispatched":
                extra = {"carrier": "DHL", "tracking_number": f"DHL-{fid}", "estimated_delivery": _now()}
            elif kinds[step] == "ShipmentDelivered":
                extra = {"delivered_at": _now()}
            event = _event(kinds[step], tenant, fulfillment_id=fid, order_id=order_id, **extra)
            if step < 2:
                self.shipping.append((tenant, order_id, fid, step + 1))
            return [("shipments", f"{tenant}:{order_id}", event)]
        if not self.allocated:
            return []
        record = self.allocated.popleft()
        tenant, order_id = record["tenant_id"], record["order_id"]
        fid = f"FUL-{order_id}"
        items = [{"sku": ln["sku"], "quantity": ln["quantity"], "location": ln["location"]} for ln in record["lines"]]
        event = _event(
            "FulfillmentStarted",
            tenant,
            fulfillment_id=fid,
            order_id=order_id,
            items=items,
            shipping_method="GROUND",
            tracking_number=f"TRK-{fid}",
        )
        self.shipping.append((tenant, order_id, fid, 0))
        return [("shipments", f"{tenant}:{order_id}", event)]

    def opportunity(self, tenant: str) -> tuple[str, str, dict[str, Any]]:
        self.opportunity_seq += 1
        opportunity_id = f"OPP-{self.opportunity_seq % 12:03d}"  # a dozen deals, re-upserted as they move
        stage = self.rng.choice(["QUALIFIED", "PROPOSAL", "NEGOTIATION", "CLOSED_WON", "CLOSED_LOST"])
        sku, _, price, _, _ = self.rng.choice(CATALOG)
        event = _event(
            "OpportunityUpserted",
            tenant,
            opportunity_id=opportunity_id,
            customer_id=self.rng.choice(CUSTOMERS)[0],
            sales_rep_id="REP-1",
            stage=stage,
            probability=round(self.rng.uniform(0.1, 0.95), 2),
            expected_close_date=(datetime.now(UTC).date().isoformat()),
            items=[{"sku": sku, "quantity": self.rng.randint(1, 10), "location": "WH1", "unit_price": price}],
        )
        return ("opportunities", f"{tenant}:{opportunity_id}", event)

    def opening(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(topic id, key, event) to set the scene: the catalog and opening stock."""
        out: list[tuple[str, str, dict[str, Any]]] = []
        for tenant in TENANTS:
            for sku, description, price, cost, lead in CATALOG:
                out.append(
                    (
                        "products",
                        f"{tenant}:{sku}",
                        _event(
                            "ProductUpserted",
                            tenant,
                            sku=sku,
                            description=description,
                            unit_price=price,
                            unit_cost=cost,
                            lead_time_days=lead,
                        ),
                    )
                )
                for location in LOCATIONS:
                    out.append(("stock_movements", f"{tenant}:{sku}", self.receipt(tenant, sku, location)))
            for customer_id, name, tier, limit in CUSTOMERS:
                customer = _event(
                    "CustomerUpserted",
                    tenant,
                    customer_id=customer_id,
                    name=name,
                    tier=tier,
                    credit_limit=limit,
                    credit_used="0",
                )
                out.append(("customers", f"{tenant}:{customer_id}", customer))
            pricing = _event(
                "CustomerPricingUpdated",
                tenant,
                customer_id="C-100",
                updates=[
                    {"sku": "MOTOR-3KW", "customer_price": "575.00"},
                    {"sku": "PUMP-X2", "discount_percentage": 15},
                ],
            )
            out.append(("customer_pricing", f"{tenant}:C-100", pricing))
        return out

    def order(self, tenant: str) -> tuple[str, str, dict[str, Any]]:
        self.order_seq += 1
        order_id = f"SO-{self.run_id}-{self.order_seq:05d}"
        skus = self.rng.sample([c[0] for c in CATALOG], self.rng.randint(1, 3))
        event = _event(
            "OrderPlaced",
            tenant,
            order_id=order_id,
            order_number=order_id,
            customer_id=self.rng.choice(CUSTOMERS)[0],
            order_date=_now(),
            lines=[
                {
                    "line_id": f"L{i + 1}",
                    "sku": sku,
                    "quantity": self.rng.randint(1, 12),
                    "location": self.rng.choice(LOCATIONS),
                }
                for i, sku in enumerate(skus)
            ],
            shipping_address={"city": "Rotterdam", "country": "NL"},
            priority=self.rng.choice(["LOW", "MEDIUM", "MEDIUM", "HIGH", "URGENT"]),
            backorder_policy="BACKORDER" if self.rng.random() < 0.4 else "REJECT",
        )
        self.recent_orders.append((tenant, order_id))
        return ("orders", f"{tenant}:{order_id}", event)

    def receipt(self, tenant: str, sku: str, location: str) -> dict[str, Any]:
        return _event(
            "StockReceived",
            tenant,
            movement_id=f"rcv-{uuid.uuid4().hex[:10]}",
            sku=sku,
            location=location,
            quantity=self.rng.randint(20, 200),
        )

    def tick(self) -> list[tuple[str, str, dict[str, Any] | bytes]]:
        tenant = self.rng.choice(TENANTS)
        sku = self.rng.choice(CATALOG)[0]
        location = self.rng.choice(LOCATIONS)
        key = f"{tenant}:{sku}"
        roll = self.rng.random()
        if roll < 0.15:
            shipments = self.fulfil()
            if shipments:
                return list(shipments)
        if roll < 0.22:
            return [self.opportunity(tenant)]
        if roll < 0.45:
            return [self.order(tenant)]
        if roll < 0.52 and self.recent_orders:
            tenant, order_id = self.recent_orders[self.rng.randrange(len(self.recent_orders))]
            cancel = _event("OrderCancelled", tenant, order_id=order_id, reason="customer cancelled")
            return [("orders", f"{tenant}:{order_id}", cancel)]
        if roll < 0.72:
            return [("stock_movements", key, self.receipt(tenant, sku, location))]
        if roll < 0.88:
            delta = -self.rng.randint(1, 5)
            event = _event(
                "StockAdjusted",
                tenant,
                movement_id=f"adj-{uuid.uuid4().hex[:10]}",
                sku=sku,
                location=location,
                delta=delta,
                reason="damaged in handling",
            )
            return [("stock_movements", key, event)]
        if roll < 0.97:
            event = _event(
                "StockCounted",
                tenant,
                movement_id=f"cnt-{uuid.uuid4().hex[:10]}",
                sku=sku,
                location=location,
                quantity=self.rng.randint(0, 150),
            )
            return [("stock_movements", key, event)]
        # Now and then upstream sends something broken: the fleet dead-letters it and goes on.
        return [("stock_movements", key, b'{"event_type": "StockReceived", "quantity": 0')]


@dataclass
class Summary:
    availability: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    dlq: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=5))
    counts: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=8))
    seen: set[str] = field(default_factory=set)
    since: str = field(default_factory=_now)  # outcomes of earlier runs on the same broker are not counted

    def add(self, topic_id: str, record: dict[str, Any]) -> None:
        self.counts[topic_id] += 1
        if topic_id != "availability" and topic_id != "dlq" and record.get("occurred_at", "") < self.since:
            return
        if topic_id == "availability":
            self.availability[(record["tenant_id"], record["sku"])] = record
        elif topic_id == "dlq":
            self.dlq.append(record)
        elif topic_id in ("fulfillments", "backorders") and record["event_id"] not in self.seen:
            self.seen.add(record["event_id"])
            label = record["event_type"] + (f" ({record['status']})" if topic_id == "fulfillments" else "")
            self.outcomes[label] += 1
        elif topic_id == "allocations" and record["event_id"] not in self.seen:
            self.seen.add(record["event_id"])
            label = record["event_type"].replace("Order", "").replace("Inventory", "")
            reason = record.get("reason")
            self.outcomes[f"{label} ({reason})" if reason else label] += 1
            if record["event_type"].startswith("Order"):
                self.recent.append(record)

    def render(self, produced: int, urls: str) -> Group:
        table = Table(title="Availability (latest per SKU)", expand=True)
        for column in ("tenant", "sku", "description", "location", "on hand", "reserved", "soft", "available"):
            table.add_column(
                column, justify="right" if column in ("on hand", "reserved", "soft", "available") else "left"
            )
        for (tenant, sku), record in sorted(self.availability.items()):
            for loc in record["locations"]:
                table.add_row(
                    tenant,
                    sku,
                    record.get("description") or "",
                    loc["location"],
                    str(loc["on_hand"]),
                    str(loc["reserved"]),
                    str(loc["soft_allocated"]),
                    str(loc["available"]),
                )
        outcomes = Table(title="Order outcomes", expand=True)
        outcomes.add_column("outcome")
        outcomes.add_column("count", justify="right")
        for label, count in sorted(self.outcomes.items()):
            outcomes.add_row(label, str(count))
        recent = Table(title="Latest order events", expand=True)
        for column in ("tenant", "order", "event", "detail"):
            recent.add_column(column)
        for record in self.recent:
            if record["event_type"] == "OrderInventoryAllocated":
                detail = f"value {record['order_value']}, held until {record['reserved_until'][11:19]}"
            else:
                detail = (record.get("message") or record.get("reason") or "")[:90]
            recent.add_row(record["tenant_id"], record["order_id"], record["event_type"], detail)
        dead = Table(title="Dead letters (latest)", expand=True)
        dead.add_column("error")
        dead.add_column("reason")
        for record in self.dlq:
            dead.add_row(record["error"], record["reason"][:110])
        stats = f"produced {produced} upstream events | received " + ", ".join(
            f"{k}: {v}" for k, v in sorted(self.counts.items())
        )
        return Group(Panel(stats + "\n" + urls, title="inventory fleet demo"), outcomes, recent, table, dead)


def run_demo(settings: Settings, topology: Topology, seconds: float = 0, rate: float = 5.0) -> int:
    producer = make_producer(settings.kafka_bootstrap)
    feed = DemoFeed()
    outputs = {topology[t].name: t for t in ("availability", "dlq", "allocations", "backorders", "fulfillments")}
    consumer = make_consumer(settings.kafka_bootstrap, f"demo-console-{uuid.uuid4().hex[:8]}")
    consumer.subscribe(list(outputs))
    summary = Summary()
    produced = 0

    def send(topic_id: str, key: str, value: dict[str, Any] | bytes) -> None:
        nonlocal produced
        data = value if isinstance(value, bytes) else json.dumps(value).encode()
        producer.produce(topology[topic_id].name, key=key.encode(), value=data)
        produced += 1

    for topic_id, key, event in feed.opening():
        send(topic_id, key, event)
    producer.flush(30)
    urls = (
        f"metrics: http://{settings.web_host}:{settings.web_port}/metrics   view: curl -H 'Authorization: Bearer demo-acme' "
        f"http://{settings.web_host}:{settings.web_port}/v1/tenants/acme/customers/C-100/inventory   (Ctrl-C stops everything)"
    )
    started = time.monotonic()
    console = Console()
    try:
        with Live(summary.render(produced, urls), console=console, refresh_per_second=2) as live:
            next_tick = time.monotonic()
            while not seconds or time.monotonic() - started < seconds:
                if time.monotonic() >= next_tick:
                    for topic_id, key, value in feed.tick():
                        send(topic_id, key, value)
                    producer.poll(0)
                    next_tick += 1.0 / rate
                for message in consumer.consume(200, timeout=0.1):
                    topic, payload = message.topic(), message.value()
                    if message.error() or payload is None or topic is None:
                        continue
                    record = json.loads(payload)
                    summary.add(outputs[topic], record)
                    if record.get("occurred_at", "") >= summary.since:
                        feed.saw(record)
                live.update(summary.render(produced, urls))
    except KeyboardInterrupt:
        pass
    finally:
        producer.flush(10)
        consumer.close()
    return 0


def produce_file(settings: Settings, topology: Topology, topic_id: str, path: str) -> int:
    """Send one JSON event per line to an input topic, keyed `tenant:entity` like an upstream system."""
    producer = make_producer(settings.kafka_bootstrap)
    spec = topology[topic_id]
    entity_field = {"tenant:sku": "sku", "tenant:customer": "customer_id", "tenant:order": "order_id"}.get(
        spec.key, "opportunity_id"
    )
    stream = sys.stdin if path == "-" else open(path)  # noqa: SIM115
    sent = 0
    with stream:
        for line in stream:
            if not line.strip():
                continue
            event = json.loads(line)
            key = f"{event.get('tenant_id', '')}:{event.get(entity_field, '')}"
            producer.produce(spec.name, key=key.encode(), value=line.strip().encode())
            sent += 1
    remaining = producer.flush(30)
    print(f"sent {sent - remaining} events to {spec.name}" + (f", {remaining} not delivered" if remaining else ""))
    return 1 if remaining else 0
