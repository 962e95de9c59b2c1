"""Customers: tier, credit, price overrides and the credit exposure held by open orders.

A customer partition also keeps a copy of the product catalog (products are broadcast to every customer
partition), so an order is priced where its credit is checked, deterministically, in log order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from pydantic import Field

from agents.core import lineage
from agents.core.commands import Command, OpenOrder, OrderPriced, PricedLine, PriceOrder, ReleaseCredit
from agents.core.events import CustomerPricingUpdated, CustomerUpserted, Model, OrderPlaced, Tier
from agents.core.ids import event_id
from agents.core.saga import order_problem, placement_price_request

CENT = Decimal("0.01")
DEFAULT_DEDUP_WINDOW = 512

# The discount a tier gets when the customer has no price or discount of its own for a SKU (percent).
# Tenants override it with INVENTORY_TIER_DISCOUNTS.
DEFAULT_TIER_DISCOUNTS: dict[Tier, Decimal] = {
    "BRONZE": Decimal(0),
    "SILVER": Decimal(2),
    "GOLD": Decimal(5),
    "PLATINUM": Decimal(10),
}


class CatalogPrice(Model):
    description: str
    unit_price: Decimal
    unit_cost: Decimal
    lead_time_days: int


class PriceOverride(Model):
    customer_price: Decimal | None = None
    discount_percentage: Decimal | None = None


class CustomerState(Model):
    tenant_id: str
    customer_id: str
    known: bool = False
    name: str = ""
    tier: Tier = "BRONZE"
    credit_limit: Decimal = Decimal(0)
    credit_used: Decimal = Decimal(0)
    prices: dict[str, PriceOverride] = Field(default_factory=dict)
    exposures: dict[str, Decimal] = Field(default_factory=dict)  # order id -> value held
    holds: dict[str, dict[str, int]] = Field(default_factory=dict)  # open order id -> sku -> quantity
    processed: tuple[str, ...] = ()
    version: int = 0
    updated_at: datetime | None = None

    @property
    def open_exposure(self) -> Decimal:
        return _EXPOSURE(self.exposures)

    def available_credit(self, excluding_order: str | None = None) -> Decimal:
        held = self.open_exposure - (self.exposures.get(excluding_order, Decimal(0)) if excluding_order else 0)
        return self.credit_limit - self.credit_used - held


@dataclass(frozen=True)
class CustomerResult:
    state: CustomerState
    replies: list[Command] = field(default_factory=list)
    duplicate: bool = False


def new_customer(tenant_id: str, customer_id: str) -> CustomerState:
    return CustomerState(tenant_id=tenant_id, customer_id=customer_id)


def price_line(
    state: CustomerState, sku: str, catalog: CatalogPrice, tier_discounts: dict[Tier, Decimal]
) -> tuple[Decimal, Decimal]:
    """(customer price, discount percent): the customer's price, else list price less the customer's
    discount for the SKU, else less the tier's default discount."""
    override = state.prices.get(sku)
    if override is not None and override.customer_price is not None:
        price = override.customer_price
        discount = (
            ((1 - price / catalog.unit_price) * 100).quantize(CENT, ROUND_HALF_UP) if catalog.unit_price else Decimal(0)
        )
        return price, discount
    if override is not None and override.discount_percentage is not None:
        discount = override.discount_percentage
    else:
        discount = tier_discounts.get(state.tier, Decimal(0))
    return (catalog.unit_price * (100 - discount) / 100).quantize(CENT, ROUND_HALF_UP), discount


def _seen(state: CustomerState, cid: str, window: int, now: datetime, **changes: object) -> CustomerState:
    return state.model_copy(
        update={
            **changes,
            "processed": (*state.processed, cid)[-window:],
            "version": state.version + 1,
            "updated_at": now,
        }
    )


def released_marker(order_id: str) -> str:
    return f"released:{order_id}"


