"""The retry state machine of `python -m agents sync`, with an in-memory stand-in for the producer, the
consumer and the fleet's answers (the real thing runs in tests/integration/test_sync_cli.py)."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter, deque
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agents.settings import Settings
from agents.sync import SyncReport, sync_snapshots
from agents.topology import load_topology
from tests.support import events

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = load_topology(ROOT / "topics.yaml")
ORDERS, ALLOCATIONS, DLQ = (TOPOLOGY[t].name for t in ("orders", "allocations", "dlq"))
Answer = Callable[[dict[str, Any], int, int], list[tuple[str, dict[str, Any]]]]


class Message:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._topic, self._partition, self._offset, self._value = topic, partition, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value


class FakeKafka:
    """Producer and consumer in one. `answer(snapshot, attempt, offset)` is the fleet: what it publishes
    (topic name, record) once a send is delivered; `refuse(snapshot, attempt)` fails a delivery."""

    def __init__(self, answer: Answer, refuse: Callable[[dict[str, Any], int], bool] = lambda s, a: False) -> None:
        self.answer = answer
        self.refuse = refuse
        self.sent: list[dict[str, Any]] = []
        self.answered_before_send: list[set[str]] = []  # causation ids consumed when each send was made
        self.consumed: set[str] = set()
        self.attempts: Counter[str] = Counter()
        self.deliveries: deque[tuple[Any, dict[str, Any], int]] = deque()
        self.outbox: deque[Message] = deque()

    # producer
    def produce(self, topic: str, key: bytes, value: bytes, on_delivery: Any) -> None:
        assert topic == ORDERS
        payload = json.loads(value)
        assert key == f"{payload['tenant_id']}:{payload['order_id']}".encode()
        self.sent.append(payload)
        self.answered_before_send.append(set(self.consumed))
        self.deliveries.append((on_delivery, payload, len(self.sent) - 1))

    def poll(self, timeout: float = 0) -> int:
        while self.deliveries:
            callback, payload, offset = self.deliveries.popleft()
            self.attempts[payload["event_id"]] += 1
            attempt = self.attempts[payload["event_id"]]
            if self.refuse(payload, attempt):
                callback("KafkaError{code=_MSG_TIMED_OUT}", None)
                continue
            callback(None, Message(ORDERS, 0, offset, b""))
            for topic, record in self.answer(payload, attempt, offset):
                self.outbox.append(Message(topic, 0, 0, json.dumps(record).encode()))
        return 0

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0

    # consumer
    def list_topics(self, timeout: float = 0) -> Any:
        topic = SimpleNamespace(partitions={0: None}, error=None)
        return SimpleNamespace(topics={ALLOCATIONS: topic, DLQ: topic})

    def get_watermark_offsets(self, tp: Any, timeout: float = 0) -> tuple[int, int]:
        return (0, 0)

    def assign(self, partitions: Any) -> None:
        pass

    def consume(self, count: int, timeout: float = 0) -> list[Message]:
        out = list(self.outbox)
        self.outbox.clear()
        if not out:
            time.sleep(0.005)
        for message in out:
            self.consumed.add(json.loads(message.value()).get("causation_id"))
        return out

    def close(self) -> None:
        pass


def synced(snapshot: dict[str, Any], result: str, total_value: str = "0", **fields: Any) -> tuple[str, dict[str, Any]]:
    return (
        ALLOCATIONS,
        {
            "event_id": f"out-{snapshot['event_id']}",
            "event_type": "OrderInventorySynced",
            "tenant_id": snapshot["tenant_id"],
            "order_id": snapshot["order_id"],
            "customer_id": snapshot["customer_id"],
            "causation_id": snapshot["event_id"],
            "status": "INVENTORY_ALLOCATED",
            "result": result,
            "lines": [],
            "total_value": total_value,
            **fields,
        },
    )


def snap(order_id: str, tenant: str = "acme") -> dict[str, Any]:
    return events.snapshot(tenant, order_id, "C1", [("L1", "A", 1)])


def run(fake: FakeKafka, snapshots: list[dict[str, Any]], attempts: int = 3, timeout: float = 0.1) -> SyncReport:
    return sync_snapshots(
        Settings(),
        TOPOLOGY,
        snapshots,
        attempts,
        timeout,
        progress=False,
        backoff_base=0.01,
        clients=(fake, fake),
    )


def only(report: SyncReport) -> Any:
    (outcome,) = report.outcomes
    return outcome


def test_final_results_are_not_retried_and_count_as_success_or_error() -> None:
    results = {"O1": "IN_SYNC", "O2": "UPDATED", "O3": "CANCELLED", "O4": "NOT_FOUND", "O5": "REJECTED"}
    results |= {"O6": "CREDIT_LIMIT_EXCEEDED", "O7": "NOT_ALLOCATED", "O8": "SOMETHING_NEW"}
    fake = FakeKafka(lambda s, a, o: [synced(s, results[s["order_id"]], "10", message="why")])
    report = run(fake, [snap(order_id) for order_id in results])
    assert [(o.order_id, o.ok, o.result, o.attempts) for o in report.outcomes] == [
        ("O1", True, "IN_SYNC", 1),
        ("O2", True, "UPDATED", 1),
        ("O3", True, "CANCELLED", 1),
        ("O4", False, "NOT_FOUND", 1),
        ("O5", False, "REJECTED", 1),
        ("O6", False, "CREDIT_LIMIT_EXCEEDED", 1),
        ("O7", False, "NOT_ALLOCATED", 1),
        ("O8", False, "SOMETHING_NEW", 1),
    ]
    assert report.retries == 0 and report.exit_code == 1
    assert report.total_value == 80
    assert "unexpected result" in report.outcomes[-1].message


def test_partial_is_a_success_with_a_warning_naming_what_is_unavailable() -> None:
    item = {"sku": "A", "location": "WH1", "required": 9, "available": 4, "shortfall": 5}
    fake = FakeKafka(lambda s, a, o: [synced(s, "PARTIAL", "120.5", unavailable_items=[item])])
    report = run(fake, [snap("O1")])
    outcome = only(report)
    assert (outcome.ok, outcome.result, outcome.total_value) == (True, "PARTIAL", Decimal("120.5"))
    assert outcome.warning == "unavailable: A@WH1 needs 9, 4 available (short 5)"
    assert report.exit_code == 0


def test_pending_is_retried_with_the_same_event_id_until_a_final_answer() -> None:
    fake = FakeKafka(lambda s, a, o: [synced(s, "PENDING" if a < 3 else "UPDATED")])
    snapshot = snap("O1")
    report = run(fake, [snapshot], attempts=5)
    assert (only(report).result, only(report).attempts, report.retries) == ("UPDATED", 3, 2)
    assert [s["event_id"] for s in fake.sent] == [snapshot["event_id"]] * 3
    assert fake.sent[0] == snapshot  # sent as given


def test_pending_then_silence_is_an_error_that_says_what_happened() -> None:
    fake = FakeKafka(lambda s, a, o: [synced(s, "PENDING", message="order is PENDING")] if a == 1 else [])
    outcome = only(run(fake, [snap("O1")], attempts=3))
    assert (outcome.ok, outcome.result, outcome.attempts) == (False, "PENDING", 3)
    assert outcome.message.startswith("attempt 1: PENDING: order is PENDING; attempts 2-3: no outcome within 0.1s")
    assert "new event_id" in outcome.message


def test_no_answer_is_retried_and_then_reported_as_a_timeout() -> None:
    fake = FakeKafka(lambda s, a, o: [])
    report = run(fake, [snap("O1")], attempts=3, timeout=0.05)
    assert (only(report).result, only(report).attempts, report.retries) == ("TIMEOUT", 3, 2)
    assert only(report).message == "attempts 1-3: no outcome within 0.05s"
    assert len(fake.sent) == 3


def test_a_late_answer_to_an_earlier_attempt_is_accepted() -> None:
    late: list[tuple[str, dict[str, Any]]] = []

    def answer(s: dict[str, Any], attempt: int, offset: int) -> list[tuple[str, dict[str, Any]]]:
        if attempt == 1:
            late.append(synced(s, "IN_SYNC"))  # held back: published after the first attempt timed out
            return []
        return [late.pop()]

    outcome = only(run(FakeKafka(answer), [snap("O1")], attempts=3, timeout=0.05))
    assert (outcome.ok, outcome.result, outcome.attempts) == (True, "IN_SYNC", 2)


def test_a_failed_delivery_is_retried() -> None:
    fake = FakeKafka(lambda s, a, o: [synced(s, "IN_SYNC")], refuse=lambda s, a: a == 1)
    report = run(fake, [snap("O1")])
    assert (only(report).result, only(report).attempts, report.retries) == ("IN_SYNC", 2, 1)
    fake = FakeKafka(lambda s, a, o: [], refuse=lambda s, a: True)
    outcome = only(run(fake, [snap("O1")], attempts=2))
    assert (outcome.ok, outcome.result) == (False, "DELIVERY_FAILED")
    assert "_MSG_TIMED_OUT" in outcome.message


def test_a_dead_lettered_snapshot_is_retried_and_reported_with_the_fleets_reason() -> None:
    def dead_letter(s: dict[str, Any], attempt: int, offset: int) -> list[tuple[str, dict[str, Any]]]:
        record = {"event_type": "DeadLetter", "source_topic": ORDERS, "source_partition": 0, "source_offset": offset}
        record |= {"error": "SchemaViolation", "reason": "lines.0.sku: too long", "original_value": None}
        return [(DLQ, record)]

    outcome = only(run(FakeKafka(dead_letter), [snap("O1")], attempts=2))
    assert (outcome.ok, outcome.result, outcome.attempts) == (False, "DEAD_LETTERED", 2)
    assert "SchemaViolation: lines.0.sku: too long" in outcome.message

    def by_bytes(s: dict[str, Any], attempt: int, offset: int) -> list[tuple[str, dict[str, Any]]]:
        if attempt > 1:
            return [synced(s, "IN_SYNC")]
        record = {"event_type": "DeadLetter", "source_topic": ORDERS, "source_partition": 9, "source_offset": 9}
        original = base64.b64encode(json.dumps(s).encode()).decode()
        return [(DLQ, record | {"error": "X", "reason": "y", "original_value": original})]

    outcome = only(run(FakeKafka(by_bytes), [snap("O1")], attempts=2))
    assert (outcome.ok, outcome.result, outcome.attempts) == (True, "IN_SYNC", 2)


def test_answers_for_another_order_or_tenant_with_the_same_causation_are_not_taken() -> None:
    def answer(s: dict[str, Any], attempt: int, offset: int) -> list[tuple[str, dict[str, Any]]]:
        other_tenant = synced(s, "NOT_FOUND")[1] | {"tenant_id": "globex"}
        other_order = synced(s, "NOT_FOUND")[1] | {"order_id": "O-other"}
        return [(ALLOCATIONS, other_tenant), (ALLOCATIONS, other_order), synced(s, "IN_SYNC")]

    assert only(run(FakeKafka(answer), [snap("O1")])).result == "IN_SYNC"


def test_snapshots_of_one_order_go_one_after_another_and_other_orders_do_not_wait() -> None:
    first, second, other = snap("O1"), snap("O1"), snap("O2")

    def answer(s: dict[str, Any], attempt: int, offset: int) -> list[tuple[str, dict[str, Any]]]:
        return [synced(s, "UPDATED", "5" if s["event_id"] == first["event_id"] else "7")]

    fake = FakeKafka(answer)
    report = run(fake, [first, second, other])
    assert [o.result for o in report.outcomes] == ["UPDATED"] * 3
    order = [s["event_id"] for s in fake.sent]
    assert order.index(second["event_id"]) > order.index(other["event_id"])
    before_second = fake.answered_before_send[order.index(second["event_id"])]
    assert first["event_id"] in before_second  # sent only once the first had its answer
    assert not fake.answered_before_send[order.index(other["event_id"])] - {first["event_id"]}
    assert report.total_value == Decimal(7 + 7)  # per order, its latest answer: O1's second, and O2


def test_a_repeated_event_id_for_one_order_is_reported_and_not_sent() -> None:
    snapshot = snap("O1")
    fake = FakeKafka(lambda s, a, o: [synced(s, "IN_SYNC")])
    report = run(fake, [snapshot, dict(snapshot)])
    assert [(o.line, o.result) for o in report.outcomes] == [(1, "IN_SYNC"), (2, "DUPLICATE")]
    assert len(fake.sent) == 1 and report.exit_code == 1


def test_a_broker_failure_reports_every_line() -> None:
    class Broken(FakeKafka):
        def list_topics(self, timeout: float = 0) -> Any:
            raise RuntimeError("broker down")

    report = run(Broken(lambda s, a, o: []), [snap("O1"), snap("O2")])
    assert [(o.order_id, o.result, o.attempts) for o in report.outcomes] == [("O1", "ERROR", 0), ("O2", "ERROR", 0)]
    assert all("not sent: RuntimeError: broker down" in o.message for o in report.outcomes)
