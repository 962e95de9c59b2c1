"""Bulk order-to-inventory synchronisation: `python -m agents sync --file FILE`.

Sends OMS order snapshots (OrderSnapshot, one JSON object per line) to the orders input topic and waits for
the fleet's answer to each, an OrderInventorySynced on the allocations topic whose causation_id is the
snapshot's event_id. No business rules live here: the order saga decides; this module produces, watches,
retries what may be retried and reports every input line as a success or an error.

Retries re-send the very same snapshot (same event_id): the saga dedupes by event id and re-emits the outcome
it stored. An attempt fails on a delivery error, on no outcome within the timeout, when the fleet
dead-letters the snapshot, or when the answer is PENDING (the order's allocation is still in flight).
Snapshots of one order are sent one after another (the next once the previous has its final answer), since
the saga reconciles one snapshot of an order at a time; different orders are synchronised concurrently.
"""

from __future__ import annotations

import base64
import json
import math
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, TextIO

from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agents.core.events import InvalidEvent, OrderSnapshot, parse_input
from agents.kafka_io import make_consumer, make_producer
from agents.settings import Settings
from agents.topology import Topology

SUCCESS_RESULTS = frozenset({"IN_SYNC", "UPDATED", "CANCELLED", "PARTIAL"})
ERROR_RESULTS = frozenset({"NOT_FOUND", "REJECTED", "CREDIT_LIMIT_EXCEEDED", "NOT_ALLOCATED"})
RETRY_RESULTS = frozenset({"PENDING"})
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 10.0
MAX_IN_FLIGHT = 500  # snapshots awaiting an answer at once (one per order at most)


