"""The expiry index of a stateful agent (orders, opportunities), kept in the agent's own table so that
expiry is decided in log order, deterministically, from event time.

Per partition, due keys are filed in buckets (by due time, BUCKET_S wide) under special table keys, with a
cursor at the oldest bucket that may still hold something due. A timer on every worker sends a tick into
each partition of the topic it owns; the agent walks the buckets from the cursor to the tick's time.

Crash safety: the index records a tick's id before anything else is written for it, and keeps what it
expired for a grace period. The changelog keeps a prefix of a partition's writes while the sends to other
topics may have been lost, so a redelivered tick (its id already recorded) re-sends the releases of what
it expired.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from agents.app import app, settings, topics
from agents.core.commands import ExpiryTick
from agents.core.ids import event_id
from agents.envelope import wrap

BUCKET_S = 10
INDEX_PREFIX = b"\x00expiry|"  # + bucket start (epoch seconds): keys due in that bucket
CURSOR_KEY = b"\x00expiry-cursor"  # the oldest bucket that may still hold something due, and recent ticks
TICK_KEY = b"\x00tick"
TICKS_REMEMBERED = 32
EXPIRY_GRACE_S = 60  # what expired stays in the index this long, for a redelivered tick to re-send

S = TypeVar("S")


def bucket_of(moment: datetime) -> int:
    seconds = int(moment.timestamp())
    return seconds - seconds % BUCKET_S


@dataclass
class ExpiryIndex(Generic[S]):
    """`due_of(state)` is when the state expires, or None once it no longer waits for expiry;
    `expire(state, now, causation)` and `resend(state, now, note)` are the core's functions, returning
    a result whose `.saga` is the next state (the same object when nothing changed)."""

    table: Any
    load: Callable[[bytes], S]
    due_of: Callable[[S], datetime | None]
    expire: Callable[[S, datetime, str], Any]
    resend: Callable[[S, datetime, str], Any]
    expired_status: str

    def _slot(self, bucket: int) -> bytes:
        return INDEX_PREFIX + str(bucket).encode()

    def _read_slot(self, bucket: int) -> dict[str, list[str]]:
        raw = self.table.get(self._slot(bucket))
        return json.loads(raw) if raw else {"pending": [], "expired": []}

    def _read_index(self) -> dict[str, Any]:
        raw = self.table.get(CURSOR_KEY)
        return json.loads(raw) if raw else {"cursor": None, "ticks": []}

    def add(self, key: bytes, due: datetime) -> None:
        """File `key` under its due time (a time already past goes to the current bucket, so a due date
        months ago does not make the next tick walk months of empty buckets)."""
        bucket = max(bucket_of(due), bucket_of(datetime.now(UTC)))
        slot = self._read_slot(bucket)
        if key.decode() not in slot["pending"]:
            slot["pending"].append(key.decode())
            self.table[self._slot(bucket)] = json.dumps(slot).encode()
        index = self._read_index()
        if index["cursor"] is None or index["cursor"] > bucket:
            self.table[CURSOR_KEY] = json.dumps({**index, "cursor": bucket}).encode()

    async def walk(self, tick: ExpiryTick, apply: Callable[[bytes, S, Any], Awaitable[None]]) -> int:
        """Expire what is due by the tick's time; returns how many expired."""
        now = tick.issued_at
        index = self._read_index()
        redelivery = tick.command_id in index["ticks"]
        if not redelivery:
            index = {**index, "ticks": [*index["ticks"], tick.command_id][-TICKS_REMEMBERED:]}
            self.table[CURSOR_KEY] = json.dumps(index).encode()
        if index["cursor"] is None:
            return 0
        bucket, cursor, expired = int(index["cursor"]), None, 0
        while bucket <= bucket_of(now):
            slot = self._read_slot(bucket)
            if slot["pending"] or redelivery:
                waiting: list[str] = []
                for entry in slot["pending"] + (slot["expired"] if redelivery else []):
                    key = entry.encode()
                    state = self.load(key)
                    result = self.expire(state, now, tick.command_id)
                    due = self.due_of(state)
                    if result.saga is not state:
                        await apply(key, state, result)
                        slot["expired"].append(entry)
                        expired += 1
                    elif due is not None and bucket_of(due) > bucket:
                        self.add(key, due)  # its due time moved later: file it there
                    elif due is not None:
                        waiting.append(entry)  # not due yet (later in this bucket)
                    elif redelivery and getattr(state, "status", None) == self.expired_status:
                        await apply(key, state, self.resend(state, now, "expiry re-sent after redelivery"))
                slot = {"pending": waiting, "expired": sorted(set(slot["expired"]))}
                self.table[self._slot(bucket)] = json.dumps(slot).encode()
            settled = not slot["pending"] and bucket + BUCKET_S + EXPIRY_GRACE_S <= now.timestamp()
            if settled and cursor is None:
                if self.table.get(self._slot(bucket)) is not None:
                    del self.table[self._slot(bucket)]
            elif cursor is None:
                cursor = bucket
            bucket += BUCKET_S
        # An entry moved to a later bucket is past the tick's bucket, so never before this cursor.
        self.table[CURSOR_KEY] = json.dumps({**index, "cursor": cursor if cursor is not None else bucket}).encode()
        return expired


def send_ticks(topic_id: str) -> None:
    """Every tick interval, send a tick to each partition of `topic_id` this worker owns."""

    async def tick() -> None:
        name = topics[topic_id].get_topic_name()
        now = datetime.now(UTC)
        for tp in app.consumer.assignment():
            if tp.topic != name:
                continue
            command = ExpiryTick(
                command_id=event_id("ExpiryTick", topic_id, tp.partition, now.isoformat()), tenant_id="-", issued_at=now
            )
            await topics[topic_id].send(key=TICK_KEY, value=wrap("ExpiryTick", command, None), partition=tp.partition)

    tick.__name__ = f"tick_{topic_id}"
    tick.__qualname__ = tick.__name__
    app.timer(interval=settings.expiry_tick_s)(tick)
