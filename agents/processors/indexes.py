"""The per-partition indexes, kept in the state of the partition key (agents/runtime/partitions.py) and
fed by messages, so that no processor touches another key's state:

- the expiry index of an order or opportunity partition: sagas that hold stock ask to be woken at a due
  time (WatchExpiry); a timer tick (ExpiryTick) walks the buckets that are due and sends each saga an
  ExpireDue, which the saga decides against its own state (a saga whose due time moved asks again);
- the backorder index of a SKU partition: per tenant, the SKUs whose queue is not empty (WatchBackorders
  from the ledger); ProcessBackorders fans out one FillBackorders per SKU.

Sets are paged (PagedSet), so no record grows with the partition: a page holds at most PAGE_ENTRIES
members, and each member has a record naming its page.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson

from agents.core.commands import ExpireDue, ExpiryTick, FillBackorders, ProcessBackorders, WatchBackorders, WatchExpiry
from agents.core.ids import entity_key, event_id
from agents.envelope import SourceRef
from agents.processors.base import Out, addressed, command_out
from agents.runtime.store import PAGE_ENTRIES

BUCKET_S = 1


class PagedSet:
    """A set of strings stored under `prefix` in a Quix State: `prefix#` the page count, `prefix.n` page n
    (a JSON list), `prefix=member` the member's page. Removal moves the last member into the hole."""

    def __init__(self, state: Any, prefix: bytes) -> None:
        self.state = state
        self.prefix = prefix

    def _count(self) -> int:
        raw = self.state.get_bytes(self.prefix + b"#")
        return int(raw) if raw else 0

    def _page(self, n: int) -> list[str]:
        raw = self.state.get_bytes(self.prefix + b"." + str(n).encode())
        return orjson.loads(raw) if raw else []

    def _write_page(self, n: int, page: list[str]) -> None:
        self.state.set_bytes(self.prefix + b"." + str(n).encode(), orjson.dumps(page))

    def _member_key(self, member: str) -> bytes:
        return self.prefix + b"=" + member.encode()

    def __contains__(self, member: str) -> bool:
        return self.state.get_bytes(self._member_key(member)) is not None

    def add(self, member: str) -> bool:
        if member in self:
            return False
        count = self._count()
        last = self._page(count - 1) if count else []
        if not count or len(last) >= PAGE_ENTRIES:
            count, last = count + 1, []
            self.state.set_bytes(self.prefix + b"#", str(count).encode())
        last.append(member)
        self._write_page(count - 1, last)
        self.state.set_bytes(self._member_key(member), str(count - 1).encode())
        return True

    def remove(self, member: str) -> bool:
        raw = self.state.get_bytes(self._member_key(member))
        if raw is None:
            return False
        n, count = int(raw), self._count()
        last = self._page(count - 1)
        moved = last.pop()
        if moved != member:
            page = last if n == count - 1 else self._page(n)
            page[page.index(member)] = moved
            if n != count - 1:
                self._write_page(n, page)
            self.state.set_bytes(self._member_key(moved), str(n).encode())
        if last:
            self._write_page(count - 1, last)
        else:
            self.state.delete(self.prefix + b"." + str(count - 1).encode())
            self.state.set_bytes(self.prefix + b"#", str(count - 1).encode())
        self.state.delete(self._member_key(member))
        return True

    def __iter__(self) -> Iterator[str]:
        for n in range(self._count()):
            yield from self._page(n)

    def clear(self) -> None:
        for n in range(self._count()):
            for member in self._page(n):
                self.state.delete(self._member_key(member))
            self.state.delete(self.prefix + b"." + str(n).encode())
        self.state.delete(self.prefix + b"#")


def bucket_of(moment: datetime) -> int:
    seconds = int(moment.timestamp())
    return seconds - seconds % BUCKET_S


CURSOR = b"cursor"


def watch_expiry(state: Any, command: WatchExpiry) -> None:
    """File the saga under its due time (a time already past goes to the bucket of the request's time, so
    a due date months ago does not make the next tick walk months of empty buckets)."""
    bucket = max(bucket_of(command.due), bucket_of(command.issued_at))
    PagedSet(state, b"x" + str(bucket).encode()).add(entity_key(command.tenant_id, command.entity_id).decode())
    raw = state.get_bytes(CURSOR)
    if raw is None or int(raw) > bucket:
        state.set_bytes(CURSOR, str(bucket).encode())


def walk_expiry(state: Any, tick: ExpiryTick, topic_id: str, source: SourceRef | None) -> list[Out]:
    """An ExpireDue to every saga filed in a bucket that ended by the tick's time; the buckets are emptied."""
    raw = state.get_bytes(CURSOR)
    if raw is None:
        return []
    now = tick.issued_at.timestamp()
    bucket, out = int(raw), []
    while bucket + BUCKET_S <= now:
        members = PagedSet(state, b"x" + str(bucket).encode())
        for member in members:
            tenant = member.partition("|")[0]
            command = ExpireDue(
                command_id=event_id("ExpireDue", tick.command_id, member),
                tenant_id=tenant,
                issued_at=tick.issued_at,
                tick_id=tick.command_id,
            )
            out.append(Out(topic_id, member.encode(), addressed(command, source)))
        members.clear()
        bucket += BUCKET_S
    state.set_bytes(CURSOR, str(bucket).encode())
    return out


def expire_later(
    topic_id: str, partition_key: bytes, tenant_id: str, entity_id: str, due: datetime, now: datetime
) -> Out:
    """A saga's request to be woken at `due`, to its partition's expiry index."""
    command = WatchExpiry(
        command_id=event_id("WatchExpiry", tenant_id, entity_id, due.isoformat()),
        tenant_id=tenant_id,
        issued_at=now,
        entity_id=entity_id,
        due=due,
    )
    return Out(topic_id, partition_key, addressed(command, None))


def _backorder_set(state: Any, tenant_id: str) -> PagedSet:
    return PagedSet(state, b"b" + tenant_id.encode() + b"\x00")


def watch_backorders(state: Any, command: WatchBackorders) -> None:
    waiting = _backorder_set(state, command.tenant_id)
    if command.waiting:
        waiting.add(command.sku)
    else:
        waiting.remove(command.sku)


def fan_out_backorders(state: Any, command: ProcessBackorders) -> list[Out]:
    return [
        command_out(
            FillBackorders(
                command_id=event_id("FillBackorders", command.command_id, sku),
                tenant_id=command.tenant_id,
                issued_at=command.issued_at,
                sku=sku,
            ),
            None,
        )
        for sku in _backorder_set(state, command.tenant_id)
    ]