def backoff_delay(retry: int, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Seconds to wait before retry number `retry` (1 = the first re-send): base, 2*base, 4*base, ... <= cap."""
    if retry < 1:
        raise ValueError(f"retry numbers start at 1, got {retry}")
    if retry > 64:  # 2**64 * base is past any cap; avoid building huge floats
        return cap
    return float(min(cap, base * 2 ** (retry - 1)))


def backoff_schedule(attempts: int, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> list[float]:
    """The waits between `attempts` attempts of one snapshot (attempts - 1 of them)."""
    return [backoff_delay(retry, base, cap) for retry in range(1, attempts)]


@dataclass(frozen=True)
class UnreadableLine:
    """An input line that is not JSON at all; reported as an error like any other invalid line."""

    reason: str


@dataclass(frozen=True)
class SyncOutcome:
    line: int  # line number in the input (or 1-based position when there is no file)
    ok: bool
    result: str  # the fleet's result, or INVALID / DUPLICATE / TIMEOUT / DELIVERY_FAILED / DEAD_LETTERED / ...
    message: str = ""
    tenant_id: str | None = None
    order_id: str | None = None
    event_id: str | None = None
    attempts: int = 0  # how many times the snapshot was sent (0: never sent)
    total_value: Decimal | None = None  # total_value of the OrderInventorySynced, when one arrived
    warning: str = ""


@dataclass
class SyncReport:
    outcomes: list[SyncOutcome]
    retries: int = 0
    interrupted: bool = False

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def succeeded(self) -> list[SyncOutcome]:
        return [o for o in self.outcomes if o.ok]

    @property
    def failed(self) -> list[SyncOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def total_value(self) -> Decimal:
        """Inventory value held by the synchronised orders: per order, the total_value of its latest answer."""
        latest: dict[tuple[str | None, str | None], Decimal] = {}
        for o in sorted(self.outcomes, key=lambda o: o.line):
            if o.total_value is not None:
                latest[(o.tenant_id, o.order_id)] = o.total_value
        return sum(latest.values(), Decimal(0))

    @property
    def exit_code(self) -> int:
        return 0 if not self.failed and not self.interrupted else 1


@dataclass
class _Item:
    line: int
    payload: dict[str, Any]
    snapshot: OrderSnapshot
    state: Literal["queued", "ready", "in_flight", "backoff", "done"] = "queued"
    attempts: int = 0
    deadline: float = 0.0
    not_before: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (label, message) of each failed attempt

    @property
    def order_key(self) -> tuple[str, str]:
        return (self.snapshot.tenant_id, self.snapshot.order_id)

    @property
    def match_key(self) -> tuple[str, str, str]:
        return (self.snapshot.tenant_id, self.snapshot.order_id, self.snapshot.event_id)


def _validate(
    entries: Sequence[dict[str, Any] | UnreadableLine], lines: Sequence[int]
) -> tuple[list[_Item], list[SyncOutcome]]:
    items: list[_Item] = []
    errors: list[SyncOutcome] = []
    used: dict[tuple[str, str, str], int] = {}
    for line, entry in zip(lines, entries, strict=True):
        if isinstance(entry, UnreadableLine):
            errors.append(SyncOutcome(line=line, ok=False, result="INVALID", message=entry.reason))
            continue
        try:
            event = parse_input("orders", entry)
            if not isinstance(event, OrderSnapshot):
                raise InvalidEvent("UnknownEventType", f"expected an OrderSnapshot, got {event.event_type}")
        except InvalidEvent as exc:
            errors.append(
                SyncOutcome(
                    line=line,
                    ok=False,
                    result="INVALID",
                    message=f"{exc.error}: {exc.reason}",
                    tenant_id=_text(entry, "tenant_id"),
                    order_id=_text(entry, "order_id"),
                    event_id=_text(entry, "event_id"),
                )
            )
            continue
        first = used.setdefault((event.tenant_id, event.order_id, event.event_id), line)
        if first != line:
            errors.append(
                SyncOutcome(
                    line=line,
                    ok=False,
                    result="DUPLICATE",
                    message=f"event_id {event.event_id} of order {event.order_id} is already used by line {first}; "
                    "the fleet would ignore this snapshot as a duplicate, so it was not sent",
                    tenant_id=event.tenant_id,
                    order_id=event.order_id,
                    event_id=event.event_id,
                )
            )
            continue
        items.append(_Item(line=line, payload=entry, snapshot=event))
    return items, errors


def _text(entry: Any, name: str) -> str | None:
    value = entry.get(name) if isinstance(entry, dict) else None
    return value if isinstance(value, str) and value else None


def _explain(failures: list[tuple[str, str]]) -> tuple[str, str]:
    """The result label and message of a snapshot whose attempts all failed, attempt by attempt."""
    runs: list[tuple[int, int, str]] = []  # first attempt, last attempt, what happened
    for number, (label, message) in enumerate(failures, start=1):
        text = f"{label}: {message}" if label == "PENDING" else message
        if runs and runs[-1][2] == text:
            runs[-1] = (runs[-1][0], number, text)
        else:
            runs.append((number, number, text))
    story = "; ".join(f"attempt {a}: {text}" if a == b else f"attempts {a}-{b}: {text}" for a, b, text in runs)
    labels = [label for label, _ in failures]
    if "PENDING" not in labels:
        return labels[-1], story
    if labels[-1] != "PENDING":
        story += (
            "; the fleet answered PENDING and nothing to the re-sends of the same event_id: "
            "send the snapshot again with a new event_id once the order is allocated"
        )
    return "PENDING", story


def _describe_unavailable(record: dict[str, Any]) -> str:
    parts = []
    for item in record.get("unavailable_items") or []:
        parts.append(
            f"{item.get('sku')}@{item.get('location')} needs {item.get('required')}, "
            f"{item.get('available')} available (short {item.get('shortfall')})"
        )
    return "unavailable: " + "; ".join(parts) if parts else "some lines could not be changed"


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


class _Run:
    """One synchronisation: the state machine around a producer, a consumer and the clock."""

    def __init__(
        self,
        settings: Settings,
        topology: Topology,
        items: list[_Item],
        attempts: int,
        timeout: float,
        backoff_base: float,
        backoff_cap: float,
        on_progress: Callable[[int, int], None],
    ) -> None:
        self.items = items
        self.attempts = attempts
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.on_progress = on_progress
        self.orders_topic = topology["orders"].name
        self.outputs_topic = topology["allocations"].name
        self.dlq_topic = topology["dlq"].name
        self.results: list[SyncOutcome] = []
        self.retries = 0
        # Snapshots of one order wait in line; only the head of each line is active.
        self.queues: dict[tuple[str, str], deque[_Item]] = {}
        for item in items:
            self.queues.setdefault(item.order_key, deque()).append(item)
        self.active: dict[tuple[str, str, str], _Item] = {}
        self.by_position: dict[tuple[str, int, int], _Item] = {}  # where each send landed, for DLQ records
        self.in_flight = 0
        self.settings = settings
        self.consumer: Any = None
        self.producer: Any = None

    # ---- setup ---------------------------------------------------------------------------------------

    def open(self, clients: tuple[Any, Any] | None = None) -> None:
        from confluent_kafka import TopicPartition

        bootstrap = self.settings.kafka_bootstrap
        delivery_ms = max(1000, int(self.timeout * 1000))
        self.producer, self.consumer = clients or (
            make_producer(bootstrap, **{"message.timeout.ms": delivery_ms, "queue.buffering.max.messages": 100_000}),
            make_consumer(bootstrap, f"inventory-sync-{uuid.uuid4().hex}"),
        )
        metadata = self.consumer.list_topics(timeout=15)
        assignment = []
        for name in (self.outputs_topic, self.dlq_topic):
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None:
                raise RuntimeError(f"topic {name} does not exist on {bootstrap} (run `python -m agents topics apply`)")
            for partition in topic.partitions:
                # Start at the end as it is now, before anything is produced: every answer comes after it.
                _, high = self.consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=15)
                assignment.append(TopicPartition(name, partition, high))
        self.consumer.assign(assignment)

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(5)
        if self.consumer is not None:
            self.consumer.close()

    # ---- the loop ------------------------------------------------------------------------------------

    def run(self) -> None:
        for queue in self.queues.values():
            self._activate(queue[0])
        while len(self.results) < len(self.items):
            now = time.monotonic()
            self._send_due(now)
            self.producer.poll(0)
            for message in self.consumer.consume(500, timeout=0.1):
                self._receive(message)
            self._expire(time.monotonic())

    def abandon(self, label: str, reason: str) -> None:
        """Stop waiting: every snapshot without a final answer becomes an error saying so."""
        for item in self.items:
            if item.state == "done":
                continue
            if item.attempts == 0:
                self._finish(item, False, label, f"not sent: {reason}")
            else:
                self._finish(item, False, label, f"{reason} (sent {item.attempts} time(s), no final answer)")

    def _activate(self, item: _Item) -> None:
        item.state = "ready"
        self.active[item.match_key] = item

    def _send_due(self, now: float) -> None:
        for item in list(self.active.values()):
            if self.in_flight >= MAX_IN_FLIGHT:
                return
            if item.state == "ready" or (item.state == "backoff" and now >= item.not_before):
                self._send(item)

    def _send(self, item: _Item) -> None:
        attempt = item.attempts + 1
        snap = item.snapshot

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                if item.state == "in_flight" and item.attempts == attempt:
                    self._attempt_failed(item, "DELIVERY_FAILED", f"delivery failed: {err}")
                return
            self.by_position[(msg.topic(), msg.partition(), msg.offset())] = item

        try:
            self.producer.produce(
                self.orders_topic,
                key=f"{snap.tenant_id}:{snap.order_id}".encode(),
                value=json.dumps(item.payload).encode(),
                on_delivery=delivered,
            )
        except BufferError:
            self.producer.poll(0.1)  # the local queue is full: try again on the next turn
            return
        except Exception as exc:  # KafkaException and friends: this attempt failed
            item.attempts = attempt
            item.state = "in_flight"
            self.in_flight += 1
            if attempt > 1:
                self.retries += 1
            self._attempt_failed(item, "DELIVERY_FAILED", f"could not produce: {exc}")
            return
        if attempt > 1:
            self.retries += 1
            self.on_progress(len(self.results), self.retries)
        item.attempts = attempt
        item.state = "in_flight"
        item.deadline = time.monotonic() + self.timeout
        self.in_flight += 1

    def _receive(self, message: Any) -> None:
        if message.error() is not None or message.value() is None:
            return
        try:
            record = json.loads(message.value())
        except ValueError:
            return  # not JSON: not an answer this command could have caused
        if not isinstance(record, dict):
            return
        if message.topic() == self.dlq_topic:
            self._dead_letter(record)
        elif record.get("event_type") == "OrderInventorySynced":
            item = self.active.get(
                (str(record.get("tenant_id")), str(record.get("order_id")), str(record.get("causation_id")))
            )
            if item is not None:
                self._answer(item, record)

    def _answer(self, item: _Item, record: dict[str, Any]) -> None:
        result = str(record.get("result"))
        message = str(record.get("message") or "")
        if result in RETRY_RESULTS:
            if item.state == "in_flight":  # a late PENDING for an attempt already given up changes nothing
                self._attempt_failed(item, result, message or "allocation still in flight")
            return
        value = _decimal(record.get("total_value"))
        if result in SUCCESS_RESULTS:
            warning = _describe_unavailable(record) if result == "PARTIAL" else ""
            self._finish(item, True, result, message, value, warning)
        elif result in ERROR_RESULTS:
            self._finish(item, False, result, message or result, value)
        else:
            self._finish(item, False, result, f"unexpected result {result!r}: {message}".rstrip(": "), value)

    def _dead_letter(self, record: dict[str, Any]) -> None:
        try:
            position = (str(record["source_topic"]), int(record["source_partition"]), int(record["source_offset"]))
        except (KeyError, TypeError, ValueError):
            return
        item = self.by_position.get(position)
        if item is None:  # fall back to the original bytes: the event id of what was dead-lettered
            try:
                original = json.loads(base64.b64decode(record.get("original_value") or ""))
                key = (original.get("tenant_id"), original.get("order_id"), original.get("event_id"))
            except (ValueError, TypeError, AttributeError):
                return
            item = self.active.get(key)
            if item is None or record.get("source_topic") != self.orders_topic:
                return
        if item.state == "in_flight":
            reason = f"the fleet dead-lettered it: {record.get('error')}: {record.get('reason')}"
            self._attempt_failed(item, "DEAD_LETTERED", reason)

    def _expire(self, now: float) -> None:
        for item in list(self.active.values()):
            if item.state == "in_flight" and now >= item.deadline:
                self._attempt_failed(item, "TIMEOUT", f"no outcome within {self.timeout:g}s")

    # ---- transitions ---------------------------------------------------------------------------------

    def _attempt_failed(self, item: _Item, label: str, message: str) -> None:
        self.in_flight -= 1
        item.state = "backoff"
        item.failures.append((label, message))
        if item.attempts >= self.attempts:
            self._finish(item, False, *_explain(item.failures))
            return
        item.not_before = time.monotonic() + backoff_delay(item.attempts, self.backoff_base, self.backoff_cap)

    def _finish(
        self,
        item: _Item,
        ok: bool,
        result: str,
        message: str,
        value: Decimal | None = None,
        warning: str = "",
    ) -> None:
        if item.state == "in_flight":
            self.in_flight -= 1
        item.state = "done"
        snap = item.snapshot
        self.results.append(
            SyncOutcome(
                line=item.line,
                ok=ok,
                result=result,
                message=message,
                tenant_id=snap.tenant_id,
                order_id=snap.order_id,
                event_id=snap.event_id,
                attempts=item.attempts,
                total_value=value,
                warning=warning,
            )
        )
        self.active.pop(item.match_key, None)
        self.on_progress(len(self.results), self.retries)
        queue = self.queues[item.order_key]
        if queue and queue[0] is item:
            queue.popleft()
            if queue:
                self._activate(queue[0])


def sync_snapshots(
    settings: Settings,
    topology: Topology,
    snapshots: Sequence[dict[str, Any] | UnreadableLine],
    attempts: int,
    timeout: float,
    progress: bool = True,
    *,
    line_numbers: Sequence[int] | None = None,
    backoff_base: float = BACKOFF_BASE_S,
    backoff_cap: float = BACKOFF_CAP_S,
    console: Console | None = None,
    clients: tuple[Any, Any] | None = None,
) -> SyncReport:
    """Send each snapshot to the orders topic and wait for its OrderInventorySynced; see the module doc.

    Every entry ends up in the report exactly once, in input order, as a success or an error. `clients`, for
    tests, is a (producer, consumer) pair to use instead of confluent-kafka clients built from `settings`."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError("timeout must be a positive number of seconds")
    lines = list(line_numbers) if line_numbers is not None else list(range(1, len(snapshots) + 1))
    items, invalid = _validate(snapshots, lines)
    report = SyncReport(outcomes=list(invalid))
    if items:
        bar = Progress(
            TextColumn("[bold]syncing orders"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[retries]} retries"),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            disable=not progress,
            transient=True,
        )
        task = bar.add_task("sync", total=len(items), retries=0)

        def advance(done: int, retries: int) -> None:
            bar.update(task, completed=done, retries=retries)

        run = _Run(settings, topology, items, attempts, timeout, backoff_base, backoff_cap, advance)
        try:
            with bar:
                try:
                    run.open(clients)
                    run.run()
                except KeyboardInterrupt:
                    report.interrupted = True
                    run.abandon("INTERRUPTED", "interrupted before the fleet answered")
                except Exception as exc:  # broker or topic missing, client failure: report, never drop
                    run.abandon("ERROR", f"{type(exc).__name__}: {exc}")
        finally:
            run.close()
        report.outcomes.extend(run.results)
        report.retries = run.retries
    report.outcomes.sort(key=lambda o: o.line)
    return report


# ---- the command line ------------------------------------------------------------------------------------


def read_snapshots(stream: TextIO) -> tuple[list[dict[str, Any] | UnreadableLine], list[int]]:
    """JSON lines -> (entries, their line numbers). Blank lines are skipped; a line that is not JSON becomes
    an UnreadableLine so that it is reported, never dropped."""
    entries: list[dict[str, Any] | UnreadableLine] = []
    numbers: list[int] = []
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        try:
            entries.append(json.loads(raw))
        except ValueError as exc:
            entries.append(UnreadableLine(f"InvalidJson: not a JSON object: {exc}"))
        numbers.append(number)
    return entries, numbers


def render_report(report: SyncReport) -> Group:
    results = Table(title="Order sync: every input line", expand=False)
    for column, justify in (
        ("line", "right"),
        ("tenant", "left"),
        ("order", "left"),
        ("", "center"),
        ("result", "left"),
        ("attempts", "right"),
        ("value", "right"),
        ("message", "left"),
    ):
        results.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for o in report.outcomes:
        note = " | ".join(p for p in (o.message, o.warning) if p)
        mark = "[green]ok[/]" if o.ok and not o.warning else "[yellow]warn[/]" if o.ok else "[red]error[/]"
        results.add_row(
            str(o.line),
            o.tenant_id or "-",
            o.order_id or "-",
            mark,
            o.result,
            str(o.attempts),
            "" if o.total_value is None else str(o.total_value),
            note,
            style=None if o.ok else "red",
        )
    summary = Table(title="Order sync summary", show_header=False)
    summary.add_column("", style="bold")
    summary.add_column("", justify="right")
    summary.add_row("total", str(report.total))
    summary.add_row("succeeded", str(len(report.succeeded)))
    summary.add_row("  with warnings", str(sum(1 for o in report.succeeded if o.warning)))
    summary.add_row("failed", str(len(report.failed)))
    summary.add_row("retries made", str(report.retries))
    summary.add_row("inventory value impact", str(report.total_value))
    if report.interrupted:
        summary.add_row("interrupted", "yes")
    parts: list[Any] = [results] if report.outcomes else []
    if report.failed:
        failures = Table(title="Failed", expand=False)
        for column in ("line", "order", "result / error", "message"):
            failures.add_column(column, overflow="fold")
        for o in report.failed:
            failures.add_row(str(o.line), o.order_id or "-", o.result, o.message)
        parts.append(failures)
    parts.append(summary)
    return Group(*parts)


def report_json(report: SyncReport) -> dict[str, Any]:
    """The report as one JSON object (`sync --json`): totals, then every line's outcome in line order."""
    return {
        "total": report.total,
        "succeeded": len(report.succeeded),
        "failed": len(report.failed),
        "retries": report.retries,
        "interrupted": report.interrupted,
        "total_value": str(report.total_value),
        "exit_code": report.exit_code,
        "lines": [
            {
                "line": o.line,
                "ok": o.ok,
                "result": o.result,
                "message": o.message,
                "tenant_id": o.tenant_id,
                "order_id": o.order_id,
                "event_id": o.event_id,
                "attempts": o.attempts,
                "total_value": None if o.total_value is None else str(o.total_value),
                "warning": o.warning,
            }
            for o in sorted(report.outcomes, key=lambda o: o.line)
        ],
    }


def run_sync(
    settings: Settings, topology: Topology, path: str, attempts: int, timeout: float, as_json: bool = False
) -> int:
    """`python -m agents sync --file FILE`: returns the exit code (0: every line succeeded)."""
    console, errors = Console(), Console(stderr=True)
    if attempts < 1 or not math.isfinite(timeout) or timeout <= 0:
        errors.print(f"[red]error:[/] --attempts must be at least 1 and --timeout positive (got {attempts}, {timeout})")
        return 2
    try:
        if path == "-":
            entries, numbers = read_snapshots(sys.stdin)
        else:
            with Path(path).open(encoding="utf-8") as stream:
                entries, numbers = read_snapshots(stream)
    except (OSError, UnicodeDecodeError) as exc:
        errors.print(f"[red]error:[/] cannot read {path}: {exc}")
        return 1
    report = sync_snapshots(settings, topology, entries, attempts, timeout, progress=not as_json, line_numbers=numbers)
    if as_json:
        print(json.dumps(report_json(report)))
    else:
        console.print(render_report(report))
    return report.exit_code
