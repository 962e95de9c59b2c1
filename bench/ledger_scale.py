"""How a SKU ledger's cost grows with its open reservations: CPU time of one ReserveStock in the pure core
and of writing its result to Quix state (agents/runtime/store.py), and the biggest record the ledger makes
there, against one JSON value; then the cost of pricing one more order for a customer with many open
orders.

    .venv/bin/python -m bench.ledger_scale [--sizes 100,1000,5000] [--repeat 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agents.core import customer as customer_core
from agents.core import ledger as core
from agents.runtime.store import customer_store, ledger_store
from agents.views import customer_views
from tests.unit.factories import (
    T0,
    customer_upserted_factory,
    price_order_factory,
    reserve_stock_factory,
    stock_received_factory,
)
from tests.unit.test_store import Partition


def _reserve(order_id: str) -> Any:
    return reserve_stock_factory(
        order_id=order_id, lines=[{"line_id": "L1", "sku": "SKU-1", "quantity": 2, "location": "WH1"}]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.ledger_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,5000", help="open reservations on the SKU")
    parser.add_argument("--repeat", type=int, default=200, help="ReserveStock commands timed per size")
    args = parser.parse_args(argv)
    console = Console()
    out = Table(title="one SKU ledger: cost of a ReserveStock by open reservations")
    columns = ("open reservations", "core handle() median ms", "p99 ms", "state write median ms", "one JSON value KB")
    for column in (*columns, "biggest record KB"):
        out.add_column(column, justify="right")
    partition = Partition(Path(tempfile.mkdtemp(prefix="ledger-scale-")))
    store = ledger_store()
    ledger = core.handle(core.new_ledger("acme", "SKU-1"), stock_received_factory(quantity=10**8), T0, 512).ledger
    held = 0
    for size in sorted(int(s) for s in args.sizes.split(",")):
        while held < size:
            ledger = core.handle(ledger, _reserve(f"O{held:07d}"), T0, 512).ledger
            with partition.state(b"acme|SKU-1") as state:
                store.put(state, b"acme|SKU-1", ledger)
            held += 1
        # Each command starts from the ledger the previous one made, as on a worker; the state write of
        # the result is timed apart from the core.
        times, writes = [], []
        for n in range(args.repeat):
            started = time.perf_counter()
            ledger = core.handle(ledger, _reserve(f"X{size}-{n}"), T0, 512).ledger
            handled = time.perf_counter()
            with partition.state(b"acme|SKU-1") as state:
                store.put(state, b"acme|SKU-1", ledger)
            times.append((handled - started) * 1000)
            writes.append((time.perf_counter() - handled) * 1000)
            held += 1
        writes.sort()
        times.sort()
        biggest = max(len(k) + len(v) for k, v in partition.records().items())
        out.add_row(
            f"{size:,}",
            f"{statistics.median(times):.3f}",
            f"{times[int(len(times) * 0.99) - 1]:.3f}",
            f"{statistics.median(writes):.3f}",
            f"{len(ledger.model_dump_json()) / 1024:,.0f}",
            f"{biggest / 1024:.1f}",
        )
    console.print(out)
    console.print(customer_table(sorted(int(s) for s in args.sizes.split(",")), args.repeat))
    return 0


def customer_table(sizes: list[int], repeat: int) -> Table:
    """The same for a customer with many open orders: pricing one more (credit checked against the open
    exposure), its view records, and the state write."""
    out = Table(title="one customer: cost of pricing an order by open orders (core, views, state write)")
    for column in ("open orders", "median ms", "p99 ms"):
        out.add_column(column, justify="right")
    partition = Partition(Path(tempfile.mkdtemp(prefix="customer-scale-")))
    store = customer_store()
    key = b"acme|CUST-1"
    catalog = {"SKU-1": customer_core.CatalogPrice(description="w", unit_price=1, unit_cost=1, lead_time_days=1)}
    state = customer_core.handle(
        customer_core.new_customer("acme", "CUST-1"), customer_upserted_factory(credit_limit=10**11), T0
    ).state

    def price(n: int) -> float:
        nonlocal state
        line = {"line_id": "L1", "sku": "SKU-1", "quantity": 1, "location": "WH1"}
        started = time.perf_counter()
        result = customer_core.handle(state, price_order_factory(order_id=f"O{n:07d}", lines=[line]), T0, catalog)
        customer_views(state, result.state)
        with partition.state(key) as tx:
            store.put(tx, key, result.state)
        state = result.state
        return (time.perf_counter() - started) * 1000

    held = 0
    for size in sizes:
        while held < size:
            price(held)
            held += 1
        times = sorted(price(held + n) for n in range(repeat))
        held += repeat
        out.add_row(f"{size:,}", f"{statistics.median(times):.3f}", f"{times[int(len(times) * 0.99) - 1]:.3f}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
