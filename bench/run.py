"""`make bench`: run the fleet on a local broker under realistic traffic at chosen rates and report
throughput, end-to-end latencies, worker memory and the ratio to a plain Kafka passthrough.

    .venv/bin/python -m bench.run --rates 50,100,200 --seconds 30 --workers 1
    .venv/bin/python bench/run.py --rates 20 --seconds 5          # a quick smoke run

Steps, in one process: start a broker of its own (unless --bootstrap), measure the passthrough ceiling,
start the workers on fresh suffixed topics (tests/support/fleet.py), load tenants/catalogs/customers and
stock, warm up, then one step per offered rate (open-loop Poisson arrivals of multi-line orders with
cancellations, receipts and fulfillments, backorder probes, customer-view requests and RSS sampling),
then a saturation step (a backlog drained as fast as the fleet can). Latency is from the time the bench
produced the upstream record to the time it read the outcome from the output topic.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from agents.kafka_io import make_producer
from agents.topology import load_topology
from bench import ceiling, hops, profile, report
from bench.traffic import INITIAL_STOCK, PlannedOrder, Traffic
from tests.support import events
from tests.support.fleet import Fleet, wait_until

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"
PLACEMENT_OUTCOMES = {
    "OrderInventoryAllocated",
    "OrderAllocationRejected",
    "OrderBackordered",
    "OrderInventoryReleased",
}
FULFILLMENT_OUTCOMES = {"FulfillmentAccepted", "FulfillmentRejected"}


# ---------------------------------------------------------------------------------------------------- records


@dataclass
class Timed:
    """One request whose answer we wait for on an output topic: sent (bench clock) and answered."""

    step: str
    sent: float
    done: float | None = None
    done_record_ts: float | None = None  # the output record's own timestamp (when the worker produced it)
    outcome: str | None = None
    lines: int = 0
    order: PlannedOrder | None = None

    def latency(self) -> float | None:
        return None if self.done is None else self.done - self.sent


@dataclass
class Tracker:
    """Reads allocations, fulfillments and backorders in a thread and matches them to what was sent."""

    bootstrap: str
    names: dict[str, str]
    scheduler: Scheduler
    lock: threading.Lock = field(default_factory=threading.Lock)
    orders: dict[str, Timed] = field(default_factory=dict)
    cancels: dict[str, Timed] = field(default_factory=dict)
    fulfillments: dict[str, Timed] = field(default_factory=dict)
    backorders: dict[str, Timed] = field(default_factory=dict)  # order id -> receipt -> BackorderFulfilled
    outputs_read: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"bench-tracker-{os.getpid()}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        topics = [self.names[t] for t in ("allocations", "fulfillments", "backorders")]
        metadata = self.consumer.list_topics(timeout=10)
        self.consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in metadata.topics[t].partitions]
        )
        self.kind = {self.names[t]: t for t in ("allocations", "fulfillments", "backorders")}
        self.thread = threading.Thread(target=self._run, name="tracker", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            # poll() returns on the first record; consume(n, timeout) would wait for n records or the whole
            # timeout and add about half of it to every latency measured.
            first = self.consumer.poll(0.05)
            batch = [first, *self.consumer.consume(1000, 0)] if first is not None else []
            now = time.time()
            for msg in batch:
                if msg.error():
                    continue
                try:
                    value = json.loads(msg.value())
                except ValueError:
                    continue
                self._match(self.kind[msg.topic()], value, now, msg.timestamp()[1] / 1000)
            self.outputs_read += len(batch)

    def _match(self, kind: str, value: dict[str, Any], now: float, record_ts: float) -> None:
        event_type = value.get("event_type")
        order_id = value.get("order_id")
        with self.lock:
            if kind == "allocations" and event_type in PLACEMENT_OUTCOMES:
                timed = self.orders.get(order_id or "")
                if timed is not None and timed.done is None:
                    timed.done, timed.done_record_ts, timed.outcome = now, record_ts, event_type
                    fate = timed.order.fate if timed.order else "keep"
                    if event_type == "OrderInventoryAllocated" and fate == "fulfil":
                        self.scheduler.add(now, "fulfil", timed.order)
                    elif event_type == "OrderBackordered" and fate == "backorder":
                        self.scheduler.add(now, "backorder_receipt", timed.order)
                cancel = self.cancels.get(order_id or "")
                if (
                    cancel is not None
                    and cancel.done is None
                    and event_type == "OrderInventoryReleased"
                    and value.get("reason") == "CANCELLED"
                ):
                    cancel.done, cancel.done_record_ts, cancel.outcome = now, record_ts, event_type
            elif kind == "fulfillments" and event_type in FULFILLMENT_OUTCOMES:
                timed = self.fulfillments.get(value.get("fulfillment_id") or "")
                if timed is not None and timed.done is None:
                    timed.done, timed.done_record_ts, timed.outcome = now, record_ts, event_type
                    if timed.order is not None and event_type == "FulfillmentAccepted":
                        self.scheduler.add(now + 1.0, "ship", timed.order)
            elif kind == "backorders" and event_type == "BackorderFulfilled":
                timed = self.backorders.get(order_id or "")
                if timed is not None and timed.done is None:
                    timed.done, timed.done_record_ts, timed.outcome = now, record_ts, event_type

    def step_records(self, step: str) -> dict[str, list[Timed]]:
        with self.lock:
            return {
                name: [t for t in table.values() if t.step == step]
                for name, table in (
                    ("orders", self.orders),
                    ("cancels", self.cancels),
                    ("fulfillments", self.fulfillments),
                    ("backorders", self.backorders),
                )
            }

    def open_count(self, step: str) -> int:
        with self.lock:
            tables = (self.orders, self.cancels, self.fulfillments)
            return sum(1 for table in tables for t in table.values() if t.step == step and t.done is None)

    def open_backorders(self, step: str) -> int:
        """Probes still waiting: placed but not answered, or backordered and the receipt not answered yet."""
        with self.lock:
            probes = [t for t in self.orders.values() if t.step == step and t.order and t.order.fate == "backorder"]
            waiting = 0
            for probe in probes:
                receipt = self.backorders.get(probe.order.order_id) if probe.order else None
                answered = probe.done is not None and probe.outcome != "OrderBackordered"
                if not answered and (receipt is None or receipt.done is None):
                    waiting += 1
            return waiting


class Scheduler:
    """Follow-ups due at a time (cancel after placement, fulfillment after allocation, ...), run by the
    generator loop; the tracker thread adds to it."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def add(self, due: float, kind: str, payload: Any) -> None:
        with self._lock:
            heapq.heappush(self._heap, (due, next(self._seq), kind, payload))

    def pop_due(self, now: float) -> list[tuple[str, Any]]:
        out = []
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                _, _, kind, payload = heapq.heappop(self._heap)
                out.append((kind, payload))
        return out

    def next_due(self) -> float | None:
        with self._lock:
            return self._heap[0][0] if self._heap else None


