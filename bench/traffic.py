"""The benchmark's traffic model: several tenants of different sizes, a catalog per tenant whose SKU
popularity follows a Zipf law, customers of every tier, multi-line orders, and the follow-ups an OMS and
a WMS would send (cancellations, receipts, fulfillments). Events are built with tests/support/events.py,
the same builders the integration tests use."""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass, field
from typing import Any

from tests.support import events

TIERS = ("BRONZE", "SILVER", "GOLD", "PLATINUM")
PRIORITIES = ("LOW", "MEDIUM", "MEDIUM", "MEDIUM", "HIGH", "URGENT")
LINES_PER_ORDER = ((1, 0.35), (2, 0.25), (3, 0.20), (4, 0.10), (5, 0.10))  # mean 2.35
QUANTITY = ((1, 0.4), (2, 0.25), (3, 0.15), (5, 0.1), (10, 0.1))
INITIAL_STOCK = 100_000  # per stocked SKU: orders are allocated, the ledgers still do the arithmetic


def _weighted(rng: random.Random, table: tuple[tuple[int, float], ...]) -> int:
    values, weights = zip(*table, strict=True)
    return rng.choices(values, weights)[0]


@dataclass
class Tenant:
    name: str
    weight: float
    skus: list[str]
    customers: list[str]
    cumulative: list[float]  # Zipf CDF over skus

    def pick_skus(self, rng: random.Random, count: int) -> list[str]:
        chosen: list[str] = []
        while len(chosen) < count:
            sku = self.skus[bisect.bisect_left(self.cumulative, rng.random() * self.cumulative[-1])]
            if sku not in chosen:
                chosen.append(sku)
        return chosen


@dataclass
class PlannedOrder:
    tenant: str
    order_id: str
    customer: str
    event: dict[str, Any]
    lines: int
    fate: str  # "keep", "cancel" or "fulfil"


@dataclass
class Traffic:
    tenants: int = 4
    skus_per_tenant: int = 100
    customers_per_tenant: int = 20
    zipf_s: float = 1.1
    cancel_share: float = 0.05
    fulfil_share: float = 0.30
    lines_per_receipt: int = 25
    backorder_skus: int = 64
    seed: int = 7
    rng: random.Random = field(init=False)
    catalog: list[Tenant] = field(init=False)
    _seq: itertools.count[int] = field(init=False)
    _probe_seq: itertools.count[int] = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._seq = itertools.count(1)
        self._probe_seq = itertools.count(0)
        self.catalog = []
        for t in range(self.tenants):
            skus = [f"SKU-{i:04d}" for i in range(self.skus_per_tenant)]
            weights = [1.0 / (rank + 1) ** self.zipf_s for rank in range(len(skus))]
            self.catalog.append(
                Tenant(
                    name=f"bench-t{t}",
                    weight=1.0 / (t + 1),  # the first tenant is the largest
                    skus=skus,
                    customers=[f"C-{i:03d}" for i in range(self.customers_per_tenant)],
                    cumulative=list(itertools.accumulate(weights)),
                )
            )

    @property
    def mean_lines(self) -> float:
        return sum(n * w for n, w in LINES_PER_ORDER)

    def tokens(self) -> dict[str, str]:
        """Bearer token -> tenant, for INVENTORY_API_TOKENS."""
        return {f"bench-token-{t.name}": t.name for t in self.catalog}

    def probe_sku(self, index: int) -> str:
        return f"BO-{index:04d}"

    def setup_events(self) -> list[tuple[str, bytes, dict[str, Any]]]:
        """(topic id, key, event): products, initial receipts, customers, and the empty backorder SKUs."""
        out: list[tuple[str, bytes, dict[str, Any]]] = []
        for tenant in self.catalog:
            for i, sku in enumerate(tenant.skus):
                price = f"{5 + (i * 37) % 400}.00"
                out.append(
                    ("products", events.key(tenant.name, sku), events.product(tenant.name, sku, unit_price=price))
                )
                out.append(
                    ("stock_movements", events.key(tenant.name, sku), events.received(tenant.name, sku, INITIAL_STOCK))
                )
            for i, customer in enumerate(tenant.customers):
                body = events.customer(tenant.name, customer, tier=TIERS[i % len(TIERS)], credit_limit="1000000000")
                out.append(("customers", events.key(tenant.name, customer), body))
        probe_tenant = self.catalog[0]
        for i in range(self.backorder_skus):
            sku = self.probe_sku(i)
            out.append(("products", events.key(probe_tenant.name, sku), events.product(probe_tenant.name, sku)))
        return out

    def _tenant(self) -> Tenant:
        return self.rng.choices(self.catalog, [t.weight for t in self.catalog])[0]

    def order(self, step: str) -> PlannedOrder:
        tenant = self._tenant()
        count = _weighted(self.rng, LINES_PER_ORDER)
        skus = tenant.pick_skus(self.rng, count)
        lines: list[tuple[str, int] | tuple[str, int, str]] = [(sku, _weighted(self.rng, QUANTITY)) for sku in skus]
        order_id = f"{step}-{next(self._seq):06d}"
        customer = self.rng.choice(tenant.customers)
        event = events.order(tenant.name, order_id, customer, lines, priority=self.rng.choice(PRIORITIES))
        roll = self.rng.random()
        fate = (
            "cancel"
            if roll < self.cancel_share
            else "fulfil"
            if roll < self.cancel_share + self.fulfil_share
            else "keep"
        )
        return PlannedOrder(tenant.name, order_id, customer, event, count, fate)

    def receipt(self) -> tuple[bytes, dict[str, Any]]:
        tenant = self._tenant()
        (sku,) = tenant.pick_skus(self.rng, 1)
        return events.key(tenant.name, sku), events.received(tenant.name, sku, 50)

    def backorder_probe(self, step: str) -> tuple[PlannedOrder, str] | None:
        """A BACKORDER-policy order on an SKU nobody else touches and that holds no stock."""
        index = next(self._probe_seq)
        if index >= self.backorder_skus:
            return None
        tenant = self.catalog[0]
        sku = self.probe_sku(index)
        order_id = f"{step}-bo-{index:04d}"
        customer = self.rng.choice(tenant.customers)
        event = events.order(tenant.name, order_id, customer, [(sku, 3)], backorder_policy="BACKORDER", priority="HIGH")
        return PlannedOrder(tenant.name, order_id, customer, event, 1, "backorder"), sku

    def view_target(self) -> tuple[str, str, str]:
        """(tenant, customer, token) for one customer-view request."""
        tenant = self._tenant()
        token = f"bench-token-{tenant.name}"
        return tenant.name, self.rng.choice(tenant.customers), token
