"""What upstream can get wrong on its own: the same records twice, records out of order, random bytes and
valid events with one thing broken. The checker accounts for every record: answered, or in the DLQ with
a reason, and the partitions keep flowing."""

from __future__ import annotations

import base64
from collections.abc import Callable

from tests.faults.conftest import scaled, settle_and_audit, start_load
from tests.support.fleet import Fleet


def test_duplicated_and_reordered_inputs(fleet_factory: Callable[..., Fleet]) -> None:
    fleet = fleet_factory()
    for _ in range(2):
        fleet.add_worker()
    for worker in fleet.workers:
        worker.wait_ready()
    load = start_load(fleet, rate=20, duplicates=0.3, reorder=0.2)
    load.start(steps=scaled(300)).wait()
    duplicates = [s for s in load.sent if s.kind == "duplicate"]
    assert len(duplicates) > 50
    verdict = settle_and_audit(fleet, load)
    assert len(verdict.outcomes) >= scaled(300) * 0.9


def test_fuzzed_inputs_go_to_the_dlq_with_a_reason_and_the_rest_flows(fleet_factory: Callable[..., Fleet]) -> None:
    fleet = fleet_factory()
    worker = fleet.add_worker()
    worker.wait_ready()
    load = start_load(fleet, rate=40, fuzz=0.4)
    load.start(steps=scaled(1800)).wait()
    fuzz = [s for s in load.sent if s.kind == "fuzz"]
    assert len(fuzz) >= 1_000  # issue 11: at least a thousand generated inputs through a live worker
    verdict = settle_and_audit(fleet, load)
    assert len(verdict.outcomes) >= scaled(1800) * 0.9
    dlq = fleet.reader("dlq")
    try:
        dead = dlq.drain()
    finally:
        dlq.close()
    by_source = {(r["source_topic"], r["source_partition"], r["source_offset"]): r for r in dead}
    refused = [s for s in fuzz if (s.topic_name, s.partition, s.offset) in by_source]
    assert len(refused) > len(fuzz) / 2
    for s in refused:
        record = by_source[(s.topic_name, s.partition, s.offset)]
        assert record["error"] and len(record["reason"]) > 10, record
        assert base64.b64decode(record["original_value"]) == s.value  # the original bytes, kept whole
    assert worker.process is not None and worker.process.poll() is None
