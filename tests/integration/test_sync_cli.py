"""`python -m agents sync --file F` against a real worker: snapshots in, OrderInventorySynced out, one
summary row per input line, exit code 1 when any line failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.integration.test_orders import outcome, place, reserved, setup_tenant
from tests.support import events
from tests.support.broker import ROOT
from tests.support.fleet import Fleet, wait_until


def run_sync(
    fleet: Fleet, path: Path, snapshots: list[dict[str, Any] | str], *options: str
) -> subprocess.CompletedProcess[str]:
    path.write_text("".join((s if isinstance(s, str) else json.dumps(s)) + "\n" for s in snapshots))
    env = {
        **os.environ,
        "INVENTORY_KAFKA_BOOTSTRAP": fleet.bootstrap,
        "INVENTORY_TOPICS_FILE": str(fleet.topics_file),
        "COLUMNS": "240",  # rich tables: wide enough that no cell folds
    }
    return subprocess.run(
        [sys.executable, "-m", "agents", "sync", "--file", str(path), "--timeout", "20", *options],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


def table_rows(output: str) -> list[list[str]]:
    """The cells of every row of every rich table in the output."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines() if line.count("│") >= 2]


def result_rows(output: str) -> dict[str, list[str]]:
    """Rows of the per-line results table by line number (columns: line, tenant, order, mark, result, ...)."""
    return {row[0]: row for row in table_rows(output) if len(row) == 8 and row[0].isdigit()}


def summary(output: str) -> dict[str, str]:
    return {row[0]: row[1] for row in table_rows(output) if len(row) == 2}


def test_sync_reports_every_line_and_changes_the_reservation(fleet: Fleet, tenant: str, tmp_path: Path) -> None:
    setup_tenant(fleet, tenant, {"A": 20, "B": 20})
    place(fleet, tenant, "O1", [("A", 2), ("B", 3)])
    place(fleet, tenant, "O2", [("A", 4)])
    outcome(fleet, tenant, "O1", "OrderInventoryAllocated")
    outcome(fleet, tenant, "O2", "OrderInventoryAllocated")
    assert reserved(fleet, tenant, "A") == (6, 14)

    invalid = events.snapshot(tenant, "O1", "C1", [("L1", "A", 1)])
    del invalid["order_id"]
    proc = run_sync(
        fleet,
        tmp_path / "snapshots.jsonl",
        [
            events.snapshot(tenant, "O1", "C1", [("L1", "A", 7), ("L2", "B", 3)]),  # A: 2 -> 7
            events.snapshot(tenant, "O2", "C1", [("L1", "A", 4)]),  # what the fleet holds already
            events.snapshot(tenant, "O404", "C1", [("L1", "A", 1)]),  # never placed
            invalid,
        ],
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    rows = result_rows(proc.stdout)
    assert {n: (r[2], r[4]) for n, r in rows.items()} == {
        "1": ("O1", "UPDATED"),
        "2": ("O2", "IN_SYNC"),
        "3": ("O404", "NOT_FOUND"),
        "4": ("-", "INVALID"),
    }, out
    assert "never placed" in rows["3"][7], out
    assert "order_id" in rows["4"][7] and "Field required" in rows["4"][7], out
    assert rows["4"][5] == "0", "an invalid line is never sent"
    totals = summary(proc.stdout)
    assert (totals["total"], totals["succeeded"], totals["failed"], totals["retries made"]) == ("4", "2", "2", "0")
    assert Decimal(totals["inventory value impact"]) == (7 + 3 + 4) * 60  # unit_cost 60, as held after the sync

    wait_until(lambda: reserved(fleet, tenant, "A") == (11, 9), 30, "A's reservation to follow the snapshot")
    assert reserved(fleet, tenant, "B") == (3, 17)
    reader = fleet.reader("orders")
    try:
        assert invalid["event_id"] not in {r.get("event_id") for r in reader.drain()}
    finally:
        reader.close()


def test_a_file_of_successful_snapshots_exits_0(fleet: Fleet, tenant: str, tmp_path: Path) -> None:
    setup_tenant(fleet, tenant, {"A": 20, "B": 20})
    place(fleet, tenant, "O1", [("A", 2)])
    place(fleet, tenant, "O2", [("A", 1), ("B", 1)])
    place(fleet, tenant, "O3", [("B", 5)])
    for order_id in ("O1", "O2", "O3"):
        outcome(fleet, tenant, order_id, "OrderInventoryAllocated")

    snapshots: list[dict[str, Any] | str] = [
        events.snapshot(tenant, "O1", "C1", [("L1", "A", 2)]),
        events.snapshot(tenant, "O2", "C1", [("L1", "A", 3), ("L2", "B", 1)]),
        events.snapshot(tenant, "O3", "C1", [("L1", "B", 5)], status="CANCELLED"),
        events.snapshot(tenant, "O2", "C1", [("L1", "A", 2), ("L2", "B", 1)]),  # the same order again, later
    ]
    proc = run_sync(fleet, tmp_path / "ok.jsonl", snapshots)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert {n: (r[2], r[4]) for n, r in result_rows(proc.stdout).items()} == {
        "1": ("O1", "IN_SYNC"),
        "2": ("O2", "UPDATED"),
        "3": ("O3", "CANCELLED"),
        "4": ("O2", "UPDATED"),
    }, out
    totals = summary(proc.stdout)
    assert (totals["total"], totals["succeeded"], totals["failed"]) == ("4", "4", "0")
    wait_until(
        lambda: reserved(fleet, tenant, "A") == (4, 16) and reserved(fleet, tenant, "B") == (1, 19),
        30,
        "O2's last snapshot to win and O3's hold to be released",
    )
    # The same file again, as JSON: each snapshot gets the answer it got the first time.
    again = run_sync(fleet, tmp_path / "ok.jsonl", snapshots, "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    report = json.loads(again.stdout)
    assert (report["total"], report["succeeded"], report["failed"], report["exit_code"]) == (4, 4, 0, 0)
    assert [(line["order_id"], line["result"]) for line in report["lines"]] == [
        ("O1", "IN_SYNC"),
        ("O2", "UPDATED"),
        ("O3", "CANCELLED"),
        ("O2", "UPDATED"),
    ]
