"""Results of one benchmark run: percentiles, the machine it ran on, the console table, the JSON file and
the latency chart."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
TARGETS_MS = {"order": 500, "view": 300, "fulfillment": 1000, "backorder": 2000}  # the seed's targets


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), q in 0..100."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary_ms(seconds: list[float]) -> dict[str, Any]:
    """count, p50, p95, p99, max in milliseconds."""
    ms = [s * 1000 for s in seconds]

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 1)

    return {
        "count": len(ms),
        "p50": r(percentile(ms, 50)),
        "p95": r(percentile(ms, 95)),
        "p99": r(percentile(ms, 99)),
        "max": r(max(ms) if ms else None),
    }


def rss_summary(samples: list[int]) -> dict[str, Any]:
    mib = [s / 1024 for s in samples]  # VmRSS is in kB
    return {
        "samples": len(mib),
        "max_mib": round(max(mib), 1) if mib else None,
        "median_mib": round(statistics.median(mib), 1) if mib else None,
    }


def _first_match(path: str, pattern: str) -> str | None:
    try:
        match = re.search(pattern, Path(path).read_text(), re.MULTILINE)
    except OSError:
        return None
    return match.group(1).strip() if match else None


def count_processes(marker: str, exclude: set[int]) -> int:
    """Processes whose command line contains marker (other engineers' workers, brokers): the machine is shared."""
    found = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found += 1
    return found


def machine() -> dict[str, Any]:
    mem_kb = _first_match("/proc/meminfo", r"^MemTotal:\s+(\d+)")
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _first_match("/proc/cpuinfo", r"^model name\s*:\s*(.+)$"),
        "mem_total_gib": round(int(mem_kb) / 1024 / 1024, 1) if mem_kb else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "kafka": _first_match(str(ROOT / "deploy/kafka/pom.xml"), r"<kafka\.version>(.+?)</kafka\.version>"),
        "loadavg_start": os.getloadavg(),
        "other_workers_at_start": count_processes("agents worker", {os.getpid()}),
        "other_brokers_at_start": count_processes("kafka.Kafka", {os.getpid()}),
    }


def _fmt(v: float | None, target: float | None = None) -> str:
    if v is None:
        return "-"
    text = f"{v:,.0f}" if v >= 100 else f"{v:.1f}"
    if target is not None and v > target:
        return f"[red]{text}[/red]"
    return text


