from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.core import ledger as core
from tests.unit.factories import (
    T0,
    product_upserted_factory,
    stock_adjusted_factory,
    stock_counted_factory,
    stock_received_factory,
)


def fresh() -> core.SkuLedger:
    return core.new_ledger("acme", "SKU-1")


def test_received_stock_becomes_available_at_its_location() -> None:
    result = core.handle(fresh(), stock_received_factory(quantity=12, location="WH1"), T0)
    (availability,) = result.outputs
    assert [(loc.location, loc.on_hand, loc.available) for loc in availability.locations] == [("WH1", 12, 12)]
    assert result.ledger.version == 1


def test_count_sets_on_hand_to_the_physical_quantity() -> None:
    ledger = core.handle(fresh(), stock_received_factory(quantity=12), T0).ledger
    ledger = core.handle(ledger, stock_counted_factory(quantity=3), T0).ledger
    assert ledger.on_hand == {"WH1": 3}


def test_adjustment_below_zero_is_refused_with_a_reason_naming_the_movement() -> None:
    ledger = core.handle(fresh(), stock_received_factory(quantity=2), T0).ledger
    with pytest.raises(core.BusinessRuleViolation, match=r"mv-.*delta -5 at WH1 would take on_hand from 2 to -3"):
        core.handle(ledger, stock_adjusted_factory(delta=-5), T0)


def test_redelivered_movement_changes_nothing_and_republishes_the_same_availability() -> None:
    movement = stock_received_factory(quantity=4)
    first = core.handle(fresh(), movement, T0)
    again = core.handle(first.ledger, movement, T0 + timedelta(seconds=5))
    assert again.duplicate
    assert again.ledger == first.ledger
    assert again.outputs == first.outputs


def test_product_master_data_travels_with_availability() -> None:
    result = core.handle(fresh(), product_upserted_factory(description="Blue widget", lead_time_days=3), T0)
    (availability,) = result.outputs
    assert (availability.description, availability.lead_time_days) == ("Blue widget", 3)
    assert availability.locations == ()


def test_command_for_another_tenant_is_refused() -> None:
    with pytest.raises(core.BusinessRuleViolation, match="routed to ledger"):
        core.handle(fresh(), stock_received_factory(tenant_id="globex"), T0)


def test_dedup_window_is_bounded() -> None:
    ledger = fresh()
    for _ in range(10):
        ledger = core.handle(ledger, stock_received_factory(quantity=1), T0, dedup_window=4).ledger
    assert len(ledger.processed) == 4
    assert ledger.on_hand == {"WH1": 10}


movements = st.lists(
    st.one_of(
        st.builds(
            lambda q, loc: stock_received_factory(quantity=q, location=loc),
            st.integers(1, 50),
            st.sampled_from(["WH1", "WH2"]),
        ),
        st.builds(
            lambda d, loc: stock_adjusted_factory(delta=d, location=loc),
            st.integers(-60, 60).filter(bool),
            st.sampled_from(["WH1", "WH2"]),
        ),
        st.builds(
            lambda q, loc: stock_counted_factory(quantity=q, location=loc),
            st.integers(0, 40),
            st.sampled_from(["WH1", "WH2"]),
        ),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(movements)
def test_no_sequence_of_movements_makes_on_hand_negative_without_a_reported_refusal(
    seq: list[object],
) -> None:
    ledger = fresh()
    expected = {"WH1": 0, "WH2": 0}
    for movement in seq:
        try:
            result = core.handle(ledger, movement, T0)  # type: ignore[arg-type]
        except core.BusinessRuleViolation as refusal:
            assert "would take on_hand" in refusal.reason
            assert expected[movement.location] + movement.delta < 0  # type: ignore[attr-defined]
            continue
        ledger = result.ledger
        match movement:
            case core.StockReceived(quantity=q, location=loc):
                expected[loc] += q
            case core.StockCounted(quantity=q, location=loc):
                expected[loc] = q
            case core.StockAdjusted(delta=d, location=loc):
                expected[loc] += d
        assert all(v >= 0 for v in ledger.on_hand.values())
        (availability,) = result.outputs
        for loc in availability.locations:
            assert loc.available == loc.on_hand - loc.reserved - loc.soft_allocated
            assert loc.on_hand == expected[loc.location]


@settings(max_examples=100, deadline=None)
@given(movements)
def test_replaying_every_movement_twice_gives_the_same_ledger(seq: list[object]) -> None:
    once = twice = fresh()
    for movement in seq:
        try:
            once = core.handle(once, movement, T0).ledger  # type: ignore[arg-type]
        except core.BusinessRuleViolation:
            pass
        for _ in range(2):
            try:
                twice = core.handle(twice, movement, T0).ledger  # type: ignore[arg-type]
            except core.BusinessRuleViolation:
                pass
    assert once == twice
