"""The SKU ledger's index (units held per location and kind, reservations per owner) is carried from one
ledger version to the next in O(changes), and the state store writes only the reservations that changed.
Both shortcuts must give exactly what a full recount and a full comparison give: any command sequence,
checked after every command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.core import ledger as core
from agents.core import lineage
from agents.core.commands import ConsumeStock, SoftRelease, SoftReserve
from agents.runtime.store import ledger_store
from tests.unit.factories import (
    T0,
    product_upserted_factory,
    release_stock_factory,
    reserve_stock_factory,
    stock_counted_factory,
    stock_received_factory,
)
from tests.unit.test_store import Partition

LOCATIONS = ("WH1", "WH2")
ORDERS = tuple(f"ORD-{n}" for n in range(6))
OPPORTUNITIES = ("OPP-1", "OPP-2")

lines = st.lists(st.tuples(st.sampled_from(LOCATIONS), st.integers(1, 4)), min_size=1, max_size=3)
ops = st.one_of(
    st.tuples(
        st.just("reserve"), st.sampled_from(ORDERS), lines, st.booleans(), st.sampled_from((None, *OPPORTUNITIES))
    ),
    st.tuples(st.just("release"), st.sampled_from(ORDERS)),
    st.tuples(st.just("consume"), st.sampled_from(ORDERS), st.integers(1, 3)),
    st.tuples(st.just("soft"), st.sampled_from(OPPORTUNITIES), lines),
    st.tuples(st.just("soft_release"), st.sampled_from(OPPORTUNITIES)),
    st.tuples(st.just("receive"), st.sampled_from(LOCATIONS), st.integers(1, 8)),
    st.tuples(st.just("count"), st.sampled_from(LOCATIONS), st.integers(0, 6)),
)


def command(op: tuple[Any, ...], n: int) -> Any:
    common = {"command_id": f"c{n}", "tenant_id": "acme", "issued_at": T0, "sku": "SKU-1"}
    match op:
        case ("reserve", order, items, backorder, opportunity):
            return reserve_stock_factory(
                **common,
                order_id=order,
                lines=[
                    {"line_id": f"L{i}", "sku": "SKU-1", "quantity": q, "location": loc}
                    for i, (loc, q) in enumerate(items)
                ],
                backorder=backorder,
                opportunity_id=opportunity,
            )
        case ("release", order):
            return release_stock_factory(**common, order_id=order)
        case ("consume", order, quantity):
            line = {"line_id": "L0", "sku": "SKU-1", "quantity": quantity, "location": "WH1"}
            return ConsumeStock(**common, order_id=order, fulfillment_id=f"F{n}", lines=[line])
        case ("soft", opportunity, items):
            held = [{"location": loc, "quantity": q} for loc, q in dict(items).items()]
            return SoftReserve(**common, opportunity_id=opportunity, lines=held, probability=0.5)
        case ("soft_release", opportunity):
            return SoftRelease(**common, opportunity_id=opportunity, reason="CLOSED_LOST")
        case ("receive", location, quantity):
            return stock_received_factory(location=location, quantity=quantity)
        case ("count", location, quantity):
            return stock_counted_factory(location=location, quantity=quantity)
    raise AssertionError(op)


def recount(ledger: core.SkuLedger) -> Any:
    return core._Index(ledger.reservations).snapshot()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(ops, max_size=40))
def test_the_carried_index_and_the_changed_entries_equal_a_full_recount(tmp_path_factory: Any, steps: list) -> None:
    folder: Path = tmp_path_factory.mktemp("ledger")
    partition = Partition(folder / "db")
    store = ledger_store(window=16)
    key = b"acme|SKU-1"
    ledger = core.handle(core.new_ledger("acme", "SKU-1"), product_upserted_factory(), T0).ledger
    with partition.state(key) as state:
        store.put(state, key, ledger)
    try:
        for n, op in enumerate(steps):
            try:
                ledger = core.handle(ledger, command(op, n), T0, dedup_window=16).ledger
            except core.BusinessRuleViolation:
                continue
            assert core._index(ledger).snapshot() == recount(ledger), f"after {op}"
            for loc in LOCATIONS:
                held = sum(r.quantity for r in ledger.reservations.values() if r.location == loc)
                assert ledger.committed(loc, "ORDER") + ledger.committed(loc, "OPPORTUNITY") == held
            with partition.state(key) as state:
                store.put(state, key, ledger)
        partition = partition.reopen()
        with partition.state(key) as state:
            stored = ledger_store(window=16).get(state, key)  # no cache: every record read back
        assert stored is not None
        assert stored.reservations == ledger.reservations
        assert stored.backorders == ledger.backorders and stored.on_hand == ledger.on_hand
    finally:
        partition.db.close()


def test_a_ledger_whose_index_was_handed_on_still_answers_from_a_recount() -> None:
    """A command's result may be thrown away (a refusal, a crash): the ledger it started from must still
    give the right sums although its index went to the new version."""
    ledger = core.handle(core.new_ledger("acme", "SKU-1"), stock_received_factory(quantity=10), T0).ledger
    first = core.handle(ledger, reserve_stock_factory(order_id="ORD-1"), T0).ledger
    second = core.handle(first, reserve_stock_factory(order_id="ORD-2"), T0).ledger
    assert (first.committed("WH1", "ORDER"), second.committed("WH1", "ORDER")) == (1, 2)
    assert list(core.order_reservations(first, "ORD-2")) == []
    assert lineage.changes(ledger.reservations, second.reservations) == {
        core.reservation_id("ORD-1", "L1"),
        core.reservation_id("ORD-2", "L1"),
    }
    assert lineage.changes(second.reservations, ledger.reservations) is None
