"""Workers killed at random points under load, restarted, added and removed: after each run the checker
finds nothing oversold, one outcome per order, sums that reconcile and every input accounted for."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from tests.faults.conftest import scaled, settle_and_audit, start_load
from tests.support.fleet import Fleet, wait_until


def test_sigkill_at_random_points_under_load_many_times(fleet_factory: Callable[..., Fleet]) -> None:
    fleet = fleet_factory()
    workers = [fleet.add_worker(), fleet.add_worker()]
    for worker in workers:
        worker.wait_ready()
    load = start_load(fleet, rate=15).start()
    rng = random.Random(3)
    kills = scaled(6)
    for _ in range(kills):
        time.sleep(rng.uniform(1.0, 5.0))  # the load keeps running; this picks a random point to strike
        victim = rng.choice(workers)
        victim.kill()
        victim.start()
    load.stop()
    for worker in workers:
        worker.wait_ready(timeout=120)
    verdict = settle_and_audit(fleet, load, timeout=240)
    assert len(verdict.outcomes) >= 50, "the run placed too few orders to mean anything"


def test_three_workers_one_killed_one_added_one_stopped_under_load(fleet_factory: Callable[..., Fleet]) -> None:
    fleet = fleet_factory()
    workers = [fleet.add_worker() for _ in range(3)]
    for worker in workers:
        worker.wait_ready()
    load = start_load(fleet, rate=15).start()
    time.sleep(4)
    workers[0].kill()  # gone for good: its partitions move once its session times out
    time.sleep(2)
    added = fleet.add_worker()
    added.wait_ready(timeout=120)
    time.sleep(4)
    workers[1].stop()  # a clean leave: an immediate rebalance
    time.sleep(4)
    load.stop()

    def took_over() -> bool:
        return added.metric("inventory_assigned_partitions") > 0

    wait_until(took_over, 60, "the added worker to own partitions")
    verdict = settle_and_audit(fleet, load, timeout=240)
    assert len(verdict.outcomes) >= 50


def test_static_member_restarted_right_after_sigkill_resumes_work(fleet_factory: Callable[..., Fleet]) -> None:
    """The known issue of issue 2: a static member (INVENTORY_MEMBER_ID) restarted right after a SIGKILL
    must fetch again, every time."""
    fleet = fleet_factory()
    worker = fleet.add_worker(INVENTORY_MEMBER_ID="static-w1", INVENTORY_SESSION_TIMEOUT_S="30")
    worker.wait_ready()
    load = start_load(fleet, rate=10).start()
    reader = fleet.reader("allocations")
    try:
        for round_ in range(scaled(4)):
            time.sleep(2)
            worker.kill()
            worker.start()
            worker.wait_ready(timeout=120)
            seen = len(reader.drain())
            reader.wait_for(lambda r: True, count=seen + 5, timeout=60, what=f"new outcomes after restart {round_ + 1}")
    finally:
        reader.close()
    load.stop()
    settle_and_audit(fleet, load, timeout=180)
