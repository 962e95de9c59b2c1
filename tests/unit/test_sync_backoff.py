"""The retry schedule of `python -m agents sync`, and its input handling without a broker."""

from __future__ import annotations

import io
import json

import pytest

from agents.sync import UnreadableLine, _validate, backoff_delay, backoff_schedule, read_snapshots
from tests.support import events


def test_backoff_starts_at_half_a_second_and_doubles() -> None:
    assert backoff_schedule(5) == [0.5, 1.0, 2.0, 4.0]


def test_backoff_is_capped() -> None:
    assert backoff_schedule(8, cap=10.0) == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_delay(1000) == 10.0


def test_one_attempt_means_no_waits() -> None:
    assert backoff_schedule(1) == []


def test_retry_numbers_start_at_one() -> None:
    with pytest.raises(ValueError):
        backoff_delay(0)


def test_every_line_is_kept_and_only_valid_distinct_snapshots_are_sent() -> None:
    good = events.snapshot("acme", "O1", "C1", [("L1", "A", 1)])
    placed = events.order("acme", "O2", "C1", [("A", 1)])
    no_order = {k: v for k, v in events.snapshot("acme", "O3", "C1", []).items() if k != "order_id"}

    text = "\n".join([json.dumps(good), "{not json", "", json.dumps(placed), json.dumps(no_order), json.dumps(good)])
    entries, numbers = read_snapshots(io.StringIO(text))
    assert numbers == [1, 2, 4, 5, 6]  # the blank line 3 holds nothing
    assert isinstance(entries[1], UnreadableLine)
    items, errors = _validate(entries, numbers)
    assert [i.line for i in items] == [1]
    assert {e.line: e.result for e in errors} == {2: "INVALID", 4: "INVALID", 5: "INVALID", 6: "DUPLICATE"}
    assert "OrderSnapshot" in next(e.message for e in errors if e.line == 4)
    assert "order_id" in next(e.message for e in errors if e.line == 5)