# ---------------------------------------------------------------------------------------------------- samplers


class Sampler:
    """Customer-view requests at a fixed rate and worker RSS samples, labelled with the running step."""

    def __init__(self, fleet: Fleet, traffic: Traffic, views_per_s: float, seed: int) -> None:
        self.fleet = fleet
        self.traffic = traffic
        self.views_per_s = views_per_s
        self.rng = random.Random(seed + 1)
        self.step: str | None = None
        self.views: list[tuple[str, float, int]] = []  # step, seconds, status
        self.rss: list[tuple[str, int, int]] = []  # step, pid, kB
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._views, name="views", daemon=True),
            threading.Thread(target=self._memory, name="rss", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _views(self) -> None:
        interval = 1.0 / self.views_per_s if self.views_per_s > 0 else None
        if interval is None:
            return
        workers = itertools.cycle(self.fleet.workers)
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += interval
            step = self.step
            if step is not None:
                worker = next(workers)
                tenant = self.rng.choices(self.traffic.catalog, [t.weight for t in self.traffic.catalog])[0]
                customer = self.rng.choice(tenant.customers)
                path = f"/v1/tenants/{tenant.name}/customers/{customer}/inventory"
                started = time.perf_counter()
                try:
                    status, _ = worker.get(path, token=f"bench-token-{tenant.name}")
                except (urllib.error.URLError, OSError):
                    status = 0
                self.views.append((step, time.perf_counter() - started, status))
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _memory(self) -> None:
        while not self._stop.is_set():
            step = self.step
            if step is not None:
                for worker in self.fleet.workers:
                    if worker.process is not None and (kb := vm_rss_kb(worker.process.pid)) is not None:
                        self.rss.append((step, worker.process.pid, kb))
            self._stop.wait(0.5)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        return 0.0


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU ticks of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def lines_per_cpu(lines_per_s: float, cpu_percent: dict[str, float]) -> float | None:
    """Order lines per CPU-second of the workers together: robust to a machine shared with others."""
    workers = sum(v for k, v in cpu_percent.items() if k.startswith("w"))
    return round(lines_per_s / (workers / 100), 1) if workers else None


def vm_rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


# ---------------------------------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.traffic = Traffic(
            tenants=args.tenants,
            skus_per_tenant=args.skus,
            customers_per_tenant=args.customers,
            seed=args.seed,
            backorder_skus=max(8, int((len(args.rates) * args.seconds + args.warmup) / args.backorder_interval) + 8),
        )
        self.rng = random.Random(args.seed + 2)
        self.scheduler = Scheduler()
        self.own_broker = args.bootstrap is None
        self.bootstrap = args.bootstrap or f"127.0.0.1:{args.kafka_port}"
        self.kafka_env = {**os.environ, "KAFKA_PORT": str(args.kafka_port), "KAFKA_DATA": str(ROOT / ".kafka/bench")}
        self.fleet: Fleet | None = None
        self.tracker: Tracker | None = None
        self.sampler: Sampler | None = None
        self.producer: Any = None
        self.raw_orders: list[tuple[str, float, float | None, int, str | None]] = []
        self.admin: Any = None
        self.workdir = Path(tempfile.mkdtemp(prefix="inventory-bench-"))
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")

    # -- lifecycle ----------------------------------------------------------------------------------------

    def broker_up(self) -> None:
        if not self.own_broker:
            return
        subprocess.run([str(KAFKA_SH), "down"], env=self.kafka_env, check=False, capture_output=True)
        shutil.rmtree(ROOT / ".kafka/bench", ignore_errors=True)
        started = time.monotonic()
        for attempt in range(3):
            # kafka.sh can take a node for exited when it looks at the new process before java has exec'd
            # (a busy machine); `up` again finds it running and waits for it, or starts it.
            if subprocess.run([str(KAFKA_SH), "up"], env=self.kafka_env, check=attempt == 2).returncode == 0:
                break
            time.sleep(2)
        self.console.log(f"broker up on {self.bootstrap} in {time.monotonic() - started:.1f}s")

    def broker_down(self) -> None:
        if self.own_broker:
            subprocess.run([str(KAFKA_SH), "down"], env=self.kafka_env, check=False)

    def fleet_up(self) -> None:
        self.fleet = Fleet(self.bootstrap, self.workdir)
        tokens = ",".join(f"{tok}={tenant}" for tok, tenant in self.traffic.tokens().items())
        started = time.monotonic()
        for _ in range(self.args.workers):
            self.fleet.add_worker(
                INVENTORY_API_TOKENS=tokens,
                INVENTORY_LOG_LEVEL=self.args.worker_log_level,
                INVENTORY_COMMIT_INTERVAL_S=str(self.args.commit_interval),  # the tests' fleet uses 0.5
                **dict(item.split("=", 1) for item in self.args.worker_env),
            )
        for worker in self.fleet.workers:
            worker.wait_ready(timeout=180)
        self.console.log(
            f"{self.args.workers} worker(s) ready in {time.monotonic() - started:.1f}s "
            f"(topics suffix {self.fleet.suffix}, logs in {self.workdir})"
        )
        self.producer = make_producer(self.bootstrap, **{"linger.ms": 1})
        self.topology = load_topology(self.fleet.topics_file)
        self.admin = AdminClient({"bootstrap.servers": self.bootstrap})
        self.tracker = Tracker(self.bootstrap, self.fleet.names, self.scheduler)
        self.tracker.start()
        self.sampler = Sampler(self.fleet, self.traffic, self.args.views_per_s, self.args.seed)
        self.sampler.start()

    def close(self) -> None:
        if self.sampler:
            self.sampler.stop()
        if self.tracker:
            self.tracker.stop()
        if self.producer is not None:
            self.producer.flush(10)
        if self.fleet:
            self.fleet.close()
            if not self.own_broker:
                self._delete_topics()
        # Let go of every client before the broker stops, or librdkafka keeps reconnecting and says so.
        self.sampler = self.tracker = self.fleet = self.producer = self.admin = None
        gc.collect()
        if not self.args.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _delete_topics(self) -> None:
        assert self.fleet is not None
        names = list(self.fleet.names.values())
        admin = AdminClient({"bootstrap.servers": self.bootstrap})  # kept alive until its futures resolve
        for name, future in admin.delete_topics(names).items():
            try:
                future.result(30)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:  # one the workers never created
                    self.console.print(f"[yellow]could not delete {name}: {exc}[/yellow]")

    # -- producing ----------------------------------------------------------------------------------------

    def send(self, topic_id: str, key: bytes, value: dict[str, Any]) -> float:
        assert self.fleet is not None
        data = json.dumps(value).encode()
        while True:
            try:
                sent = time.time()
                self.producer.produce(self.fleet.names[topic_id], value=data, key=key)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)
        return sent

    def place(self, planned: PlannedOrder, step: str) -> None:
        assert self.tracker is not None
        timed = Timed(step=step, sent=0.0, lines=planned.lines, order=planned)
        with self.tracker.lock:  # registered before it is sent: the answer may come back at once
            self.tracker.orders[planned.order_id] = timed
        timed.sent = self.send("orders", events.key(planned.tenant, planned.order_id), planned.event)
        if planned.fate == "cancel":
            self.scheduler.add(timed.sent + self.args.cancel_after, "cancel", planned)

    def follow_up(self, kind: str, planned: PlannedOrder, step: str) -> None:
        assert self.tracker is not None
        tenant, order_id = planned.tenant, planned.order_id
        key = events.key(tenant, order_id)
        if kind == "cancel":
            timed = Timed(step=step, sent=0.0)
            with self.tracker.lock:
                self.tracker.cancels[order_id] = timed
            timed.sent = self.send("orders", key, events.cancelled(tenant, order_id))
        elif kind == "fulfil":
            items = [(ln["sku"], ln["quantity"]) for ln in planned.event["lines"]]
            fid = f"F-{order_id}"
            timed = Timed(step=step, sent=0.0, order=planned)
            with self.tracker.lock:
                self.tracker.fulfillments[fid] = timed
            timed.sent = self.send("shipments", key, events.fulfillment_started(tenant, order_id, fid, items))
        elif kind == "ship":
            fid = f"F-{order_id}"
            self.send("shipments", key, events.fulfillment_completed(tenant, order_id, fid))
            self.send("shipments", key, events.dispatched(tenant, order_id, fid))
        elif kind == "backorder_receipt":
            sku = planned.event["lines"][0]["sku"]
            timed = Timed(step=step, sent=0.0)
            with self.tracker.lock:
                self.tracker.backorders[order_id] = timed
            timed.sent = self.send("stock_movements", events.key(tenant, sku), events.received(tenant, sku, 3))

    def run_follow_ups(self, now: float) -> None:
        assert self.tracker is not None
        for kind, planned in self.scheduler.pop_due(now):
            with self.tracker.lock:
                step = self.tracker.orders[planned.order_id].step
            self.follow_up(kind, planned, step)

    # -- setup ----------------------------------------------------------------------------------------------

    def load(self) -> None:
        assert self.fleet is not None
        started = time.monotonic()
        setup = self.traffic.setup_events()
        for topic_id, key, value in setup:
            self.send(topic_id, key, value)
        assert self.producer.flush(60) == 0
        stocked = {(t.name, sku) for t in self.traffic.catalog for sku in t.skus}
        seen: set[tuple[str, str]] = set()
        reader = self.fleet.reader("availability")
        try:

            def stock_visible() -> bool:
                for record in reader.drain(60):
                    on_hand = sum(loc["on_hand"] for loc in record.get("locations", []))
                    if on_hand >= INITIAL_STOCK:
                        seen.add((record["tenant_id"], record["sku"]))
                reader.records.clear()
                return stocked <= seen

            wait_until(stock_visible, 180, "the initial stock on every SKU", interval=0.5)
        finally:
            reader.close()
        worker = self.fleet.workers[0]
        for tenant in self.traffic.catalog:
            expected = len(tenant.skus) + (self.traffic.backorder_skus if tenant is self.traffic.catalog[0] else 0)
            for customer in tenant.customers:

                def priced(tenant_name: str = tenant.name, customer_id: str = customer, n: int = expected) -> bool:
                    status, body = worker.get(
                        f"/v1/tenants/{tenant_name}/customers/{customer_id}/inventory?page_size=1",
                        token=f"bench-token-{tenant_name}",
                    )
                    return status == 200 and body.get("total_items") == n

                wait_until(priced, 120, f"customer {customer} of {tenant.name} and its catalog", interval=0.25)
        self.console.log(
            f"loaded {len(setup)} setup events ({self.traffic.tenants} tenants x {self.traffic.skus_per_tenant} SKUs,"
            f" {self.traffic.customers_per_tenant} customers each) in {time.monotonic() - started:.1f}s"
        )

    # -- steps ----------------------------------------------------------------------------------------------

    def records_written(self) -> int:
        """Records in every topic the fleet writes (outputs, internal, changelogs): inputs are ours."""
        assert self.fleet is not None
        request = {
            TopicPartition(self.fleet.names[spec.id], p): OffsetSpec.latest()
            for spec in self.topology.topics.values()
            if spec.role != "input"
            for p in range(spec.partitions)
        }
        total = 0
        for future in self.admin.list_offsets(request, request_timeout=30).values():
            total += max(0, future.result().offset)
        return total

    def run_step(self, label: str, rate: float, seconds: float, progress: Progress, probes: bool = True) -> None:
        assert self.tracker is not None and self.sampler is not None
        task = progress.add_task(f"{label}: {rate:g} lines/s", total=seconds, status="")
        order_rate = rate / self.traffic.mean_lines
        start = time.time()
        end = start + seconds
        next_order = start + self.rng.expovariate(order_rate)
        next_probe = start + 0.5 if probes else float("inf")
        next_ui = start
        lines_since_receipt, max_lag = 0, 0.0
        self.sampler.step = label
        cpu_before = self.cpu_snapshot()
        max_lines = 1.5 * rate * seconds + 20  # a bound on the count whatever the clock does
        sent_lines = 0
        while (now := time.time()) < end:
            while next_order <= now and sent_lines < max_lines:
                max_lag = max(max_lag, now - next_order)
                planned = self.traffic.order(label)
                self.place(planned, label)
                sent_lines += planned.lines
                lines_since_receipt += planned.lines
                while lines_since_receipt >= self.traffic.lines_per_receipt:
                    lines_since_receipt -= self.traffic.lines_per_receipt
                    self.send("stock_movements", *self.traffic.receipt())
                next_order += self.rng.expovariate(order_rate)
            if now >= next_probe:
                probe = self.traffic.backorder_probe(label)
                if probe is not None:
                    self.place(probe[0], label)
                next_probe += self.args.backorder_interval
            self.run_follow_ups(now)
            if now >= next_ui:
                progress.update(task, completed=min(seconds, now - start), status=self._status(label))
                next_ui = now + 0.25
            due = min(next_order, next_probe, next_ui, self.scheduler.next_due() or end, end)
            time.sleep(min(0.05, max(0.0, due - time.time())))
        self.sampler.step = None
        cpu = self.cpu_usage(cpu_before, self.cpu_snapshot(), time.time() - start)
        progress.update(task, completed=seconds, status=self._status(label))
        self.steps_meta[label] = {
            "start": start,
            "end": end,
            "generator_max_lag_ms": round(max_lag * 1000, 1),
            "cpu_percent": cpu,
        }
        self.drain(label, progress, task)

    def broker_pid(self) -> int | None:
        if not self.own_broker:
            return None
        try:
            return int((ROOT / f".kafka/bench/cluster-1-{self.args.kafka_port}/node-1/pid").read_text())
        except (OSError, ValueError):
            return None

    def cpu_snapshot(self) -> dict[str, float]:
        assert self.fleet is not None
        snap = {w.name: cpu_seconds(w.process.pid) for w in self.fleet.workers if w.process}
        if (pid := self.broker_pid()) is not None:
            snap["broker"] = cpu_seconds(pid)
        snap["bench"] = cpu_seconds(os.getpid())
        busy, total = machine_busy()
        snap["_machine_busy"], snap["_machine_total"] = busy, total
        return snap

    def cpu_usage(self, before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
        """Percent of one CPU per process over the window; machine: percent of all CPUs busy."""
        out = {
            name: round(100 * (after[name] - before.get(name, 0.0)) / wall, 1)
            for name in after
            if not name.startswith("_")
        }
        total = after["_machine_total"] - before["_machine_total"]
        out["machine_busy_all_cpus"] = round(100 * (after["_machine_busy"] - before["_machine_busy"]) / total, 1)
        return out

    def drain(self, label: str, progress: Progress, task: Any) -> None:
        """Keep sending follow-ups until every request of the step is answered, or the drain limit."""
        assert self.tracker is not None
        deadline = time.time() + self.args.drain
        while time.time() < deadline:
            now = time.time()
            self.run_follow_ups(now)
            if self.tracker.open_count(label) == 0 and self.tracker.open_backorders(label) == 0:
                break
            progress.update(task, status=self._status(label) + " (draining)")
            time.sleep(0.05)
        self.producer.flush(10)
        progress.update(task, status=self._status(label))

    def saturate(self, lines: int, progress: Progress) -> dict[str, Any]:
        """A backlog of orders produced at once, drained by the fleet as fast as it can."""
        assert self.tracker is not None
        label = "saturation"
        before = self.records_written()
        planned: list[PlannedOrder] = []
        while sum(p.lines for p in planned) < lines:
            p = self.traffic.order(label)
            p.fate = "keep"
            planned.append(p)
        task = progress.add_task(f"{label}: {lines} lines at once", total=len(planned), status="")
        cpu_before, cpu_started = self.cpu_snapshot(), time.time()
        recorders = []
        if self.args.profile and self.fleet is not None:
            for w in self.fleet.workers:
                if w.process is not None:
                    raw = self.args.results / f"{self.stamp}-{w.name}-saturation.txt"
                    recorders.append((w.name, profile.Recorder(w.process.pid, raw)))
        for p in planned:
            self.place(p, label)
        self.producer.flush(30)
        deadline = time.time() + self.args.saturation_timeout
        while time.time() < deadline:
            records = self.tracker.step_records(label)["orders"]
            done = sum(1 for t in records if t.done is not None)
            progress.update(task, completed=done, status=self._status(label))
            if done == len(records):
                break
            time.sleep(0.1)
        cpu = self.cpu_usage(cpu_before, self.cpu_snapshot(), time.time() - cpu_started)
        profiles = {name: recorder.stop() for name, recorder in recorders}
        written = self.records_written() - before
        records = self.tracker.step_records(label)["orders"]
        finished = [t for t in records if t.done is not None]
        first = min(t.sent for t in records)
        last = max((t.done for t in finished if t.done), default=time.time())
        span = max(last - first, 1e-6)
        done_lines = sum(t.lines for t in finished)
        return {
            "orders": len(records),
            "lines": sum(t.lines for t in records),
            "completed_orders": len(finished),
            "completed_lines": done_lines,
            "seconds": round(span, 2),
            "achieved_lines_per_s": round(done_lines / span, 1),
            "records_written": written,
            "records_per_s": round(written / span, 1),
            "records_per_line": round(written / done_lines, 2) if done_lines else None,
            "outcomes": dict(Counter(t.outcome for t in finished)),
            "order_latency_ms": report.summary_ms([t.done - t.sent for t in finished if t.done]),
            "cpu_percent": cpu,
            "lines_per_worker_cpu_s": lines_per_cpu(done_lines / span, cpu),
            "profile": profiles or None,
        }

    def _status(self, label: str) -> str:
        assert self.tracker is not None and self.sampler is not None
        records = self.tracker.step_records(label)["orders"]
        done = [t.latency() for t in records if t.done is not None]
        p99 = report.percentile([d for d in done if d is not None], 99)
        rss = (
            [kb for step, _, kb in self.sampler.rss[-len(self.fleet.workers) :] if step == label] if self.fleet else []
        )
        parts = [f"orders {len(done)}/{len(records)}"]
        if p99 is not None:
            parts.append(f"p99 {p99 * 1000:.0f} ms")
        if rss:
            parts.append(f"RSS {max(rss) / 1024:.0f} MiB")
        return ", ".join(parts)

    def summarize(self, label: str, rate: float, seconds: float, written: int) -> dict[str, Any]:
        assert self.tracker is not None and self.sampler is not None
        records = self.tracker.step_records(label)
        orders = [t for t in records["orders"] if not (t.order and t.order.fate == "backorder")]
        probes = [t for t in records["orders"] if t.order and t.order.fate == "backorder"]
        finished = [t for t in orders if t.done is not None]
        meta = self.steps_meta[label]
        last = max((t.done for t in finished if t.done), default=meta["end"])
        span = max(last - meta["start"], seconds)
        done_lines = sum(t.lines for t in finished)
        lines = sum(t.lines for t in orders)
        # Sustained throughput: order lines whose outcome arrived during the step's window shifted by the
        # median latency. A fleet that keeps up answers at the offered rate; one that falls behind answers
        # at its capacity while the backlog grows (and the step is not "sustained").
        shift = report.percentile([t.latency() or 0.0 for t in finished], 50) or 0.0
        window = (meta["start"] + shift, meta["end"] + shift)
        achieved = sum(t.lines for t in finished if t.done and window[0] <= t.done < window[1]) / seconds

        def lat(ts: list[Timed]) -> dict[str, Any]:
            return report.summary_ms([t.latency() for t in ts if t.done is not None])  # type: ignore[misc]

        views = [(s, status) for step, s, status in self.sampler.views if step == label]
        rss = [kb for step, _, kb in self.sampler.rss if step == label]
        completed_all = len(finished) == len(orders)
        return {
            "label": label,
            "offered_lines_per_s": rate,
            "seconds": seconds,
            "orders": len(orders),
            "lines": lines,
            "offered_lines_per_s_actual": round(lines / seconds, 1),
            "completed_orders": len(finished),
            "completed_lines": done_lines,
            "achieved_lines_per_s": round(achieved, 1),
            "sustained": completed_all and achieved >= 0.9 * lines / seconds,
            "outcomes_until_s_after_step_end": round(last - meta["end"], 2),
            "outcomes": dict(Counter(t.outcome for t in finished)),
            "order_latency_ms": lat(orders),
            "order_latency_by_record_timestamp_ms": report.summary_ms(
                [t.done_record_ts - t.sent for t in finished if t.done_record_ts]
            ),
            "cancel_latency_ms": lat(records["cancels"]),
            "view_latency_ms": report.summary_ms([s for s, status in views if status == 200]),
            "view_requests": len(views),
            "view_errors": dict(Counter(status for _, status in views if status != 200)),
            "fulfillment_latency_ms": lat(records["fulfillments"]),
            "fulfillment_outcomes": dict(Counter(t.outcome for t in records["fulfillments"] if t.done)),
            "backorder_placement_ms": lat(probes),
            "backorder_latency_ms": lat(records["backorders"]),
            "backorder_probes": len(probes),
            "worker_rss": report.rss_summary(rss),
            "records_written": written,
            "records_per_s": round(written / span, 1),
            "records_per_line": round(written / done_lines, 2) if done_lines else None,
            "generator_max_lag_ms": meta["generator_max_lag_ms"],
            "cpu_percent": meta["cpu_percent"],
            "lines_per_worker_cpu_s": lines_per_cpu(achieved, meta["cpu_percent"]),
        }

    # -- the run --------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        args = self.args
        started_at = datetime.now(UTC)
        machine = report.machine()
        self.steps_meta: dict[str, dict[str, Any]] = {}
        result: dict[str, Any] = {
            "started_at": started_at.isoformat(),
            "command": " ".join([Path(sys.executable).name, "-m", "bench.run", *sys.argv[1:]]),
            "config": {
                "rates": args.rates,
                "seconds": args.seconds,
                "workers": args.workers,
                "broker": "own (deploy/kafka/kafka.sh)" if self.own_broker else args.bootstrap,
                "tenants": args.tenants,
                "skus_per_tenant": args.skus,
                "customers_per_tenant": args.customers,
                "mean_lines_per_order": self.traffic.mean_lines,
                "zipf_s": self.traffic.zipf_s,
                "cancel_share": self.traffic.cancel_share,
                "fulfil_share": self.traffic.fulfil_share,
                "lines_per_receipt": self.traffic.lines_per_receipt,
                "backorder_interval_s": args.backorder_interval,
                "views_per_s": args.views_per_s,
                "drain_s": args.drain,
                "saturation_lines": args.saturation_lines,
                "seed": args.seed,
                "commit_interval_s": args.commit_interval,
                "worker_env": args.worker_env,
            },
            "machine": machine,
        }
        self.broker_up()
        partitions = load_topology(ROOT / "topics.yaml").stateful_partitions
        with self.console.status("measuring the passthrough ceiling"):
            ceil = ceiling.measure(self.bootstrap, partitions, args.ceiling_messages, processes=args.workers)
        self.console.log(f"passthrough ceiling: {ceil.msgs_per_s:,.0f} msgs/s ({ceil.messages} in {ceil.seconds:.2f}s)")
        result["ceiling"] = ceil.as_dict()
        self.fleet_up()
        self.load()
        result["worker_rss_after_load_mib"] = [
            round((vm_rss_kb(w.process.pid) or 0) / 1024, 1)
            for w in self.fleet.workers
            if w.process  # type: ignore[union-attr]
        ]
        steps = []
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
        ) as progress:
            if args.warmup > 0:
                self.run_step("warmup", min(args.rates), args.warmup, progress, probes=False)
            for i, rate in enumerate(sorted(args.rates)):
                label = f"s{i + 1}"
                before = self.records_written()
                self.run_step(label, rate, args.seconds, progress)
                steps.append(self.summarize(label, rate, args.seconds, self.records_written() - before))
            saturation = self.saturate(args.saturation_lines, progress) if args.saturation_lines > 0 else None
        result["steps"] = steps
        result["saturation"] = saturation
        assert self.tracker is not None and self.fleet is not None
        with self.console.status("tracing order hops on the internal topics"):
            with self.tracker.lock:
                orders = dict(self.tracker.orders)
            result["hops"] = hops.trace(self.bootstrap, self.fleet.names, orders)
        if args.raw:
            self.raw_orders = [
                (t.step, t.sent, t.latency(), t.lines, t.outcome) for t in orders.values() if t.step != "warmup"
            ]
        sustained = [s["achieved_lines_per_s"] for s in steps if s["sustained"]]
        result["best_sustained_lines_per_s"] = max(sustained, default=0.0)
        fleet_lines = max(
            [result["best_sustained_lines_per_s"]] + ([saturation["achieved_lines_per_s"]] if saturation else [])
        )
        fleet_records = max([s["records_per_s"] for s in steps] + ([saturation["records_per_s"]] if saturation else []))
        basis = saturation if saturation and saturation["records_per_line"] else (steps[-1] if steps else {})
        result["records_per_line"] = basis.get("records_per_line") or 0.0
        sat_cpu = saturation.get("lines_per_worker_cpu_s") if saturation else None
        result["ratio"] = {
            "fleet_lines_per_worker_cpu_s": sat_cpu,
            "passthrough_msgs_per_cpu_s": result["ceiling"]["msgs_per_cpu_s"],
            "lines_per_cpu_vs_passthrough_per_cpu": (
                sat_cpu / result["ceiling"]["msgs_per_cpu_s"]
                if sat_cpu and result["ceiling"]["msgs_per_cpu_s"]
                else None
            ),
            "fleet_lines_per_s": fleet_lines,
            "fleet_records_per_s": fleet_records,
            "passthrough_msgs_per_s": round(ceil.msgs_per_s, 1),
            "lines_vs_passthrough": fleet_lines / ceil.msgs_per_s if ceil.msgs_per_s else 0.0,
            "records_vs_passthrough": fleet_records / ceil.msgs_per_s if ceil.msgs_per_s else 0.0,
            "note": "one order line costs several internal messages (see records_per_line): the lines ratio is "
            "not like for like",
        }
        result["tracker_outputs_read"] = self.tracker.outputs_read if self.tracker else 0
        machine["loadavg_end"] = os.getloadavg()
        result["finished_at"] = datetime.now(UTC).isoformat()
        result["duration_s"] = round((datetime.now(UTC) - started_at).total_seconds(), 1)
        return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",") if x.strip()],
        default=[25.0, 50.0, 100.0],
        help="offered order lines/s, one step each (default 25,50,100)",
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per step (default 30)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one (topics are deleted after)")
    parser.add_argument("--kafka-port", type=int, default=int(os.environ.get("KAFKA_PORT_BENCH", "19392")))
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--skus", type=int, default=100, help="SKUs per tenant (Zipf popularity)")
    parser.add_argument("--customers", type=int, default=20, help="customers per tenant")
    parser.add_argument("--views-per-s", type=float, default=4.0, help="customer-view requests per second")
    parser.add_argument("--backorder-interval", type=float, default=2.0, help="seconds between backorder probes")
    parser.add_argument("--cancel-after", type=float, default=1.5, help="seconds from an order to its cancellation")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of unreported traffic first")
    parser.add_argument("--drain", type=float, default=15.0, help="max seconds to wait for a step's answers")
    parser.add_argument("--saturation-lines", type=int, default=2000, help="backlog size, 0 to skip")
    parser.add_argument("--saturation-timeout", type=float, default=45.0)
    parser.add_argument("--ceiling-messages", type=int, default=100_000, help="messages through the passthrough")
    parser.add_argument("--worker-log-level", default="info")
    parser.add_argument(
        "--commit-interval", type=float, default=1.0, help="worker offset commit interval (default 1.0)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-workdir", action="store_true", help="keep worker logs and RocksDB folders")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--raw", action="store_true", help="also write every order's send time and latency (CSV)")
    parser.add_argument("--profile", action="store_true", help="py-spy the workers during the saturation step")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra worker environment, for experiments (e.g. INVENTORY_PRODUCER_LINGER_MS=5); repeatable",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    if args.profile and profile.py_spy() is None:
        console.print("[red]--profile needs py-spy: .venv/bin/pip install py-spy[/red]")
        return 2
    args.results.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, console)
    stamp = bench.stamp
    try:
        result = bench.run()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130
    except Exception:
        if bench.fleet:
            for worker in bench.fleet.workers:
                console.print(f"[red]last lines of worker {worker.name}:[/red]\n{worker.tail_log(30)}")
        raise
    finally:
        bench.close()
        bench.broker_down()
    report.print_report(console, result)
    path = report.write_json(result, args.results, stamp)
    if args.raw:
        raw = args.results / f"{stamp}-orders.csv"
        raw.write_text(
            "step,sent,latency_s,lines,outcome\n"
            + "".join(
                f"{st},{sent:.3f},{'' if lat is None else f'{lat:.4f}'},{n},{o or ''}\n"
                for st, sent, lat, n, o in bench.raw_orders
            )
        )
    chart = report.write_chart(result, args.results / "latency.png")
    console.print(f"results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if chart:
        console.print(f"chart: {chart.relative_to(ROOT) if chart.is_relative_to(ROOT) else chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
