"""agents/ops.py: the readiness rule (what makes a worker unready, and what does not) and the freshness
the views carry."""

from __future__ import annotations

import time

import pytest

from agents.ops import READ_MODELS_STALL_S, readiness
from agents.readmodels import ReadModels, _Partition
from tests.unit.test_http_api import TOPOLOGY, A, Readiness, app_for, fetch, settings, world


@pytest.mark.parametrize(
    ("running", "assigned", "caught_up", "stalled_for", "unready_because"),
    [
        (True, True, True, 0.1, []),
        (True, True, True, None, []),  # the thread not started (unit tests): nothing says it is stuck
        (True, True, True, READ_MODELS_STALL_S - 1, []),  # a slow round is not a stuck consumer
        (False, True, True, 0.1, ["processors are not running"]),  # starting, or stopping
        (True, False, False, 0.1, ["not assigned the view topics"]),  # no broker yet
        (True, True, False, 0.1, ["not caught up", "(7 messages behind)"]),  # the read models' recovery
        (True, True, True, READ_MODELS_STALL_S, ["has not polled for 30 s"]),  # stuck past the bound
        (False, False, False, READ_MODELS_STALL_S + 5, ["not running", "not assigned", "not polled for 35 s"]),
    ],
)
def test_the_readiness_rule(
    running: bool, assigned: bool, caught_up: bool, stalled_for: float | None, unready_because: list[str]
) -> None:
    reasons = readiness(running, assigned, caught_up, stalled_for, behind=7)
    text = " | ".join(reasons)
    assert bool(reasons) == bool(unready_because), text
    for words in unready_because:
        assert words in text


def test_being_behind_after_the_first_catch_up_keeps_a_worker_ready() -> None:
    """What a rebalance does to a ready worker: its processing pauses and its views lag the log; it stays
    ready (the rule has no input about the consumer group at all) and says how far behind it is."""
    rm = Readiness(settings(), TOPOLOGY, caught_up=True)
    rm._partitions = {("availability", 0): _Partition("availability", 0, high=120, target=10, next=20)}
    status, body, _ = fetch(app_for(rm), "/readyz")
    assert (status, body["ready"], body["messages_behind"]) == (200, True, 100)


def test_a_stuck_read_models_consumer_makes_the_worker_unready() -> None:
    rm = Readiness(settings(), TOPOLOGY, caught_up=True)
    rm._polled_at = time.monotonic() - READ_MODELS_STALL_S - 1
    status, body, _ = fetch(app_for(rm), "/readyz")
    assert (status, body["ready"]) == (503, False)
    assert any("has not polled" in r for r in body["reasons"]), body
    assert body["read_models_polled_s_ago"] >= READ_MODELS_STALL_S
    rm._polled_at = time.monotonic()  # it goes round again: ready again
    status, body, _ = fetch(app_for(rm), "/readyz")
    assert (status, body["ready"]) == (200, True), body


def test_views_say_how_fresh_they_are() -> None:
    rm = world(ReadModels(settings(), TOPOLOGY))
    rm._last_message_at = 1_800_000_000.0
    status, _, headers = fetch(app_for(rm), "/v1/tenants/ta/orders/O1", headers=A)
    assert status == 200
    assert headers["X-Read-Models-Behind"] == "0"
    assert headers["X-Read-Models-Last-Read-At"] == "2027-01-15T08:00:00+00:00"
    _, _, probe_headers = fetch(app_for(rm), "/healthz")
    assert "X-Read-Models-Behind" not in probe_headers  # only the views
