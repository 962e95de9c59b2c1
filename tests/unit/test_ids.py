"""Composite ids: no two distinct tuples of parts may meet, whatever characters the parts hold."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.core import ledger
from agents.core.events import InvalidEvent, check_tenant_key
from agents.core.ids import NAMESPACE, compose, decompose, event_id

parts = st.lists(st.text(), min_size=0, max_size=5)


@given(parts, parts)
def test_distinct_tuples_never_compose_to_the_same_id(a: list[str], b: list[str]) -> None:
    if a != b:
        assert compose(*a) != compose(*b)
        assert event_id(*a) != event_id(*b)


@given(st.lists(st.one_of(st.text(), st.integers(), st.booleans()), max_size=5))
def test_event_ids_are_the_uuid5_of_the_composed_parts(a: list[object]) -> None:
    """The fast path must give the ids earlier versions gave (uuid.uuid5), or a redelivery after an
    upgrade would publish the same outcome under a new id."""
    assert event_id(*a) == str(uuid.uuid5(NAMESPACE, compose(*(str(p) for p in a))))


@given(parts)
def test_decompose_gives_back_the_parts(a: list[str]) -> None:
    assert decompose(compose(*a)) == tuple(a)


@given(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1), st.text(min_size=1))
def test_two_order_lines_never_share_a_reservation(o1: str, l1: str, o2: str, l2: str) -> None:
    if (o1, l1) != (o2, l2):
        assert ledger.reservation_id(o1, l1) != ledger.reservation_id(o2, l2)


def test_a_slash_in_an_id_no_longer_merges_two_lines() -> None:
    # order "A/B" line "C" and order "A" line "B/C" were both "A/B/C" once
    assert ledger.reservation_id("A/B", "C") != ledger.reservation_id("A", "B/C")


def test_an_order_reservation_never_looks_like_a_soft_hold() -> None:
    assert ledger.reservation_id("opportunity", "x") != ledger.soft_reservation_id("x", "")
    assert ledger.reservation_id("O", "L")[0].isdigit()


@pytest.mark.parametrize("bad", ["abc", "3:ab", "x:1", "-1:"])
def test_decompose_refuses_what_compose_never_made(bad: str) -> None:
    with pytest.raises(ValueError):
        decompose(bad)


@pytest.mark.parametrize("key", [None, b"", b"ta:O1", b"ta:has:colons", b"no-tenant-named", b"\xff\xfe:x"])
def test_a_key_that_names_the_body_tenant_or_none_is_accepted(key: bytes | None) -> None:
    check_tenant_key(key, "ta")


@pytest.mark.parametrize("key", [b"tb:O1", b":O1", b"TA:O1", b"t:a:O1"])
def test_a_key_naming_another_tenant_is_refused(key: bytes) -> None:
    with pytest.raises(InvalidEvent) as refused:
        check_tenant_key(key, "ta")
    assert refused.value.error == "TenantMismatch"
    assert "ta" in refused.value.reason
