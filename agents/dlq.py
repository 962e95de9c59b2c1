"""Dead-letter records: the original bytes and headers, where they came from, and why they were refused."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from agents.core.ids import event_id


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: str
    event_type: str = "DeadLetter"
    tenant_id: str | None
    occurred_at: datetime
    source_topic: str
    source_partition: int
    source_offset: int
    error: str
    reason: str
    original_key: str | None
    original_value: str | None
    headers: dict[str, str]


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def dead_letter(
    *,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    error: str,
    reason: str,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]] | dict[str, bytes] | None = None,
    tenant_id: str | None = None,
) -> DeadLetter:
    items = headers.items() if isinstance(headers, dict) else (headers or [])
    return DeadLetter(
        # One dead letter per source position and error: a redelivered bad message dedupes downstream.
        event_id=event_id("dlq", source_topic, source_partition, source_offset, error),
        tenant_id=tenant_id,
        occurred_at=datetime.now(UTC),
        source_topic=source_topic,
        source_partition=source_partition,
        source_offset=source_offset,
        error=error,
        reason=reason,
        original_key=_b64(key),
        original_value=_b64(value),
        headers={k: _b64(v) or "" for k, v in items},
    )
