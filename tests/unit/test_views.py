"""agents/views.py: the customer's `reserved` records say the new total of every SKU whose total changed,
and only those, however many open orders the customer holds."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.core.customer import CustomerState, reserved_for
from agents.views import customer_views

holds = st.dictionaries(
    st.sampled_from([f"O{n}" for n in range(8)]),
    st.dictionaries(st.sampled_from(["A", "B", "C", "D"]), st.integers(1, 5), min_size=1, max_size=3),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(holds, holds)
def test_reserved_records_are_the_changed_totals(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> None:
    old = CustomerState(tenant_id="acme", customer_id="C1", holds=before)
    new = old.model_copy(update={"holds": after})
    records = [json.loads(v) for topic, _, v in customer_views(old, new) if json.loads(v)["record"] == "reserved"]
    expected = {
        sku: reserved_for(new, sku) for sku in ("A", "B", "C", "D") if reserved_for(new, sku) != reserved_for(old, sku)
    }
    assert {r["sku"]: r["quantity"] for r in records} == expected
