"""The bound on every record the fleet writes: outputs, commands, dead letters, state and its changelog.

Kafka's default max.message.bytes is 1 MiB (1,048,588 bytes). The fleet keeps every record, key included,
under MAX_RECORD_BYTES; what would exceed it is refused before anything is written, and the input that
caused it is dead-lettered with the reason (docs/ARCHITECTURE.md, "Bounds").
"""

from __future__ import annotations

MAX_RECORD_BYTES = 900 * 1024


class RecordTooLarge(Exception):
    def __init__(self, what: str, size: int) -> None:
        super().__init__(f"{what} would be {size} bytes, over the bound of {MAX_RECORD_BYTES}")
        self.size = size


def check_size(what: str, key: bytes, value: bytes) -> None:
    if len(key) + len(value) > MAX_RECORD_BYTES:
        raise RecordTooLarge(what, len(key) + len(value))
