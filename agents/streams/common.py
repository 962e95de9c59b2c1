"""What every stateful agent does around the core: read the envelope, send commands to the partition
that owns them, publish outputs, dead-letter what cannot be handled."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from agents.app import app, send_dead_letter, topics
from agents.codec import encode_json
from agents.core.commands import INTERNAL_KINDS, Command, InternalCommand, load_command_json
from agents.core.events import InputEvent, Output, load_input_json
from agents.core.ids import entity_key, split_key
from agents.core.routing import output_topic, route_command
from agents.envelope import Envelope, SourceRef, wrap
from agents.metrics import DUPLICATES, EVENTS_PROCESSED, PROCESSING_SECONDS
from agents.state_store import SplitStore

StoreT = TypeVar("StoreT", bound=SplitStore[Any])


def utcnow() -> datetime:
    return datetime.now(UTC)


def read(message: Any) -> tuple[Envelope, InputEvent | InternalCommand]:
    envelope = Envelope.from_bytes(message.value)
    body: InputEvent | InternalCommand
    body = load_command_json(envelope.body) if envelope.kind in INTERNAL_KINDS else load_input_json(envelope.body)
    return envelope, body


async def send_command(command: Command, source: SourceRef | None) -> None:
    target = route_command(command)
    kind = getattr(command, "kind", type(command).__name__)
    await topics[target.topic_id].send(
        key=entity_key(target.tenant_id, target.entity_id), value=wrap(kind, command, source)
    )


def output_key(tenant_id: str, entity_id: str) -> bytes:
    return f"{tenant_id}:{entity_id}".encode()


async def publish(output: Output) -> None:
    topic_id, entity_id = output_topic(output)
    await topics[topic_id].send(key=output_key(output.tenant_id, entity_id), value=encode_json(output))


async def dead_letter_internal(
    topic_id: str, message: Any, envelope: Envelope | None, error: str, reason: str, body: BaseModel | None = None
) -> None:
    """Dead-letter a message of an internal topic under the upstream coordinates it came from."""
    source = envelope.source if envelope else None
    await send_dead_letter(
        topic_id=topic_id,
        source_topic=source.topic if source else message.topic,
        source_partition=source.partition if source else message.partition,
        source_offset=source.offset if source else message.offset,
        error=error,
        reason=reason,
        key=source.key if source else message.key,
        value=_original_value(envelope, message),
        headers=envelope.original_headers if envelope and envelope.original_headers else None,
        tenant_id=split_key(message.key)[0] if message.key and not message.key.startswith(b"\x00") else None,
    )
    EVENTS_PROCESSED.labels(topic_id, "dlq").inc()


def _original_value(envelope: Envelope | None, message: Any) -> bytes:
    """The bytes upstream sent, when the envelope still carries them (first hop); else what we have."""
    if envelope is None:
        return bytes(message.value)
    return envelope.original if envelope.original is not None else envelope.body.encode()


def count_handled(topic_id: str, agent: str, duplicate: bool, started: float) -> None:
    """The metrics every stateful agent records for a handled message."""
    if duplicate:
        DUPLICATES.labels(agent).inc()
    EVENTS_PROCESSED.labels(topic_id, "duplicate" if duplicate else "applied").inc()
    PROCESSING_SECONDS.labels(agent).observe(time.perf_counter() - started)


def forget_on_rebalance(store: StoreT) -> StoreT:
    """Empty the store's decoded-state cache on every rebalance: a partition that moves away and back may
    have changed meanwhile, and must be read again."""

    async def forget(sender: Any, *args: Any, **kwargs: Any) -> None:
        store.clear()

    app.on_partitions_revoked.connect(forget)  # type: ignore[arg-type]  # held strongly: the closure lives
    app.on_partitions_assigned.connect(forget)  # type: ignore[arg-type]
    return store
