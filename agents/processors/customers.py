"""The customer processor: tier, prices and credit per `tenant|customer` (topic customer_commands), in the
split layout; prices orders and holds their credit exposure, and publishes the customer's view records
(agents/views.py) for every worker's read models.

Every partition keeps a copy of the catalog under its partition key: intake broadcasts each product to
every partition. Pricing an order (message key: the customer) reads that copy through the one Quix
internal the fleet uses (agents/runtime/quix_compat.py), read-only.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, cast

from agents.core import customer as core
from agents.core.commands import PriceOrder, ReleaseCredit
from agents.core.events import CustomerPricingUpdated, CustomerUpserted, OrderPlaced, ProductUpserted, Tier
from agents.core.ids import entity_key, split_key
from agents.envelope import Envelope
from agents.metrics import EVENTS_PROCESSED
from agents.processors.base import (
    Out,
    Where,
    checked,
    count_handled,
    observe_hop,
    outs_of,
    read,
    refused,
    utcnow,
)
from agents.runtime.bounds import check_size
from agents.runtime.partitions import is_partition_key, partition_keys
from agents.runtime.quix_compat import sibling
from agents.runtime.store import customer_store
from agents.views import customer_views

TOPIC = "customer_commands"
CATALOG = b"c"  # + tenant|sku, in the partition key's state


class CustomerProcessor:
    def __init__(
        self, partitions: int, dedup_window: int, cache_entries: int, tier_discounts: dict[str, dict[str, Decimal]]
    ) -> None:
        self.partitions = partitions
        self.dedup_window = dedup_window
        self.store = customer_store(dedup_window, cache_entries)
        self.overrides = tier_discounts

    def tier_discounts(self, tenant_id: str) -> dict[Tier, Decimal]:
        override = self.overrides.get(tenant_id, {})
        return {**core.DEFAULT_TIER_DISCOUNTS, **cast(dict[Tier, Decimal], override)}

    def __call__(self, value: bytes, key: bytes, timestamp: int, state: Any, where: Where) -> list[Out]:
        started = time.perf_counter()
        observe_hop(TOPIC, timestamp)
        envelope: Envelope | None = None
        try:
            envelope, command = read(value)
            if is_partition_key(key):
                if not isinstance(command, ProductUpserted):
                    raise TypeError(f"{type(command).__name__} does not belong on a partition key of {TOPIC}")
                entry = core.CatalogPrice(
                    description=command.description,
                    unit_price=command.unit_price,
                    unit_cost=command.unit_cost,
                    lead_time_days=command.lead_time_days,
                )
                record = CATALOG + entity_key(command.tenant_id, command.sku)
                body = entry.model_dump_json().encode()
                check_size("a catalog record", key + record, body)
                state.set_bytes(record, body)
                EVENTS_PROCESSED.labels(TOPIC, "applied").inc()
                return []
            if not isinstance(
                command, CustomerUpserted | CustomerPricingUpdated | PriceOrder | ReleaseCredit | OrderPlaced
            ):
                raise TypeError(f"{type(command).__name__} does not belong on {TOPIC}")
            old = self.store.get(state, key)
            current = old if old is not None else core.new_customer(*split_key(key))
            catalog = None
            if isinstance(command, PriceOrder | OrderPlaced):
                catalog = self._catalog(state, where.partition, current.tenant_id, {ln.sku for ln in command.lines})
            now = utcnow()
            result = core.handle(
                current, command, now, catalog, self.tier_discounts(current.tenant_id), self.dedup_window
            )
            out = outs_of((), result.replies, envelope.source)
            if result.state is not current:
                out.extend(Out(*view) for view in customer_views(old, result.state))
            checked(out)
            if result.state is not current:
                self.store.put(state, key, result.state)
        except Exception as exc:  # a refusal or a bug: dead-lettered, the partition moves on
            return refused(TOPIC, "customer processor", where, key, value, envelope, exc)
        count_handled(TOPIC, "customers", result.duplicate, started)
        return out

    def _catalog(self, state: Any, partition: int, tenant_id: str, skus: set[str]) -> dict[str, core.CatalogPrice]:
        copy = sibling(state, partition_keys(self.partitions)[partition])
        found = {}
        for sku in skus:
            raw = copy.get_bytes(CATALOG + entity_key(tenant_id, sku))
            if raw is not None:
                found[sku] = core.CatalogPrice.model_validate_json(raw)
        return found