def handle(
    state: CustomerState,
    command: CustomerUpserted | CustomerPricingUpdated | PriceOrder | ReleaseCredit | OrderPlaced,
    now: datetime,
    catalog: dict[str, CatalogPrice] | None = None,
    tier_discounts: dict[Tier, Decimal] | None = None,
    window: int = DEFAULT_DEDUP_WINDOW,
) -> CustomerResult:
    if isinstance(command, CustomerUpserted):
        cid = f"event:{command.event_id}"
        if cid in state.processed:
            return CustomerResult(state, duplicate=True)
        return CustomerResult(
            _seen(
                state,
                cid,
                window,
                now,
                known=True,
                name=command.name,
                tier=command.tier,
                credit_limit=command.credit_limit,
                credit_used=command.credit_used,
            )
        )
    if isinstance(command, CustomerPricingUpdated):
        cid = f"event:{command.event_id}"
        if cid in state.processed:
            return CustomerResult(state, duplicate=True)
        prices = dict(state.prices)
        for update in command.updates:
            before = prices.get(update.sku, PriceOverride())
            prices[update.sku] = PriceOverride(
                customer_price=update.customer_price
                if update.customer_price is not None
                else (None if update.discount_percentage is not None else before.customer_price),
                discount_percentage=update.discount_percentage
                if update.discount_percentage is not None
                else before.discount_percentage,
            )
        return CustomerResult(_seen(state, cid, window, now, prices=prices))
    if isinstance(command, ReleaseCredit):
        marker = released_marker(command.order_id)
        if marker in state.processed and command.order_id not in state.exposures:
            return CustomerResult(state, duplicate=True)
        exposures = lineage.edited(state.exposures, drop=[command.order_id])
        holds = lineage.edited(state.holds, drop=[command.order_id])
        return CustomerResult(_seen(state, marker, window, now, exposures=exposures, holds=holds))
    if isinstance(command, OrderPlaced):
        return _open_order(state, command, now, catalog or {}, tier_discounts or DEFAULT_TIER_DISCOUNTS, window)
    return _price_order(state, command, now, catalog or {}, tier_discounts or DEFAULT_TIER_DISCOUNTS, window)


def _open_order(
    state: CustomerState,
    order: OrderPlaced,
    now: datetime,
    catalog: dict[str, CatalogPrice],
    tier_discounts: dict[Tier, Decimal],
    window: int,
) -> CustomerResult:
    """An order from upstream, before its saga exists: price it and hold its credit as the saga's placement
    would ask (same PriceOrder id), and open the saga with the answer. An invalid order, or one that already
    holds or released credit here, is passed on unpriced: the saga knows what it is (a first placement asks
    again; anything else is a repeat)."""

    def opened(priced: OrderPriced | None) -> OpenOrder:
        return OpenOrder(
            command_id=event_id("OpenOrder", state.tenant_id, order.order_id, order.event_id),
            tenant_id=state.tenant_id,
            issued_at=now,
            order_id=order.order_id,
            order=order,
            priced=priced,
        )

    if (
        order_problem(order) is not None
        or order.order_id in state.exposures
        or released_marker(order.order_id) in state.processed
    ):
        return CustomerResult(state, [opened(None)])
    result = _price_order(state, placement_price_request(order, now), now, catalog, tier_discounts, window)
    (reply,) = result.replies  # pricing answers with exactly one OrderPriced
    assert isinstance(reply, OrderPriced)
    return CustomerResult(result.state, [opened(reply)], result.duplicate)


