"""The HTTP API against two real workers on the real broker: views for keys either worker owns, answered
whichever worker is asked; every auth case; bad parameters; no table dumps; lag on /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.test_orders import outcome
from tests.support import events
from tests.support.fleet import Fleet, wait_until

TOKENS = "tok-a=ta,tok-b=tb"
SKUS = [f"S{i}" for i in range(8)]
CUSTOMERS = [f"C{i}" for i in range(8)]


@pytest.fixture(scope="module")
def two_workers(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(bootstrap, Path(tmp_path_factory.mktemp("http")))
    for _ in range(2):
        fleet.add_worker(INVENTORY_API_TOKENS=TOKENS, INVENTORY_LAG_INTERVAL_S="1", INVENTORY_SESSION_TIMEOUT_S="45")
    for worker in fleet.workers:
        worker.wait_ready()
    for sku in SKUS:
        fleet.produce("products", events.product("ta", sku, unit_price="100.00"), key=events.key("ta", sku))
        fleet.produce("stock_movements", events.received("ta", sku, 40), key=events.key("ta", sku))
    for c in CUSTOMERS:
        fleet.produce("customers", events.customer("ta", c, tier="GOLD", credit_limit="5000"), key=events.key("ta", c))
    fleet.produce(
        "customer_pricing",
        events.pricing("ta", "C1", [{"sku": "S1", "customer_price": "70.00"}]),
        key=events.key("ta", "C1"),
    )
    fleet.flush()
    order = events.order("ta", "O1", "C1", [("S1", 3), ("S2", 2)])
    fleet.produce("orders", order, key=events.key("ta", "O1"))
    fleet.flush()
    outcome(fleet, "ta", "O1", "OrderInventoryAllocated", timeout=90)  # the second worker's join may rebalance
    yield fleet
    fleet.close()


def test_every_worker_answers_every_customer_view_whichever_owns_it(two_workers: Fleet) -> None:
    for worker in two_workers.workers:
        for c in CUSTOMERS:

            def view(worker=worker, c=c):  # type: ignore[no-untyped-def]
                status, body = worker.get(f"/v1/tenants/ta/customers/{c}/inventory?page_size=500", token="tok-a")
                return body if status == 200 and body["total_items"] == len(SKUS) else None

            body = wait_until(view, 30, f"{c}'s view from {worker.name}")
            assert body["customer_tier"] == "GOLD"
            prices = {i["sku"]: Decimal(i["customer_price"]) for i in body["inventory_items"]}
            assert prices["S3"] == Decimal("95.00")  # GOLD: 5 % off the list price
            if c == "C1":
                assert prices["S1"] == Decimal("70.00")
                reserved = {i["sku"]: i["reserved_quantity"] for i in body["inventory_items"]}
                assert (reserved["S1"], reserved["S2"], reserved["S3"]) == (3, 2, 0)


def test_credit_impact_counts_the_open_exposure(two_workers: Fleet) -> None:
    for worker in two_workers.workers:
        status, body = worker.get("/v1/tenants/ta/customers/C1/credit-impact?sku=S3&quantity=10", token="tok-a")
        assert status == 200, body
        # limit 5000 - open exposure (3 * 70 + 2 * 95 = 400) = 4600 available; 10 * 95 = 950
        assert (body["available_credit"], body["total_value"], body["can_process_order"]) == ("4600.00", "950.00", True)
        status, body = worker.get("/v1/tenants/ta/customers/C1/credit-impact?sku=S3&quantity=100", token="tok-a")
        assert (status, body["can_process_order"]) == (200, False)


def test_sku_availability_and_order_status_are_routed_to_their_owner(two_workers: Fleet) -> None:
    for worker in two_workers.workers:
        for sku in SKUS:
            status, body = worker.get(f"/v1/tenants/ta/skus/{sku}/availability", token="tok-a")
            assert status == 200, body
            assert body["locations"][0]["on_hand"] == 40
        status, order = worker.get("/v1/tenants/ta/orders/O1", token="tok-a")
        assert status == 200, order
        assert order["status"] == "INVENTORY_ALLOCATED"
        assert [(ln["sku"], ln["reserved"]) for ln in order["lines"]] == [("S1", 3), ("S2", 2)]


@pytest.mark.parametrize(
    ("path", "token", "status", "message"),
    [
        ("/v1/tenants/ta/skus/S1/availability", None, 401, "missing bearer token"),
        ("/v1/tenants/ta/skus/S1/availability", "nope", 401, "unknown token"),
        ("/v1/tenants/ta/skus/S1/availability", "tok-b", 403, "may not read tenant ta"),
        ("/v1/tenants/tb/customers/C1/inventory", "tok-a", 403, "may not read tenant tb"),
        ("/v1/tenants/ta/customers/C1/credit-impact?sku=S1&quantity=many", "tok-a", 400, "whole number"),
        ("/v1/tenants/ta/customers/C1/credit-impact?sku=S1", "tok-a", 400, "quantity is required"),
        ("/v1/tenants/ta/customers/C1/inventory?page_size=100000", "tok-a", 400, "page_size must be between"),
        ("/v1/tenants/ta/customers/C404/inventory", "tok-a", 404, "not known"),
        ("/v1/tenants/ta/orders/O404", "tok-a", 404, "not known"),
    ],
)
def test_auth_and_parameters_are_checked(
    two_workers: Fleet, path: str, token: str | None, status: int, message: str
) -> None:
    for worker in two_workers.workers:
        got, body = worker.get(path, token=token)
        assert (got, message in body["error"]) == (status, True), body


def test_no_endpoint_dumps_tables(two_workers: Fleet) -> None:
    worker = two_workers.workers[0]
    for path in ("/table/sku_ledger/", "/table/customers/", "/table/order_sagas/", "/v1/tenants/ta/skus/"):
        status, _ = worker.get(path, token="tok-a")
        assert status == 404, path
    status, spec = worker.get("/v1/openapi.json")
    assert status == 200 and "/v1/tenants/{tenant}/orders/{order}" in spec["paths"]


def test_lag_grows_while_a_worker_is_stopped_and_shrinks_after_it_resumes(two_workers: Fleet) -> None:
    watcher, paused = two_workers.workers
    paused.pause()
    try:
        for n in range(200):
            sku = SKUS[n % len(SKUS)]
            two_workers.produce("stock_movements", events.received("ta", sku, 1), key=events.key("ta", sku))
        two_workers.flush()
        wait_until(
            lambda: watcher.metric("inventory_consumer_lag_messages") > 0, 30, "lag to show while a worker is stopped"
        )
    finally:
        paused.resume()
    wait_until(
        lambda: watcher.metric("inventory_consumer_lag_messages") == 0, 60, "lag to drain after the worker resumed"
    )
