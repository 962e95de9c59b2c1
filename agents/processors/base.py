"""What every processor does around the core: read the envelope, address commands to the partition that
owns them, publish outputs, dead-letter what cannot be handled, and keep every record under the bound.

A processor is a function `(value, key, timestamp_ms, headers, state) -> list[Out]` that the runtime
(agents/runtime/app.py) runs on Quix Streams for one consumed topic. It never produces by itself: the
records it returns are produced by Quix in the same checkpoint as the state it wrote, so that a crash
replays the input onto the matching state and re-sends the same records (same event ids).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from agents.codec import encode_json
from agents.core.commands import INTERNAL_KINDS, Command, InternalCommand, load_command_json
from agents.core.events import InputEvent, Output, load_input_json
from agents.core.ids import entity_key, split_key
from agents.core.routing import output_topic, route_command
from agents.dlq import dead_letter
from agents.envelope import Envelope, SourceRef, wrap
from agents.metrics import DLQ_MESSAGES, DUPLICATES, EVENTS_PROCESSED, HOP_SECONDS, PROCESSING_SECONDS
from agents.runtime.bounds import MAX_RECORD_BYTES, RecordTooLarge, check_size
from agents.runtime.partitions import is_partition_key

log = logging.getLogger("agents")

# The upstream bytes travel with the first internal hop only up to this size, so that the internal copy
# of an input near the broker's limit stays under MAX_RECORD_BYTES; beyond it a dead letter raised after
# intake names the record (topic, partition, offset) instead of carrying it.
MAX_ORIGINAL_BYTES = 256 * 1024
MAX_REASON_CHARS = 2_000


@dataclass(frozen=True, slots=True)
class Out:
    """One record to produce: to the topic with id `topic_id` of topics.yaml."""

    topic_id: str
    key: bytes
    value: bytes


def checked(outs: list[Out]) -> list[Out]:
    for out in outs:
        check_size(f"a record for {out.topic_id}", out.key, out.value)
    return outs


def utcnow() -> datetime:
    return datetime.now(UTC)


def clip(text: str, limit: int = MAX_REASON_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 30] + f"... ({len(text) - limit + 30} more chars)"


def read(value: bytes) -> tuple[Envelope, InputEvent | InternalCommand]:
    envelope = Envelope.from_bytes(value)
    body: InputEvent | InternalCommand
    body = load_command_json(envelope.body) if envelope.kind in INTERNAL_KINDS else load_input_json(envelope.body)
    return envelope, body


def command_out(command: Command, source: SourceRef | None) -> Out:
    """`command` addressed to the partition of the entity that must act on it."""
    target = route_command(command)
    return Out(target.topic_id, entity_key(target.tenant_id, target.entity_id), addressed(command, source))


def addressed(command: Command, source: SourceRef | None) -> bytes:
    return wrap(getattr(command, "kind", type(command).__name__), command, source)


def output_key(tenant_id: str, entity_id: str) -> bytes:
    return f"{tenant_id}:{entity_id}".encode()


def publish(output: Output) -> Out:
    topic_id, entity_id = output_topic(output)
    return Out(topic_id, output_key(output.tenant_id, entity_id), encode_json(output))


def outs_of(outputs: Iterable[Output], commands: Iterable[Command], source: SourceRef | None) -> list[Out]:
    return [*(publish(o) for o in outputs), *(command_out(c, source) for c in commands)]


@dataclass(frozen=True, slots=True)
class Where:
    """The position of the record being processed."""

    topic: str
    partition: int
    offset: int


def dead_letter_out(
    topic_id: str,
    *,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    error: str,
    reason: str,
    key: bytes | None,
    value: bytes | None,
    headers: Any = None,
    tenant_id: str | None = None,
) -> Out:
    """The dead letter of one record: its original bytes, or, when those cannot fit, a reference to it (the
    source coordinates, its size and a SHA-256) saying so."""
    reason = clip(reason)
    size = (len(key) if key else 0) + (len(value) if value else 0)
    kept_value, kept_key, kept_headers = value, key, headers
    if size > MAX_RECORD_BYTES // 2:  # base64 grows it by a third; keep well under the bound
        digest = hashlib.sha256(value or b"").hexdigest()
        reason = clip(
            f"{reason} [original of {size} bytes not copied: read it at {source_topic}[{source_partition}]"
            f"@{source_offset}, value sha256 {digest}]"
        )
        kept_value, kept_key, kept_headers = None, (key[:1024] if key else None), None
    record = dead_letter(
        source_topic=source_topic,
        source_partition=source_partition,
        source_offset=source_offset,
        error=error,
        reason=reason,
        key=kept_key,
        value=kept_value,
        headers=kept_headers,
        tenant_id=tenant_id,
    )
    log.warning(
        "dead letter from %s[%d]@%d: %s: %s", source_topic, source_partition, source_offset, error, clip(reason, 300)
    )
    DLQ_MESSAGES.labels(topic_id, error).inc()
    EVENTS_PROCESSED.labels(topic_id, "dlq").inc()
    return Out("dlq", key[:1024] if key else b"", encode_json(record))


def dead_letter_internal(
    topic_id: str, where: Where, key: bytes, value: bytes, envelope: Envelope | None, error: str, reason: str
) -> Out:
    """Dead-letter a record of an internal topic under the upstream coordinates it came from."""
    source = envelope.source if envelope else None
    if envelope is None:
        original: bytes | None = value
    else:
        original = envelope.original if envelope.original is not None else envelope.body.encode()
    tenant = None if is_partition_key(key) else split_key(key)[0]
    return dead_letter_out(
        topic_id,
        source_topic=source.topic if source else where.topic,
        source_partition=source.partition if source else where.partition,
        source_offset=source.offset if source else where.offset,
        error=error,
        reason=reason,
        key=source.key if source and source.key is not None else key,
        value=original,
        headers=envelope.original_headers if envelope and envelope.original_headers else None,
        tenant_id=tenant,
    )


def refused(
    topic_id: str, what: str, where: Where, key: bytes, value: bytes, envelope: Envelope | None, exc: Exception
) -> list[Out]:
    """The dead letter of a record a processor could not apply: a refusal the domain or the bound names
    (an exception with a `reason`, or RecordTooLarge), or an unexpected error, logged with its traceback."""
    if isinstance(exc, RecordTooLarge):
        error, reason = "RecordTooLarge", str(exc)
    elif isinstance(getattr(exc, "reason", None), str):
        error, reason = type(exc).__name__, exc.reason  # type: ignore[attr-defined]
    else:
        log.exception("%s failed on %s[%d]@%d", what, where.topic, where.partition, where.offset)
        error, reason = type(exc).__name__, f"unexpected error: {exc}"
    return [dead_letter_internal(topic_id, where, key, value, envelope, error, reason)]


@lru_cache(maxsize=4096)
def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, looked up once: the lookup is made for every record."""
    return metric.labels(*labels)


def count_handled(topic_id: str, processor: str, duplicate: bool, started: float) -> None:
    if duplicate:
        child(DUPLICATES, processor).inc()
    child(EVENTS_PROCESSED, topic_id, "duplicate" if duplicate else "applied").inc()
    child(PROCESSING_SECONDS, processor).observe(time.perf_counter() - started)


def observe_hop(topic_id: str, timestamp_ms: int) -> None:
    """Per-hop latency: the fleet stamps every internal record with the time it was produced."""
    if timestamp_ms > 0:
        child(HOP_SECONDS, topic_id).observe(max(time.time() - timestamp_ms / 1000, 0.0))
