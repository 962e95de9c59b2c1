"""agents/core/lineage.py: the keys an edit changed, and aggregates carried from a dict to its edit, must
equal a full comparison and a full recount, whichever versions are asked for and in what order (a
command's result may be thrown away and its base used again)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.core import customer as core
from agents.core import lineage
from tests.unit.factories import T0, customer_upserted_factory, price_order_factory, release_credit_factory
from tests.unit.test_customer_credit import CATALOG

keys = st.sampled_from("abcdefgh")
edits = st.lists(
    st.tuples(
        st.integers(0, 5),  # which earlier version to edit (0: the newest)
        st.dictionaries(keys, st.integers(-3, 9), max_size=3),
        st.lists(keys, max_size=2),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(edits)
def test_carried_sums_and_changes_equal_a_recount_on_any_branch(steps: list[Any]) -> None:
    total: lineage.Carried[str, int, int] = lineage.Carried(
        lambda d: sum(d.values()), lambda t, _k, old, new: t - (old or 0) + (new or 0), kept=16
    )

    def bump(counts: dict[int, int], _k: str, old: int | None, new: int | None) -> dict[int, int]:
        for sign, value in ((-1, old), (1, new)):
            if value is not None:
                counts[value] = counts.get(value, 0) + sign
                if not counts[value]:
                    del counts[value]
        return counts  # changed in place: handed on, so the base's must be rebuilt when asked again

    def recount(d: dict[str, int]) -> dict[int, int]:
        out: dict[int, int] = {}
        for value in d.values():
            out[value] = out.get(value, 0) + 1
        return out

    counts: lineage.Carried[str, int, dict[int, int]] = lineage.Carried(recount, bump, kept=16)
    versions: list[dict[str, int]] = [{}]
    for back, put, drop in steps:
        base = versions[max(0, len(versions) - 1 - back)]
        assert total(base) == sum(base.values()) and counts(base) == recount(base)
        new = lineage.edited(base, put, drop)
        assert total(new) == sum(new.values()) and counts(new) == recount(new)
        differ = {k for k in set(base) | set(new) if base.get(k) != new.get(k)}
        changed = lineage.changes(base, new)
        assert changed is not None and differ <= changed <= set(base) | set(new)
        versions.append(new)
    for v in versions:  # every version, after all the hand-overs
        assert total(v) == sum(v.values()) and counts(v) == recount(v)


def test_changes_are_unknown_between_unrelated_dicts() -> None:
    a, b = {"x": 1}, {"x": 1}
    assert lineage.changes(a, b) is None
    assert lineage.changes(a, a) == set()


commands = st.lists(
    st.tuples(st.booleans(), st.integers(0, 7), st.sampled_from(["SKU-1", "SKU-2", "SKU-3"]), st.integers(1, 5)),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(commands)
def test_a_customers_exposure_and_holds_follow_every_order(steps: list[Any]) -> None:
    state = core.handle(core.new_customer("acme", "CUST-1"), customer_upserted_factory(credit_limit=10**6), T0).state
    for price, n, sku, quantity in steps:
        if price:
            line = {"line_id": "L1", "sku": sku, "quantity": quantity, "location": "WH1"}
            command: Any = price_order_factory(order_id=f"O{n}", lines=[line])
        else:
            command = release_credit_factory(order_id=f"O{n}")
        state = core.handle(state, command, T0, CATALOG).state
        assert state.open_exposure == sum(state.exposures.values(), Decimal(0))
        for s in ("SKU-1", "SKU-2", "SKU-3"):
            assert core.reserved_for(state, s) == sum(h.get(s, 0) for h in state.holds.values())
