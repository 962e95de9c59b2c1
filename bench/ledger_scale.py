"""How a SKU ledger's cost grows with its open reservations: CPU time of one ReserveStock in the pure core
and of writing its result to Quix state (agents/runtime/store.py), and the biggest record the ledger makes
there, against one JSON value.

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

from agents.core import ledger as core
from agents.runtime.store import ledger_store
from tests.unit.factories import T0, reserve_stock_factory, stock_received_factory
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
