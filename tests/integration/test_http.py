"""The HTTP API against two real workers on the real broker: views for keys either worker owns, answered
whichever worker is asked; every auth case; bad parameters; no table dumps; lag on /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.test_orders import outcome, wait_availability
from tests.support import events
from tests.support.fleet import Fleet, wait_until

TOKENS = "tok-a=ta,tok-b=tb"
SKUS = [f"S{i}" for i in range(8)]
CUSTOMERS = [f"C{i}" for i in range(8)]


@pytest.fixture(scope="module")
def two_workers(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(bootstrap, Path(tmp_path_factory.mktemp("http")))
    try:
        for _ in range(2):
            fleet.add_worker(
                INVENTORY_API_TOKENS=TOKENS, INVENTORY_LAG_INTERVAL_S="1", INVENTORY_SESSION_TIMEOUT_S="45"
            )
        for worker in fleet.workers:
            worker.wait_ready()
        for sku in SKUS:
            fleet.produce("products", events.product("ta", sku, unit_price="100.00"), key=events.key("ta", sku))
            fleet.produce("stock_movements", events.received("ta", sku, 40), key=events.key("ta", sku))
        for c in CUSTOMERS:
            fleet.produce(
                "customers", events.customer("ta", c, tier="GOLD", credit_limit="5000"), key=events.key("ta", c)
            )
        fleet.produce(
            "customer_pricing",
            events.pricing("ta", "C1", [{"sku": "S1", "customer_price": "70.00"}]),
            key=events.key("ta", "C1"),
        )
        fleet.flush()
        # Inputs on different topics race each other: let stock and customers land before the order.
        wait_availability(fleet, "ta", dict.fromkeys(SKUS, 40))
        for c in CUSTOMERS:
            wait_until(
                lambda c=c: (
                    fleet.workers[0].get(
                        f"/v1/tenants/ta/customers/{c}/credit-impact?sku=S1&quantity=1", token="tok-a"
                    )[0]
                    == 200
                ),
                60,
                f"customer {c} and the catalog to be known",
            )
        order = events.order("ta", "O1", "C1", [("S1", 3), ("S2", 2)])
        fleet.produce("orders", order, key=events.key("ta", "O1"))
        fleet.flush()
        outcome(fleet, "ta", "O1", "OrderInventoryAllocated", timeout=60)
        yield fleet
    finally:
        fleet.close()  # also when start-up failed: no worker outlives its test


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
    # The stock movements' lag: the order and opportunity partitions always hold a few uncommitted ticks.
    watcher, paused = two_workers.workers
    movements = two_workers.names["stock_movements"]
    paused.pause()
    try:
        for n in range(200):
            sku = SKUS[n % len(SKUS)]
            two_workers.produce("stock_movements", events.received("ta", sku, 1), key=events.key("ta", sku))
        two_workers.flush()
        wait_until(
            lambda: watcher.metric("inventory_consumer_lag_messages", topic=movements) > 0,
            30,
            "lag to show while a worker is stopped",
        )
    finally:
        paused.resume()
    wait_until(
        lambda: watcher.metric("inventory_consumer_lag_messages", topic=movements) == 0,
        60,
        "lag to drain after the worker resumed",
    )


def post(worker, path: str, token: str):  # type: ignore[no-untyped-def]
    import json as _json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(worker.url(path), method="POST", data=b"")
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, _json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _json.loads(exc.read())


def test_backorder_report_and_manual_processing_span_both_workers(two_workers: Fleet) -> None:
    fleet = two_workers
    fleet.produce("products", events.product("tb", "BO", unit_price="10.00"), key=events.key("tb", "BO"))
    fleet.produce("customers", events.customer("tb", "C1", tier="BRONZE"), key=events.key("tb", "C1"))
    fleet.flush()
    wait_until(
        lambda: (
            fleet.workers[0].get("/v1/tenants/tb/customers/C1/credit-impact?sku=BO&quantity=1", token="tok-b")[0] == 200
        ),
        60,
        "tb's customer and product to be known",
    )
    for order_id, priority in (("B-low", "LOW"), ("B-urgent", "URGENT"), ("B-high", "HIGH")):
        fleet.produce(
            "orders",
            events.order("tb", order_id, "C1", [("BO", 5)], priority=priority, backorder_policy="BACKORDER"),
            key=events.key("tb", order_id),
        )
    fleet.flush()
    for order_id in ("B-low", "B-urgent", "B-high"):
        outcome(fleet, "tb", order_id, "OrderBackordered")
    fleet.produce("stock_movements", events.received("tb", "BO", 5), key=events.key("tb", "BO"))
    fleet.flush()
    outcome(fleet, "tb", "B-urgent", "OrderInventoryAllocated")
    for worker in fleet.workers:

        def report(worker=worker):  # type: ignore[no-untyped-def]
            status, body = worker.get("/v1/tenants/tb/reports/backorders", token="tok-b")
            return body if status == 200 and body["by_status"].get("FULFILLED") == 1 else None

        body = wait_until(report, 30, f"the backorder report from {worker.name}")
        assert body["total_backorders"] == 3
        assert body["by_priority"] == {"LOW": 1, "URGENT": 1, "HIGH": 1}
        assert body["by_status"] == {"PENDING": 2, "FULFILLED": 1}
        assert Decimal(body["total_value"]) == 3 * 5 * 10
        assert body["average_fulfillment_seconds"] is not None
    status, processed = post(fleet.workers[1], "/v1/tenants/tb/backorders/process", "tok-b")
    assert status == 200, processed
    assert (processed["processed_count"], processed["fulfilled_count"], processed["still_pending_count"]) == (2, 0, 2)
    assert len(processed["still_pending_backorders"]) == 2
    status, _ = post(fleet.workers[0], "/v1/tenants/tb/backorders/process", "tok-a")
    assert status == 403


def test_metrics_pass_promtool_check_metrics(two_workers: Fleet) -> None:
    import subprocess

    from tests.support.promtool import promtool as matching_promtool

    promtool = matching_promtool()  # the version docker-compose.yml's Prometheus runs
    for worker in two_workers.workers:
        status, text = worker.get("/metrics")
        assert status == 200
        for name in (
            "inventory_consumer_lag_messages",
            "inventory_events_processed_total",
            "inventory_order_allocation_seconds_bucket",
        ):
            assert name in text
        result = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
        problems = (result.stdout + result.stderr).decode()
        assert result.returncode == 0, problems


def test_opportunity_report_spans_both_workers(two_workers: Fleet) -> None:
    from tests.integration.test_opportunities import opportunity_events, upsert

    fleet = two_workers
    fleet.produce("products", events.product("tb", "OP", unit_price="20.00"), key=events.key("tb", "OP"))
    fleet.produce("stock_movements", events.received("tb", "OP", 50), key=events.key("tb", "OP"))
    fleet.flush()
    wait_availability(fleet, "tb", {"OP": 50})
    upsert(fleet, "tb", "OPP1", [("OP", 5)], probability=0.6, stage="PROPOSAL")
    upsert(fleet, "tb", "OPP2", [("OP", 5)], probability=0.1, stage="LEAD")
    upsert(fleet, "tb", "OPP3", [("OP", 2)], probability=0.8, stage="NEGOTIATION")
    opportunity_events(fleet, "tb", "OPP1", "OpportunityInventoryAllocated")
    opportunity_events(fleet, "tb", "OPP2", "OpportunityInventoryRejected")
    opportunity_events(fleet, "tb", "OPP3", "OpportunityInventoryAllocated")
    for worker in fleet.workers:
        status, report = worker.get("/v1/tenants/tb/reports/opportunities", token="tok-b")
        assert status == 200, report
        assert report["total_opportunities"] == 3
        assert report["by_stage"] == {"PROPOSAL": 1, "LEAD": 1, "NEGOTIATION": 1}
        assert report["allocation_by_sku"] == {"OP": 7}
        assert report["total_allocated_value"] == "630.00"  # the test helper prices every item at 90.00


def test_the_process_backorders_command_answers_counts_and_ids(two_workers: Fleet) -> None:
    import subprocess
    import sys

    from tests.support.broker import ROOT

    worker = two_workers.workers[0]

    def process_backorders(token: str) -> subprocess.CompletedProcess[str]:
        command = ["-m", "agents", "process-backorders", "--tenant", "tb", "--url", worker.url(""), "--token", token]
        return subprocess.run(
            [sys.executable, *command], capture_output=True, text=True, timeout=120, cwd=ROOT, env={**worker.env}
        )

    result = process_backorders("tok-b")
    assert result.returncode == 0, result.stderr
    assert "processed" in result.stdout and "still pending" in result.stdout
    denied = process_backorders("tok-a")
    assert denied.returncode == 1 and "403" in denied.stderr