def print_report(console: Console, result: dict[str, Any]) -> None:
    steps = result["steps"]
    table = Table(title="per offered load: throughput, latency (ms; red: over the seed's target) and memory")
    table.add_column("measure")
    table.add_column("target", justify="right")
    for s in steps:
        table.add_column(f"{s['offered_lines_per_s']:g} lines/s", justify="right")

    def row(name: str, target: str, cells: list[str]) -> None:
        table.add_row(name, target, *cells)

    row("offered (actual) lines/s", "", [f"{s['offered_lines_per_s_actual']:.1f}" for s in steps])
    row("achieved lines/s", "", [f"{s['achieved_lines_per_s']:.1f}" for s in steps])
    row(
        "sustained (all answered, >= 90%)",
        "",
        ["yes" if s["sustained"] else "[red]no[/red]" for s in steps],
    )
    row("orders answered", "", [f"{s['completed_orders']}/{s['orders']}" for s in steps])
    row(
        "allocated / rejected / other",
        "",
        [
            f"{s['outcomes'].get('OrderInventoryAllocated', 0)}/{s['outcomes'].get('OrderAllocationRejected', 0)}"
            f"/{s['completed_orders'] - s['outcomes'].get('OrderInventoryAllocated', 0) - s['outcomes'].get('OrderAllocationRejected', 0)}"
            for s in steps
        ],
    )
    for title, key, target in (
        ("order -> allocation", "order_latency_ms", TARGETS_MS["order"]),
        ("customer view (HTTP)", "view_latency_ms", TARGETS_MS["view"]),
        ("fulfillment started -> accepted", "fulfillment_latency_ms", TARGETS_MS["fulfillment"]),
        ("receipt -> backorder fulfilled", "backorder_latency_ms", TARGETS_MS["backorder"]),
        ("cancel -> released", "cancel_latency_ms", None),
    ):
        for q in ("p50", "p95", "p99"):
            row(
                f"{title} {q}" if q == "p50" else f"  {q}",
                f"< {target:,}" if target and q == "p50" else "",
                [_fmt(s[key][q], target) for s in steps],
            )
        row("  samples", "", [str(s[key]["count"]) for s in steps])
    row("view errors", "", [", ".join(f"{k}: {v}" for k, v in s["view_errors"].items()) or "0" for s in steps])
    row("worker RSS max MiB", "", [str(s["worker_rss"]["max_mib"]) for s in steps])
    row("worker RSS median MiB", "", [str(s["worker_rss"]["median_mib"]) for s in steps])
    row("records written per order line", "", [str(s["records_per_line"]) for s in steps])
    row("bench generator max lag ms (CPU starvation)", "", [str(s["generator_max_lag_ms"]) for s in steps])
    row("order lines per worker CPU-second", "", [str(s["lines_per_worker_cpu_s"]) for s in steps])
    workers = sorted({k for s in steps for k in s["cpu_percent"] if k.startswith("w")})
    labels = {w: f"worker {w} CPU % (of one CPU)" for w in workers}
    labels |= {
        "broker": "broker CPU %",
        "bench": "bench process CPU %",
        "machine_busy_all_cpus": "machine busy % (all CPUs)",
    }
    for name, label in labels.items():
        row(label, "", [str(s["cpu_percent"].get(name, "-")) for s in steps])
    console.print(table)

    hop_steps = [s["label"] for s in steps if s["label"] in result.get("hops", {})]
    if hop_steps:
        hop_table = Table(
            title="where an allocated order's latency goes (ms, p50 / p95 / p99 per hop, record timestamps)"
        )
        hop_table.add_column("hop")
        for s in steps:
            if s["label"] in hop_steps:
                hop_table.add_column(f"{s['offered_lines_per_s']:g} lines/s", justify="right")
        names = list(result["hops"][hop_steps[0]])
        for name in names:
            cells = []
            for label in hop_steps:
                h = result["hops"][label].get(name)
                cells.append(f"{_fmt(h['p50'])} / {_fmt(h['p95'])} / {_fmt(h['p99'])}" if h else "-")
            hop_table.add_row(name, *cells)
        console.print(hop_table)

    ceiling = result["ceiling"]
    summary = Table(title="throughput against the passthrough ceiling", show_header=True)
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    summary.add_row(
        "passthrough ceiling (confluent-kafka consume -> produce)",
        f"{ceiling['msgs_per_s']:,.0f} msgs/s ({ceiling['partitions']} partitions, "
        f"{ceiling['processes']} process(es), {ceiling['value_bytes']} B values)",
    )
    sat = result.get("saturation")
    best = result["best_sustained_lines_per_s"]
    summary.add_row("best sustained step (every order answered, >= 90% of offered)", f"{best:.1f} order lines/s")
    if sat:
        summary.add_row(
            "saturation (backlog drained as fast as possible)",
            f"{sat['achieved_lines_per_s']:.1f} order lines/s, {sat['records_per_s']:,.0f} records/s written, "
            f"workers at {sum(v for k, v in sat['cpu_percent'].items() if k.startswith('w')):.0f}% of one CPU",
        )
    summary.add_row("records the fleet writes per order line (all topics)", f"{result['records_per_line']:.1f}")
    ratio = result["ratio"]
    summary.add_row("fleet order lines/s / passthrough msgs/s", f"{ratio['lines_vs_passthrough']:.4f}")
    if ratio.get("lines_per_cpu_vs_passthrough_per_cpu"):
        summary.add_row(
            "per CPU-second: fleet lines (saturation) / passthrough msgs",
            f"{ratio['fleet_lines_per_worker_cpu_s']:,.0f} / {ratio['passthrough_msgs_per_cpu_s']:,.0f} = "
            f"{ratio['lines_per_cpu_vs_passthrough_per_cpu']:.4f}",
        )
    summary.add_row("fleet records written/s / passthrough msgs/s", f"{ratio['records_vs_passthrough']:.3f}")
    console.print(summary)
    if sat and sat.get("profile"):
        for name, prof in sat["profile"].items():
            if "percent_by_area" not in prof:
                console.print(f"[yellow]profile of {name}: {prof.get('error')}[/yellow]")
                continue
            areas = Table(title=f"worker {name} during saturation: share of py-spy samples ({prof['samples']})")
            areas.add_column("where")
            areas.add_column("%", justify="right")
            for area, pct in prof["percent_by_area"].items():
                areas.add_row(area, f"{pct:.1f}")
            console.print(areas)
    console.print(
        "[dim]One order line costs several internal messages (intake re-key, customer pricing, SKU reserve, reply,"
        " three changelogs, availability, outcome), each decoded, validated and written to RocksDB in Python:"
        " the lines/passthrough ratio is not like for like; the records ratio is closer.[/dim]"
    )
    m = result["machine"]
    console.print(
        f"[dim]machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_total_gib']} GiB, Python {m['python']}, Kafka "
        f"{m['kafka']}; load average at start {m['loadavg_start'][0]:.2f}, at end {m['loadavg_end'][0]:.2f}; "
        f"other worker processes on the machine at start: {m['other_workers_at_start']}, other brokers: "
        f"{m['other_brokers_at_start']} (shared machine: numbers vary between runs)[/dim]"
    )


def write_json(result: dict[str, Any], directory: Path, stamp: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def write_chart(result: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (make install): no chart", file=sys.stderr)
        return None
    steps = [s for s in result["steps"] if s["order_latency_ms"]["count"]]
    if not steps:
        return None
    offered = [s["offered_lines_per_s"] for s in steps]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for q, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^:")):
        ax.plot(offered, [s["order_latency_ms"][q] for s in steps], style, label=f"order -> allocation {q}")
    ax.axhline(TARGETS_MS["order"], color="red", linewidth=1, alpha=0.6, label="target 500 ms")
    for s in steps:
        ax.annotate(
            f"{s['achieved_lines_per_s']:.0f}/s",
            (s["offered_lines_per_s"], s["order_latency_ms"]["p50"]),
            textcoords="offset points",
            xytext=(0, -14),
            ha="center",
            fontsize=8,
        )
    ax.set_xlabel("offered load (order lines/s); labels: achieved lines/s")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    m = result["machine"]
    ax.set_title(
        f"inventory fleet, {result['config']['workers']} worker(s), {m['nproc']} CPUs, Kafka {m['kafka']}"
        f" - {result['started_at'][:16]} - load average {m['loadavg_start'][0]:.0f} -> {m['loadavg_end'][0]:.0f}",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
