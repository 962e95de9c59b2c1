"""The records of the fleet's compacted view topics, written by the processors that own the state and read
by every worker's HTTP read models (agents/readmodels.py). Any worker answers any request from them, with
no request forwarding.

| topic id             | record (`record` field) | key                                   |
|----------------------|-------------------------|---------------------------------------|
| availability         | SkuAvailability (core)  | `tenant:sku`                          |
| customer_state       | `customer`              | compose("customer", tenant, customer) |
| customer_state       | `price`                 | compose("price", tenant, customer, sku) |
| customer_state       | `reserved`              | compose("reserved", tenant, customer, sku) |
| order_status         | `order` (an OrderSaga)  | compose("order", tenant, order)       |
| opportunity_status   | `opportunity` (an OpportunitySaga) | compose("opportunity", tenant, opportunity) |

A record is published when what it shows changed. Nothing is ever deleted with a tombstone: a price
override that went away is a `price` record with both fields null, a hold that went away a `reserved`
record with quantity 0. Every record is bounded: ids and text fields have maximum lengths
(agents/core/events.py) and an order or opportunity a maximum number of lines.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from agents.core import lineage
from agents.core.customer import CustomerState, PriceOverride, held_totals
from agents.core.ids import compose
from agents.core.opportunity import OpportunitySaga
from agents.core.saga import OrderSaga

View = tuple[str, bytes, bytes]  # (topic id, key, value)


def _dumps(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value, default=str)


def customer_header(state: CustomerState) -> dict[str, Any]:
    return {
        "record": "customer",
        "tenant_id": state.tenant_id,
        "customer_id": state.customer_id,
        "known": state.known,
        "name": state.name,
        "tier": state.tier,
        "credit_limit": str(state.credit_limit),
        "credit_used": str(state.credit_used),
        "open_exposure": str(state.open_exposure),
        "version": state.version,
        "updated_at": state.updated_at.isoformat() if state.updated_at else None,
    }


def customer_views(old: CustomerState | None, new: CustomerState) -> list[View]:
    """What changed between two states of a customer, as view records."""
    t, c = new.tenant_id, new.customer_id
    out: list[View] = []
    if old is None or customer_header(old) != customer_header(new):
        out.append(("customer_state", compose("customer", t, c).encode(), _dumps(customer_header(new))))
    before = old.prices if old is not None else {}
    for sku in sorted(set(before) | set(new.prices)):
        price = new.prices.get(sku)
        if before.get(sku) == price:
            continue
        body = price or PriceOverride()
        record: dict[str, Any] = {
            "record": "price",
            "tenant_id": t,
            "customer_id": c,
            "sku": sku,
            "customer_price": None if body.customer_price is None else str(body.customer_price),
            "discount_percentage": None if body.discount_percentage is None else str(body.discount_percentage),
        }
        out.append(("customer_state", compose("price", t, c, sku).encode(), _dumps(record)))
    # Only the SKUs of the orders whose holds changed can have a new total (a customer may hold thousands of
    # open orders: never recount every SKU of every order on each event).
    before_holds = old.holds if old is not None else {}
    known = set() if before_holds is new.holds else lineage.changes(before_holds, new.holds)
    orders = known if known is not None else set(before_holds) | set(new.holds)
    delta: dict[str, int] = {}
    for o in orders:
        was, now = before_holds.get(o), new.holds.get(o)
        if was == now:
            continue
        for sign, held in ((-1, was), (1, now)):
            for sku, quantity in (held or {}).items():
                delta[sku] = delta.get(sku, 0) + sign * quantity
    if delta:
        totals = held_totals(new.holds)
        for sku in sorted(delta):
            if old is not None and delta[sku] == 0:
                continue
            record = {
                "record": "reserved",
                "tenant_id": t,
                "customer_id": c,
                "sku": sku,
                "quantity": totals.get(sku, 0),
            }
            out.append(("customer_state", compose("reserved", t, c, sku).encode(), _dumps(record)))
    return out


def order_view(saga: OrderSaga) -> View:
    body = saga.model_dump(mode="json", exclude={"processed"})
    return (
        "order_status",
        compose("order", saga.tenant_id, saga.order_id).encode(),
        _dumps({"record": "order", **body}),
    )


def opportunity_view(saga: OpportunitySaga) -> View:
    body = saga.model_dump(mode="json", exclude={"processed"})
    key = compose("opportunity", saga.tenant_id, saga.opportunity_id).encode()
    return ("opportunity_status", key, _dumps({"record": "opportunity", **body}))


def customer_from_views(header: dict[str, Any], prices: dict[str, dict[str, Any]]) -> CustomerState:
    """A CustomerState (without exposures and holds) from its `customer` and `price` records, for pricing
    a view the way the customer processor prices an order."""
    overrides = {
        sku: PriceOverride(
            customer_price=None if p["customer_price"] is None else Decimal(p["customer_price"]),
            discount_percentage=None if p["discount_percentage"] is None else Decimal(p["discount_percentage"]),
        )
        for sku, p in prices.items()
        if p["customer_price"] is not None or p["discount_percentage"] is not None
    }
    return CustomerState(
        tenant_id=header["tenant_id"],
        customer_id=header["customer_id"],
        known=header["known"],
        name=header["name"],
        tier=header["tier"],
        credit_limit=Decimal(header["credit_limit"]),
        credit_used=Decimal(header["credit_used"]),
        prices=overrides,
        exposures={"*": Decimal(header["open_exposure"])},  # the open orders' total: what credit needs
        version=header["version"],
    )