def _price_order(
    state: CustomerState,
    command: PriceOrder,
    now: datetime,
    catalog: dict[str, CatalogPrice],
    tier_discounts: dict[Tier, Decimal],
    window: int,
) -> CustomerResult:
    def reply(accepted: bool, **fields: object) -> OrderPriced:
        return OrderPriced(
            command_id=event_id("OrderPriced", command.command_id),
            tenant_id=state.tenant_id,
            issued_at=now,
            order_id=command.order_id,
            customer_id=state.customer_id,
            accepted=accepted,
            **fields,
        )

    cid = f"cmd:{command.command_id}"
    duplicate = cid in state.processed
    if released_marker(command.order_id) in state.processed:
        msg = f"order {command.order_id} already released its credit"
        return CustomerResult(state, [reply(False, reason="RELEASED", message=msg)], duplicate=duplicate)
    if not state.known:
        msg = f"customer {command.customer_id} is not known to the fleet (no CustomerUpserted)"
        return CustomerResult(state, [reply(False, reason="UNKNOWN_CUSTOMER", message=msg)], duplicate=duplicate)
    unknown = sorted({ln.sku for ln in command.lines if ln.sku not in catalog})
    if unknown:
        msg = f"unknown SKU(s): {', '.join(unknown)} (no ProductUpserted for this tenant)"
        return CustomerResult(state, [reply(False, reason="INVALID_ORDER", message=msg)], duplicate=duplicate)
    priced = []
    for line in command.lines:
        entry = catalog[line.sku]
        price, discount = price_line(state, line.sku, entry, tier_discounts)
        priced.append(
            PricedLine(
                **line.model_dump(), unit_price=entry.unit_price, customer_price=price, discount_percentage=discount
            )
        )
    value = sum((ln.customer_price * ln.quantity for ln in priced), Decimal(0))
    if state.exposures.get(command.order_id) == value:  # already held (a re-sent request)
        return CustomerResult(state, [reply(True, tier=state.tier, lines=tuple(priced), order_value=value)], True)
    available = state.available_credit(excluding_order=command.order_id)
    if value > available:
        msg = (
            f"order value {value} exceeds available credit {available} (limit {state.credit_limit}, "
            f"used {state.credit_used}, open exposure {state.open_exposure})"
        )
        return CustomerResult(
            state, [reply(False, reason="CREDIT_LIMIT_EXCEEDED", message=msg, tier=state.tier)], duplicate=duplicate
        )
    quantities: dict[str, int] = {}
    for line in command.lines:
        quantities[line.sku] = quantities.get(line.sku, 0) + line.quantity
    nxt = _seen(
        state,
        cid,
        window,
        now,
        exposures=lineage.edited(state.exposures, {command.order_id: value}),
        holds=lineage.edited(state.holds, {command.order_id: quantities}),
    )
    return CustomerResult(nxt, [reply(True, tier=state.tier, lines=tuple(priced), order_value=value)])


def reserved_for(state: CustomerState, sku: str) -> int:
    """Units of `sku` on the customer's open orders."""
    return held_totals(state.holds).get(sku, 0)


def held_totals(holds: dict[str, dict[str, int]]) -> dict[str, int]:
    """Units per SKU over every open order's holds (carried from the previous version: do not change it)."""
    return _HELD(holds)


def _build_held(holds: dict[str, dict[str, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for held in holds.values():
        for sku, quantity in held.items():
            totals[sku] = totals.get(sku, 0) + quantity
    return totals


def _update_held(
    totals: dict[str, int], order: str, old: dict[str, int] | None, new: dict[str, int] | None
) -> dict[str, int]:
    for sign, held in ((-1, old), (1, new)):
        for sku, quantity in (held or {}).items():
            left = totals.get(sku, 0) + sign * quantity
            if left:
                totals[sku] = left
            else:
                totals.pop(sku, None)
    return totals


# Per customer, the open exposure and the units held per SKU follow each order in O(its lines), however
# many orders are open (agents/core/lineage.py).
_EXPOSURE: lineage.Carried[str, Decimal, Decimal] = lineage.Carried(
    lambda d: sum(d.values(), Decimal(0)),
    lambda total, _order, old, new: total - (old or Decimal(0)) + (new or Decimal(0)),
)
_HELD: lineage.Carried[str, dict[str, int], dict[str, int]] = lineage.Carried(_build_held, _update_held)
