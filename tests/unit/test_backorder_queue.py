"""The backorder queue of a SKU ledger: filled in order (priority, then tier, then age), never beyond the
stock that arrives, and whatever the receipts, every queued line ends reserved exactly once."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.core import ledger as core
from agents.core.commands import BackorderFilled
from tests.unit.factories import T0, reserve_stock_factory, stock_received_factory

PRIORITIES = ["LOW", "MEDIUM", "HIGH", "URGENT"]
TIERS = ["BRONZE", "SILVER", "GOLD", "PLATINUM"]

backorders = st.lists(
    st.tuples(st.sampled_from(PRIORITIES), st.sampled_from(TIERS), st.integers(0, 1000), st.integers(1, 9)),
    min_size=1,
    max_size=12,
)


def queue(entries: list[tuple[str, str, int, int]]) -> core.SkuLedger:
    ledger = core.new_ledger("acme", "SKU-1")
    for n, (priority, tier, age, quantity) in enumerate(entries):
        command = reserve_stock_factory(
            order_id=f"O{n}",
            lines=[{"line_id": "L1", "sku": "SKU-1", "quantity": quantity, "location": "WH1"}],
            backorder=True,
            priority=priority,
            tier=tier,
            ordered_at=T0 + timedelta(seconds=age),
        )
        ledger = core.handle(ledger, command, T0).ledger
    return ledger


def expected_order(entries: list[tuple[str, str, int, int]]) -> list[str]:
    ranked = sorted(
        range(len(entries)),
        key=lambda n: (-PRIORITIES.index(entries[n][0]), -TIERS.index(entries[n][1]), entries[n][2], f"O{n}"),
    )
    return [f"O{n}" for n in ranked]


@settings(max_examples=150, deadline=None)
@given(backorders, st.lists(st.integers(1, 15), min_size=1, max_size=8))
def test_receipts_fill_the_queue_in_priority_tier_age_order_and_never_beyond_stock(
    entries: list[tuple[str, str, int, int]], receipts: list[int]
) -> None:
    ledger = queue(entries)
    assert [q.order_id for q in ledger.backorders] == expected_order(entries)
    filled: list[str] = []
    received = 0
    for quantity in receipts:
        result = core.handle(ledger, stock_received_factory(quantity=quantity), T0)
        ledger = result.ledger
        received += quantity
        filled += [r.order_id for r in result.replies if isinstance(r, BackorderFilled)]
        reserved = ledger.committed("WH1", "ORDER")
        assert reserved <= ledger.on_hand["WH1"]  # never oversold
        waiting = sum(q.quantity for q in ledger.backorders)
        total = sum(e[3] for e in entries)
        assert reserved == min(received, total) and waiting == total - reserved
    # Filled orders are a prefix of the queue order: nobody behind waits less than somebody ahead.
    assert filled == expected_order(entries)[: len(filled)]
    # Only the head of what still waits may be partly reserved.
    partial = [q for q in ledger.backorders if ledger.reservations.get(core.reservation_id(q.order_id, "L1"))]
    assert len(partial) <= 1 and (not partial or partial[0] == ledger.backorders[0])


@settings(max_examples=100, deadline=None)
@given(backorders)
def test_each_backordered_line_is_filled_once_however_the_stock_arrives(
    entries: list[tuple[str, str, int, int]],
) -> None:
    ledger = queue(entries)
    filled: list[str] = []
    for _ in range(sum(e[3] for e in entries)):  # one unit at a time, plus the same receipt redelivered
        movement = stock_received_factory(quantity=1)
        for _ in range(2):
            result = core.handle(ledger, movement, T0)
            ledger = result.ledger
            filled += [r.order_id for r in result.replies if isinstance(r, BackorderFilled) and not result.duplicate]
    assert sorted(filled) == sorted(f"O{n}" for n in range(len(entries)))
    assert ledger.backorders == ()
    assert ledger.committed("WH1", "ORDER") == ledger.on_hand["WH1"] == sum(e[3] for e in entries)
