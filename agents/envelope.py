"""The JSON envelope on internal topics: the command kind, where it came from, and its body."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict


class SourceRef(BaseModel):
    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    topic: str
    partition: int
    offset: int
    key: bytes | None = None  # the upstream key, for a dead letter raised after intake (base64 in JSON)
    timestamp: float | None = None  # the upstream record's time (epoch seconds), for end-to-end latency


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    kind: str
    source: SourceRef | None = None
    body: str
    # The upstream record's value and headers, on the first hop after intake only: a dead letter raised by
    # the agent that owns the input (a ledger refusing an adjustment) keeps the bytes that were sent.
    original: bytes | None = None
    original_headers: dict[str, bytes] | None = None

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        return cls.model_validate_json(data)

    def body_dict(self) -> Any:
        return json.loads(self.body)


def wrap(
    kind: str,
    body: BaseModel,
    source: SourceRef | None,
    original: bytes | None = None,
    original_headers: dict[str, bytes] | None = None,
) -> bytes:
    return Envelope(
        kind=kind, source=source, body=body.model_dump_json(), original=original, original_headers=original_headers
    ).to_bytes()
