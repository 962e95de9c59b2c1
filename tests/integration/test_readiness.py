"""Readiness through rebalances, on the real broker: two workers of one group, the second started and then
stopped (two rebalances, partitions and their changelog state moving each time), both /readyz polled all
along. The worker that was ready stays ready at every sample, the joining one becomes ready, and the views
answered meanwhile say how fresh they are (agents/ops.py, the readiness rule)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_orders import wait_availability
from tests.support import events
from tests.support.fleet import Fleet, Worker, free_port, wait_until

pytestmark = pytest.mark.broker

TOKENS = "tok-a=ta"
SKUS = [f"R{i}" for i in range(12)]
PROBE_TIMEOUT_S = 3.0  # the StatefulSet's readinessProbe timeoutSeconds


def probe(worker: Worker) -> bool:
    """One readiness probe, as the kubelet makes it: 200 within the timeout, or not ready."""
    try:
        with urllib.request.urlopen(worker.url("/readyz"), timeout=PROBE_TIMEOUT_S) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


class Sampler(threading.Thread):
    """Probes every worker's /readyz every 0.2 s until stopped; `samples` is [(time, {name: ready})]."""

    def __init__(self, workers: list[Worker]) -> None:
        super().__init__(name="readyz-sampler", daemon=True)
        self.workers = workers
        self.samples: list[tuple[float, dict[str, bool]]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            self.samples.append((time.monotonic(), {w.name: probe(w) for w in self.workers}))

    def stop(self) -> list[tuple[float, dict[str, bool]]]:
        self.stopping.set()
        self.join(10)
        return self.samples


def test_a_rebalance_never_makes_every_worker_unready(bootstrap: str, tmp_path: Path) -> None:
    fleet = Fleet(bootstrap, tmp_path)
    sampler: Sampler | None = None
    try:
        env = {"INVENTORY_API_TOKENS": TOKENS, "INVENTORY_SESSION_TIMEOUT_S": "10"}
        first = fleet.add_worker(**env)
        first.wait_ready()
        for sku in SKUS:  # state on every SKU-ledger partition, so a moved partition recovers something
            fleet.produce("products", events.product("ta", sku, unit_price="10.00"), key=events.key("ta", sku))
            fleet.produce("stock_movements", events.received("ta", sku, 5), key=events.key("ta", sku))
        fleet.flush()
        wait_availability(fleet, "ta", dict.fromkeys(SKUS, 5))
        wait_until(lambda: first.metric("inventory_assigned_partitions") > 0, 30, "the first worker's assignment")
        owned_alone = first.metric("inventory_assigned_partitions")
        rebalances = first.metric("inventory_rebalances_total")

        port = free_port()  # the second worker is made here, not started: the sampler probes it from before
        second = Worker("w2", fleet.env(2, port, **env), tmp_path / "worker-2.log", port)
        fleet.workers.append(second)
        sampler = Sampler([first, second])
        sampler.start()
        wait_until(lambda: sampler is not None and len(sampler.samples) >= 3, 10, "the first samples")

        second.start()  # joins the group: a rebalance moves partitions (and their changelogs) to it
        second.wait_ready()
        wait_until(
            lambda: (
                first.metric("inventory_rebalances_total") > rebalances
                and 0 < first.metric("inventory_assigned_partitions") < owned_alone
                and second.metric("inventory_assigned_partitions") > 0
            ),
            60,
            "the rebalance that gives the second worker partitions",
        )
        status, _, headers = _view(first, f"/v1/tenants/ta/skus/{SKUS[0]}/availability")
        assert status == 200
        assert int(headers["X-Read-Models-Behind"]) >= 0 and headers["X-Read-Models-Last-Read-At"]

        rebalances = first.metric("inventory_rebalances_total")
        second.stop()  # leaves the group: its partitions move back to the first worker
        wait_until(
            lambda: (
                first.metric("inventory_rebalances_total") > rebalances
                and first.metric("inventory_assigned_partitions") == owned_alone
            ),
            60,
            "the rebalance that gives the first worker every partition back",
        )
        samples = sampler.stop()
    finally:
        if sampler is not None:
            sampler.stop()
        fleet.close()

    assert len(samples) > 50, f"only {len(samples)} samples"
    never_ready = [(t, s) for t, s in samples if not any(s.values())]
    assert not never_ready, f"{len(never_ready)} of {len(samples)} samples had no ready worker: {never_ready[:5]}"
    first_unready = [t for t, s in samples if not s["w1"]]
    assert not first_unready, f"the ready worker went unready in {len(first_unready)} of {len(samples)} samples"
    assert any(s["w2"] for _, s in samples), "the joining worker never became ready"
    assert not samples[0][1]["w2"] and not samples[-1][1]["w2"], "w2 was probed before it started and after"


def _view(worker: Worker, path: str) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(worker.url(path), headers={"Authorization": "Bearer tok-a"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read(), dict(response.headers)
