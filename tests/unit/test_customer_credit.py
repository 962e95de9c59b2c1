"""Customer pricing and credit: what an order line costs this customer, and how much credit orders hold."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from hypothesis import given, note, settings
from hypothesis import strategies as st

from agents.core import customer as core
from agents.core.commands import OrderPriced, PriceOrder
from agents.core.events import Tier
from tests.unit.factories import (
    T0,
    customer_pricing_updated_factory,
    customer_upserted_factory,
    price_order_factory,
    release_credit_factory,
)

CENT = Decimal("0.01")
TIERS: tuple[Tier, ...] = ("BRONZE", "SILVER", "GOLD", "PLATINUM")


def catalog_entry(unit_price: str | Decimal) -> core.CatalogPrice:
    return core.CatalogPrice(
        description="Widget", unit_price=Decimal(unit_price), unit_cost=Decimal(1), lead_time_days=1
    )


CATALOG = {"SKU-1": catalog_entry("10.00"), "SKU-2": catalog_entry("3.35"), "SKU-3": catalog_entry("125.99")}


def known_customer(**overrides: Any) -> core.CustomerState:
    state = core.new_customer("acme", "CUST-1")
    return core.handle(state, customer_upserted_factory(**overrides), T0).state


def with_prices(state: core.CustomerState, *updates: dict[str, Any]) -> core.CustomerState:
    return core.handle(state, customer_pricing_updated_factory(updates=list(updates)), T0).state


def order_lines(*items: tuple[str, int]) -> list[dict[str, Any]]:
    return [
        {"line_id": f"L{i}", "sku": sku, "quantity": qty, "location": "WH1"} for i, (sku, qty) in enumerate(items, 1)
    ]


def price(state: core.CustomerState, command: PriceOrder, **kwargs: Any) -> tuple[core.CustomerResult, OrderPriced]:
    result = core.handle(state, command, T0, CATALOG, **kwargs)
    (reply,) = result.replies
    return result, reply


def expected_price(unit_price: Decimal, discount: Decimal) -> Decimal:
    return (unit_price * (1 - discount / 100)).quantize(CENT, ROUND_HALF_UP)


# ---- pricing -------------------------------------------------------------------------------------------


def test_a_customer_price_wins_over_the_customers_discount_and_the_tier() -> None:
    state = known_customer(tier="PLATINUM")
    state = with_prices(state, {"sku": "SKU-1", "discount_percentage": "20"})
    state = with_prices(state, {"sku": "SKU-1", "customer_price": "7.77"})
    _, reply = price(state, price_order_factory(lines=order_lines(("SKU-1", 3))))
    (line,) = reply.lines
    assert (line.unit_price, line.customer_price, line.discount_percentage) == (
        Decimal("10.00"),
        Decimal("7.77"),
        Decimal("22.30"),
    )
    assert reply.order_value == Decimal("23.31")


def test_the_customers_discount_wins_over_the_tier_default() -> None:
    state = with_prices(known_customer(tier="PLATINUM"), {"sku": "SKU-1", "discount_percentage": "12.5"})
    _, reply = price(state, price_order_factory(lines=order_lines(("SKU-1", 1), ("SKU-2", 1))))
    own, tiered = reply.lines
    assert (own.customer_price, own.discount_percentage) == (Decimal("8.75"), Decimal("12.5"))
    assert (tiered.customer_price, tiered.discount_percentage) == (Decimal("3.02"), Decimal(10))  # 3.015 rounds up


def test_a_discount_set_after_a_customer_price_replaces_it() -> None:
    state = with_prices(known_customer(), {"sku": "SKU-1", "customer_price": "5.00"})
    state = with_prices(state, {"sku": "SKU-1", "discount_percentage": "10"})
    _, reply = price(state, price_order_factory(lines=order_lines(("SKU-1", 1))))
    assert reply.lines[0].customer_price == Decimal("9.00")


def test_without_prices_of_its_own_a_customer_gets_its_tiers_default_discount() -> None:
    for tier in TIERS:
        _, reply = price(known_customer(tier=tier), price_order_factory(lines=order_lines(("SKU-3", 2))))
        discount = core.DEFAULT_TIER_DISCOUNTS[tier]
        assert reply.tier == tier
        assert reply.lines[0].discount_percentage == discount
        assert reply.lines[0].customer_price == expected_price(Decimal("125.99"), discount)
        assert reply.order_value == 2 * reply.lines[0].customer_price


def test_a_tenants_tier_discounts_replace_the_defaults() -> None:
    tenant_discounts: dict[Tier, Decimal] = {"BRONZE": Decimal(0), "SILVER": Decimal(0), "GOLD": Decimal(30)}
    _, reply = price(
        known_customer(tier="GOLD"),
        price_order_factory(lines=order_lines(("SKU-1", 1))),
        tier_discounts=tenant_discounts,
    )
    assert reply.lines[0].customer_price == Decimal("7.00")


money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999.99"), places=2)
percent = st.decimals(min_value=Decimal(0), max_value=Decimal(100), places=2)


@settings(max_examples=150, deadline=None)
@given(
    unit_price=money,
    tier=st.sampled_from(TIERS),
    own_discount=st.none() | percent,
    own_price=st.none() | money,
)
def test_every_line_is_priced_by_precedence_and_rounded_to_cents(
    unit_price: Decimal, tier: Tier, own_discount: Decimal | None, own_price: Decimal | None
) -> None:
    state = known_customer(tier=tier)
    if own_discount is not None:
        state = with_prices(state, {"sku": "SKU-X", "discount_percentage": own_discount})
    if own_price is not None:
        state = with_prices(state, {"sku": "SKU-X", "customer_price": own_price})
    entry = catalog_entry(unit_price)
    got, discount = core.price_line(state, "SKU-X", entry, core.DEFAULT_TIER_DISCOUNTS)
    if own_price is not None:
        assert got == own_price
    elif own_discount is not None:
        assert (got, discount) == (expected_price(unit_price, own_discount), own_discount)
    else:
        tier_discount = core.DEFAULT_TIER_DISCOUNTS[tier]
        assert (got, discount) == (expected_price(unit_price, tier_discount), tier_discount)
    assert got == got.quantize(CENT)


# ---- credit --------------------------------------------------------------------------------------------


ORDERS = ("ORD-A", "ORD-B", "ORD-C", "ORD-D")
credit_steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("price"),
            st.sampled_from(ORDERS),
            st.lists(st.tuples(st.sampled_from(sorted(CATALOG)), st.integers(1, 20)), min_size=1, max_size=3),
        ),
        st.tuples(st.just("release"), st.sampled_from(ORDERS)),
        st.tuples(st.just("resend"), st.integers(0, 50)),
    ),
    max_size=30,
)


@st.composite
def credit_terms(draw: st.DrawFn) -> tuple[Tier, Decimal, Decimal]:
    limit = draw(st.decimals(min_value=0, max_value=3000, places=2))
    used = draw(st.decimals(min_value=0, max_value=limit, places=2))
    return draw(st.sampled_from(TIERS)), limit, used


@settings(max_examples=150, deadline=None)
@given(credit_terms(), credit_steps)
def test_open_orders_never_hold_more_than_the_credit_left_and_exposure_is_exactly_the_accepted_open_orders(
    terms: tuple[Tier, Decimal, Decimal], seq: list[tuple[Any, ...]]
) -> None:
    tier, limit, used = terms
    state = known_customer(tier=tier, credit_limit=limit, credit_used=used)
    discount = core.DEFAULT_TIER_DISCOUNTS[tier]
    held: dict[str, Decimal] = {}  # the model: order -> value held
    released: set[str] = set()
    sent: list[PriceOrder] = []

    def evaluate(command: PriceOrder) -> None:
        nonlocal state
        value = sum(
            (expected_price(CATALOG[ln.sku].unit_price, discount) * ln.quantity for ln in command.lines), Decimal(0)
        )
        result, reply = price(state, command)
        note(f"{command.order_id} value {value} -> {reply.accepted} {reply.reason}")
        others = sum((v for o, v in held.items() if o != command.order_id), Decimal(0))
        if command.order_id in released:
            assert (reply.accepted, reply.reason) == (False, "RELEASED")
            assert result.state == state
        elif held.get(command.order_id) == value or value <= limit - used - others:
            assert reply.accepted
            assert reply.order_value == value
            held[command.order_id] = value
        else:
            assert (reply.accepted, reply.reason) == (False, "CREDIT_LIMIT_EXCEEDED")
            assert result.state == state, "a refused order changes nothing (keeps what the order held before)"
        assert reply.command_id == core.event_id("OrderPriced", command.command_id)
        state = result.state

    for step in seq:
        match step:
            case ("price", order, items):
                command = price_order_factory(order_id=order, lines=order_lines(*items))
                sent.append(command)
                evaluate(command)
            case ("resend", k) if sent:
                # A re-sent request is answered as the customer stands now (a replay re-decides in log order).
                evaluate(sent[k % len(sent)])
            case ("release", order):
                state = core.handle(state, release_credit_factory(order_id=order), T0).state
                held.pop(order, None)
                released.add(order)
        assert state.open_exposure <= state.credit_limit - state.credit_used
        assert state.exposures == held


def test_a_resent_price_request_is_answered_the_same_and_holds_the_value_once() -> None:
    state = known_customer(credit_limit=Decimal(100))
    command = price_order_factory(order_id="ORD-1", lines=order_lines(("SKU-1", 6)))
    first, reply = price(state, command)
    again, reply_again = price(first.state, command)
    assert again.duplicate
    assert reply_again == reply
    assert again.state.exposures == {"ORD-1": Decimal("60.00")}


def test_repricing_an_order_replaces_what_it_held_instead_of_adding_to_it() -> None:
    state = known_customer(credit_limit=Decimal(100))
    state, _ = price(state, price_order_factory(order_id="ORD-1", lines=order_lines(("SKU-1", 6))))
    result, reply = price(state.state, price_order_factory(order_id="ORD-1", lines=order_lines(("SKU-1", 9))))
    assert reply.accepted, "90 fits in 100 once the order's own 60 is counted as free"
    assert result.state.exposures == {"ORD-1": Decimal("90.00")}


def test_an_order_over_the_credit_left_is_refused_with_the_numbers_in_the_message() -> None:
    state = known_customer(credit_limit=Decimal(100), credit_used=Decimal(30))
    state, _ = price(state, price_order_factory(order_id="ORD-1", lines=order_lines(("SKU-1", 5))))
    result, reply = price(state.state, price_order_factory(order_id="ORD-2", lines=order_lines(("SKU-1", 3))))
    assert (reply.accepted, reply.reason) == (False, "CREDIT_LIMIT_EXCEEDED")
    assert "order value 30.00 exceeds available credit 20.00" in reply.message
    assert result.state.exposures == {"ORD-1": Decimal("50.00")}


def test_an_order_for_a_customer_not_yet_upserted_is_refused_as_unknown_customer() -> None:
    state = core.new_customer("acme", "CUST-1")
    result, reply = price(state, price_order_factory())
    assert (reply.accepted, reply.reason) == (False, "UNKNOWN_CUSTOMER")
    assert "CUST-1" in reply.message
    assert result.state.exposures == {}
    known = core.handle(state, customer_upserted_factory(), T0).state
    assert price(known, price_order_factory())[1].accepted, "the same order is priced once the customer is known"


def test_an_order_naming_unknown_skus_is_an_invalid_order_that_names_them() -> None:
    command = price_order_factory(lines=order_lines(("SKU-1", 1), ("NOPE-2", 1), ("NOPE-1", 2)))
    result, reply = price(known_customer(), command)
    assert (reply.accepted, reply.reason) == (False, "INVALID_ORDER")
    assert "NOPE-1, NOPE-2" in reply.message
    assert "SKU-1" not in reply.message
    assert result.state.exposures == {}


def test_after_its_credit_is_released_an_order_is_refused_as_released() -> None:
    state = known_customer()
    state = price(state, price_order_factory(order_id="ORD-1"))[0].state
    released = core.handle(state, release_credit_factory(order_id="ORD-1"), T0)
    assert released.state.exposures == {}
    result, reply = price(released.state, price_order_factory(order_id="ORD-1"))
    assert (reply.accepted, reply.reason) == (False, "RELEASED")
    assert result.state.exposures == {}
    assert core.handle(released.state, release_credit_factory(order_id="ORD-1"), T0).duplicate


def test_a_release_that_overtakes_the_price_request_still_keeps_the_order_from_holding_credit() -> None:
    state = core.handle(known_customer(), release_credit_factory(order_id="ORD-1"), T0).state
    result, reply = price(state, price_order_factory(order_id="ORD-1"))
    assert (reply.accepted, reply.reason) == (False, "RELEASED")
    assert result.state.exposures == {}
