"""The demo feed of `make run` and the `produce` command, as a user runs them, against a live worker."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support import events
from tests.support.broker import ROOT
from tests.support.fleet import Fleet


def test_the_demo_feeds_the_fleet_and_shows_its_outcomes(fleet_factory: Callable[[], Fleet]) -> None:
    fleet = fleet_factory()
    worker = fleet.add_worker()
    worker.wait_ready()
    shown = subprocess.run(
        [sys.executable, "-m", "agents", "demo", "--seconds", "20"],
        env={**worker.env, "COLUMNS": "160"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "Order outcomes" in shown.stdout and "Availability (latest per SKU)" in shown.stdout
    reader = fleet.reader("allocations", "availability")
    try:
        records = reader.wait_for(lambda r: r["tenant_id"] in ("acme", "globex"), count=10, timeout=60)
    finally:
        reader.close()
    kinds = {r["event_type"] for r in records}
    assert "SkuAvailability" in kinds and any(k.startswith("Order") for k in kinds), kinds


def test_produce_sends_a_file_of_json_lines(fleet_factory: Callable[[], Fleet], tmp_path: Path, tenant: str) -> None:
    fleet = fleet_factory()
    worker = fleet.add_worker()
    worker.wait_ready()
    feed = tmp_path / "movements.jsonl"
    feed.write_text("\n".join(json.dumps(events.received(tenant, f"P{n}", 3)) for n in range(3)) + "\n")
    sent = subprocess.run(
        [sys.executable, "-m", "agents", "produce", "stock_movements", str(feed)],
        env=worker.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    assert "sent 3 events" in sent.stdout
    reader = fleet.reader("availability")
    try:
        reader.wait_for(lambda r: r["tenant_id"] == tenant, count=3, what="availability of the produced SKUs")
    finally:
        reader.close()
