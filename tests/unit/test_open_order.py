"""An order goes to its customer first (OrderPlaced is routed to the customer partition): the customer prices
it and holds its credit, and opens the saga with the answer (OpenOrder). These tests hold that path to the
same outcome as the saga asking the customer itself, and check that no credit is held for an order that
is over."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.core import customer as customer_core
from agents.core import saga as saga_core
from agents.core.commands import OpenOrder, OrderPriced, PriceOrder, ReleaseCredit, ReserveStock
from agents.core.events import OrderAllocationRejected, OrderInventoryReleased, OrderPlaced
from tests.unit.factories import T0, customer_upserted_factory, order_cancelled_factory, order_placed_factory
from tests.unit.test_customer_credit import CATALOG

HOLD = timedelta(minutes=15)


def customer(**terms: Any) -> customer_core.CustomerState:
    state = customer_core.new_customer("acme", "CUST-1")
    return customer_core.handle(state, customer_upserted_factory(**{"credit_limit": 1_000, **terms}), T0).state


def open_at_customer(
    state: customer_core.CustomerState, order: OrderPlaced
) -> tuple[customer_core.CustomerState, OpenOrder]:
    result = customer_core.handle(state, order, T0, CATALOG)
    (opened,) = result.replies
    assert isinstance(opened, OpenOrder) and opened.order == order
    return result.state, opened


def saga_of(order: OrderPlaced) -> saga_core.OrderSaga:
    return saga_core.new_saga(order.tenant_id, order.order_id)


lines = st.lists(
    st.tuples(st.sampled_from(["SKU-1", "SKU-2", "SKU-3"]), st.integers(1, 3)), min_size=1, max_size=4
).map(
    lambda items: [{"line_id": f"L{i}", "sku": s, "quantity": q, "location": "WH1"} for i, (s, q) in enumerate(items)]
)


@settings(max_examples=60, deadline=None)
@given(lines)
def test_opening_at_the_customer_reaches_the_state_the_saga_reaches_by_asking_the_customer(order_lines: list) -> None:
    order = order_placed_factory(lines=order_lines)
    # The saga asks: OrderPlaced -> PriceOrder -> the customer -> OrderPriced -> the saga.
    asked = saga_core.handle(saga_of(order), order, T0, HOLD)
    (request,) = asked.commands
    assert isinstance(request, PriceOrder)
    by_asking = customer_core.handle(customer(), request, T0, CATALOG)
    (reply,) = by_asking.replies
    assert isinstance(reply, OrderPriced)
    reserved = saga_core.handle(asked.saga, reply, T0, HOLD)
    # The customer first: OrderPlaced -> the customer -> OpenOrder -> the saga.
    held, opened = open_at_customer(customer(), order)
    assert opened.priced == reply
    direct = saga_core.handle(saga_of(order), opened, T0, HOLD)
    assert held.exposures == by_asking.state.exposures and held.holds == by_asking.state.holds
    assert (direct.saga.round, direct.saga.lines, direct.saga.order_value, direct.saga.status) == (
        reserved.saga.round,
        reserved.saga.lines,
        reserved.saga.order_value,
        reserved.saga.status,
    )
    assert direct.outputs == reserved.outputs and direct.commands == reserved.commands
    # over the limit it is rejected; within it, the saga goes straight to the SKU ledgers
    assert direct.saga.status == "REJECTED" or all(isinstance(c, ReserveStock) for c in direct.commands)


def test_an_order_over_the_credit_limit_is_rejected_without_asking_the_customer_again() -> None:
    order = order_placed_factory(lines=[{"line_id": "L1", "sku": "SKU-3", "quantity": 9, "location": "WH1"}])
    state, opened = open_at_customer(customer(), order)
    assert opened.priced is not None and opened.priced.reason == "CREDIT_LIMIT_EXCEEDED"
    assert order.order_id not in state.exposures
    result = saga_core.handle(saga_of(order), opened, T0, HOLD)
    assert result.saga.status == "REJECTED" and result.commands == []
    (outcome,) = result.outputs
    assert isinstance(outcome, OrderAllocationRejected) and outcome.reason == "CREDIT_LIMIT_EXCEEDED"


def test_an_invalid_order_is_passed_on_unpriced_and_the_saga_rejects_it() -> None:
    twice = [{"line_id": "L1", "sku": "SKU-1", "quantity": 1, "location": "WH1"}] * 2
    order = order_placed_factory(lines=twice)
    state, opened = open_at_customer(customer(), order)
    assert opened.priced is None and state.exposures == {}
    result = saga_core.handle(saga_of(order), opened, T0, HOLD)
    assert result.saga.status == "REJECTED" and result.commands == []
    (outcome,) = result.outputs
    assert isinstance(outcome, OrderAllocationRejected) and outcome.reason == "INVALID_ORDER"


def test_a_cancel_that_overtook_the_order_releases_the_credit_the_customer_held() -> None:
    order = order_placed_factory()
    cancelled = saga_core.handle(saga_of(order), order_cancelled_factory(order_id=order.order_id), T0, HOLD).saga
    state, opened = open_at_customer(customer(), order)
    assert order.order_id in state.exposures
    result = saga_core.handle(cancelled, opened, T0, HOLD)
    assert result.saga.status == "CANCELLED"
    assert [type(o) for o in result.outputs] == [OrderInventoryReleased]
    (release,) = result.commands
    assert isinstance(release, ReleaseCredit)
    assert customer_core.handle(state, release, T0).state.exposures == {}


def test_an_order_sent_again_after_it_ended_and_its_release_was_forgotten_is_released_again() -> None:
    order = order_placed_factory(lines=[{"line_id": "L1", "sku": "SKU-3", "quantity": 9, "location": "WH1"}])
    rich = customer(credit_limit=100_000)
    state, opened = open_at_customer(rich, order)
    saga = saga_core.handle(saga_of(order), opened, T0, HOLD).saga
    cancel = order_cancelled_factory(order_id=order.order_id)
    ended = saga_core.handle(saga, cancel, T0, HOLD)
    (release,) = [c for c in ended.commands if isinstance(c, ReleaseCredit)]
    state = customer_core.handle(state, release, T0, window=1).state
    state = customer_core.handle(state, customer_upserted_factory(credit_limit=100_000), T0, window=1).state
    assert state.exposures == {} and customer_core.released_marker(order.order_id) not in state.processed
    again = order.model_copy(update={"event_id": "resent-by-the-oms"})
    state, reopened = open_at_customer(state, again)
    assert reopened.priced is not None and reopened.priced.accepted and order.order_id in state.exposures
    result = saga_core.handle(ended.saga, reopened, T0, HOLD)
    assert result.saga.status == "CANCELLED"
    releases = [c for c in result.commands if isinstance(c, ReleaseCredit)]
    assert len(releases) == 1
    assert customer_core.handle(state, releases[0], T0).state.exposures == {}


def test_an_order_redelivered_to_the_customer_that_holds_it_is_passed_on_unpriced_and_changes_nothing() -> None:
    order = order_placed_factory()
    state, opened = open_at_customer(customer(), order)
    saga = saga_core.handle(saga_of(order), opened, T0, HOLD).saga
    again, reopened = open_at_customer(state, order)
    assert reopened.priced is None and again.exposures == state.exposures
    result = saga_core.handle(saga, reopened, T0, HOLD)
    assert result.duplicate and result.saga == saga
    assert not any(isinstance(c, ReleaseCredit | PriceOrder) for c in result.commands)


def test_a_first_placement_the_customer_did_not_price_asks_the_customer_as_before() -> None:
    """The customer holds credit for an order whose OpenOrder was lost with a crash (its state was written,
    its sends were not): the OrderPlaced replayed is passed on unpriced, and the saga asks for the price."""
    order = order_placed_factory()
    state, _ = open_at_customer(customer(), order)
    _, replayed = open_at_customer(state, order)
    assert replayed.priced is None
    result = saga_core.handle(saga_of(order), replayed, T0, HOLD)
    (request,) = result.commands
    assert isinstance(request, PriceOrder) and request == saga_core.placement_price_request(order, request.issued_at)
    (reply,) = customer_core.handle(state, request, T0, CATALOG).replies
    assert isinstance(reply, OrderPriced) and reply.accepted
    assert saga_core.handle(result.saga, reply, T0, HOLD).saga.round.phase == "RESERVING"  # type: ignore[union-attr]
