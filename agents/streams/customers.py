"""The customer agent: tier, prices and credit per `tenant|customer`; prices orders and holds their
credit exposure. Every partition also keeps a copy of the catalog (products are broadcast to it)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, cast

from agents import state_store
from agents.app import app, log, settings, table, topics
from agents.core import customer as core
from agents.core.commands import PriceOrder, ReleaseCredit
from agents.core.events import CustomerPricingUpdated, CustomerUpserted, ProductUpserted, Tier
from agents.core.ids import split_key
from agents.envelope import Envelope
from agents.metrics import EVENTS_PROCESSED
from agents.streams.common import count_handled, dead_letter_internal, forget_on_rebalance, read, send_command, utcnow

customers = table("customers", "customer_changelog")
CATALOG_PREFIX = b"\x00catalog|"  # + tenant|sku: this partition's copy of the product
# Prices, and each open order's exposure and holds, one record each: a big account stays cheap to write.
customer_store = forget_on_rebalance(
    state_store.customer_store(customers, settings.dedup_window, settings.state_cache_entries)
)


def load_customer(key: bytes) -> core.CustomerState:
    state = customer_store.get(key)
    if state is None:
        tenant, customer_id = split_key(key)
        return core.new_customer(tenant, customer_id)
    return state


def catalog_for(tenant_id: str, skus: set[str]) -> dict[str, core.CatalogPrice]:
    found = {}
    for sku in skus:
        raw = customers.get(CATALOG_PREFIX + f"{tenant_id}|{sku}".encode())
        if raw is not None:
            found[sku] = core.CatalogPrice.model_validate_json(raw)
    return found


def tier_discounts(tenant_id: str) -> dict[Tier, Decimal]:
    override = settings.tier_discounts.get(tenant_id, {})
    return {**core.DEFAULT_TIER_DISCOUNTS, **cast(dict[Tier, Decimal], override)}


async def apply_command(event: Any) -> None:
    message = event.message
    started = time.perf_counter()
    envelope: Envelope | None = None
    try:
        envelope, command = read(message)
        if isinstance(command, ProductUpserted):
            entry = core.CatalogPrice(
                description=command.description,
                unit_price=command.unit_price,
                unit_cost=command.unit_cost,
                lead_time_days=command.lead_time_days,
            )
            customers[CATALOG_PREFIX + message.key] = entry.model_dump_json().encode()
            EVENTS_PROCESSED.labels("customer_commands", "applied").inc()
            return
        if not isinstance(command, CustomerUpserted | CustomerPricingUpdated | PriceOrder | ReleaseCredit):
            raise TypeError(f"{type(command).__name__} does not belong on the customer topic")
        state = load_customer(message.key)
        catalog = (
            catalog_for(state.tenant_id, {ln.sku for ln in command.lines}) if isinstance(command, PriceOrder) else None
        )
        result = core.handle(state, command, utcnow(), catalog, tier_discounts(state.tenant_id), settings.dedup_window)
    except Exception as exc:
        log.exception("customer agent failed on %s[%d]@%d", message.topic, message.partition, message.offset)
        await dead_letter_internal(
            "customer_commands", message, envelope, type(exc).__name__, f"unexpected error: {exc}"
        )
        return
    customer_store.put(message.key, result.state, refresh=result.duplicate)
    for reply in result.replies:
        await send_command(reply, envelope.source)
    count_handled("customer_commands", "customers", result.duplicate, started)


@app.agent(topics["customer_commands"], name="customers", concurrency=1)
async def maintain_customers(stream: Any) -> None:
    async for event in stream.events():
        await apply_command(event)
