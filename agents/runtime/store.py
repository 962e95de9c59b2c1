"""Entity state in Quix Streams state, stored so that no record grows with the entity.

Quix's State is scoped to the message key and offers get/set/delete of small records under it, with no
iteration. An entity is kept as several such records:

    v                     a version token, new on every write (the decoded-state cache checks it)
    s                     the whole entity (EntityStore: sagas, opportunities; bounded by their inputs)
    h                     the header: the entity without its collections (SplitStore)
    e\\0<coll>\\0<entry>    one collection entry (a reservation, a queued backorder line, a price...)
    p\\0<coll>\\0<n>        page n of the collection's entry keys, at most PAGE_ENTRIES of them
    r\\0<slot>             one slot of the applied-command-id ring (`window` slots, seq:id)

A write touches the header if it changed, the entries that changed, the one or two pages whose
membership changed (a removal moves the last key of the last page into the hole) and a ring slot. So
every record has a bound that does not depend on how big the business is (docs/ARCHITECTURE.md, "Bounds").

Quix writes a message's state changes to RocksDB and the changelog at the checkpoint, atomically per
partition, and recovers a partition to the changelog offset matching the committed input offset. So there
is no torn write to repair here: a crash replays the input from the last checkpoint onto the state of that
checkpoint.

Decoded entities are cached per key (LRU). A cached entity is used only while its token equals the
stored `v`: a partition that moved to another worker and back, or was recovered, is read again.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import count
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter

from agents.core import lineage
from agents.core.customer import CustomerState, PriceOverride
from agents.core.ledger import QueuedLine, Reservation, SkuLedger, reservation_id
from agents.runtime.bounds import check_size

M = TypeVar("M", bound=BaseModel)

PAGE_ENTRIES = 128
SEP = b"\x00"
VERSION = b"v"
WHOLE = b"s"
HEADER = b"h"

_NONCE = os.urandom(6).hex().encode()
_COUNTER = count()


def new_token() -> bytes:
    """Unique per write in this process and across processes (a random prefix per process)."""
    return b"%s:%d" % (_NONCE, next(_COUNTER))


class _Cache(Generic[M]):
    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.items: OrderedDict[bytes, tuple[bytes, M, Any]] = OrderedDict()

    def get(self, key: bytes, token: bytes | None) -> tuple[M, Any] | None:
        found = self.items.get(key)
        if found is None or token is None or found[0] != token:
            return None
        self.items.move_to_end(key)
        return found[1], found[2]

    def put(self, key: bytes, token: bytes, model: M, extra: Any) -> None:
        self.items[key] = (token, model, extra)
        self.items.move_to_end(key)
        while len(self.items) > self.entries:
            self.items.popitem(last=False)

    def clear(self) -> None:
        self.items.clear()


class EntityStore(Generic[M]):
    """An entity stored whole under `s` (its inputs bound its size)."""

    def __init__(self, model: type[M], cache_entries: int = 20_000) -> None:
        self.model = model
        self.cache: _Cache[M] = _Cache(cache_entries)

    def get(self, state: Any, key: bytes) -> M | None:
        token = state.get_bytes(VERSION)
        cached = self.cache.get(key, token)
        if cached is not None:
            return cached[0]
        raw = state.get_bytes(WHOLE)
        if raw is None:
            return None
        model = self.model.model_validate_json(raw)
        if token is not None:
            self.cache.put(key, token, model, None)
        return model

    def put(self, state: Any, key: bytes, new: M) -> None:
        """Raises RecordTooLarge, writing nothing, if the entity does not fit in one record."""
        token = new_token()
        body = new.model_dump_json().encode()
        check_size("the state record", key, body)
        state.set_bytes(WHOLE, body)
        state.set_bytes(VERSION, token)
        self.cache.put(key, token, new, None)


@dataclass(frozen=True)
class Collection:
    """A collection of the model stored one entry per record: a dict (`key_of` None), or a tuple of
    models keyed by `key_of` and sorted by `order` when read back."""

    name: str
    entry: Any  # the type of one entry (a dict value or a tuple item)
    key_of: Callable[[Any], str] | None = None
    order: Callable[[Any], Any] | None = None


@dataclass
class _Layout:
    """What the store knows of an entity's records besides the model: pages and the ring position."""

    header: bytes = b""
    pages: dict[str, list[list[str]]] = field(default_factory=dict)
    where: dict[str, dict[str, int]] = field(default_factory=dict)  # coll -> entry key -> page
    maps: dict[str, dict[str, Any]] = field(default_factory=dict)  # coll -> entry key -> entry, as written
    seq: int = 0  # next ring sequence number


def _entry_key(name: str, entry: str) -> bytes:
    return b"e" + SEP + name.encode() + SEP + entry.encode()


def _page_key(name: str, n: int) -> bytes:
    return b"p" + SEP + name.encode() + SEP + str(n).encode()


def _ring_key(slot: int) -> bytes:
    return b"r" + SEP + str(slot).encode()


class _Pages:
    """A collection's pages of entry keys, copied page by page as a write changes them."""

    def __init__(self, lists: list[list[str]]) -> None:
        self.lists = list(lists)
        self.copied: set[int] = set()

    def writable(self, n: int) -> list[str]:
        if n not in self.copied:
            self.lists[n] = list(self.lists[n])
            self.copied.add(n)
        return self.lists[n]


class _Overlay:
    """Changes to an entry -> page map, kept apart from it until `applied()` (which changes it in place:
    the layout it belonged to is replaced by the one being written)."""

    _GONE = -1

    def __init__(self, base: dict[str, int]) -> None:
        self.base = base
        self.changes: dict[str, int] = {}

    def __contains__(self, entry: str) -> bool:
        at = self.changes.get(entry)
        return entry in self.base if at is None else at != self._GONE

    def __setitem__(self, entry: str, page: int) -> None:
        self.changes[entry] = page

    def pop(self, entry: str) -> int:
        at = self.changes.get(entry)
        page = self.base[entry] if at is None else at
        if page == self._GONE:
            raise KeyError(entry)
        self.changes[entry] = self._GONE
        return page

    def applied(self) -> dict[str, int]:
        for entry, page in self.changes.items():
            if page == self._GONE:
                self.base.pop(entry, None)
            else:
                self.base[entry] = page
        return self.base


class SplitStore(Generic[M]):
    def __init__(
        self,
        model: type[M],
        collections: tuple[Collection, ...],
        ring: str | None = None,
        window: int = 512,
        cache_entries: int = 20_000,
    ) -> None:
        self.model = model
        self.collections = {c.name: c for c in collections}
        self.ring = ring
        self.window = window
        self._adapters = {c.name: TypeAdapter(c.entry) for c in collections}
        self._exclude = set(self.collections) | ({ring} if ring else set())
        self.cache: _Cache[M] = _Cache(cache_entries)

    # ---- reading ---------------------------------------------------------------------------------

    def get(self, state: Any, key: bytes) -> M | None:
        found = self._load(state, key)
        return None if found is None else found[0]

    def _load(self, state: Any, key: bytes) -> tuple[M, _Layout] | None:
        token = state.get_bytes(VERSION)
        cached = self.cache.get(key, token)
        if cached is not None:
            return cached
        raw = state.get_bytes(HEADER)
        if raw is None:
            return None
        header = orjson.loads(raw)
        layout = _Layout(header=raw, seq=header.pop("__seq", 0))
        page_counts: dict[str, int] = header.pop("__pages", {})
        for name, c in self.collections.items():
            adapter = self._adapters[name]
            pages: list[list[str]] = []
            where: dict[str, int] = {}
            values: dict[str, Any] = {}
            for n in range(page_counts.get(name, 0)):
                page = orjson.loads(state.get_bytes(_page_key(name, n)) or b"[]")
                pages.append(page)
                for entry in page:
                    where[entry] = n
                    body = state.get_bytes(_entry_key(name, entry))
                    if body is not None:
                        values[entry] = adapter.validate_json(body)
            layout.pages[name], layout.where[name] = pages, where
            if c.key_of is None:
                header[name] = values
            else:
                items = list(values.values())
                header[name] = sorted(items, key=c.order) if c.order else items
        if self.ring:
            held = min(layout.seq, self.window)
            ring: list[tuple[int, str]] = []
            for at in range(layout.seq - held, layout.seq):
                slot = state.get_bytes(_ring_key(at % self.window))
                if slot is not None:
                    seq, _, item = slot.decode().partition(":")
                    ring.append((int(seq), item))
            header[self.ring] = [item for _, item in sorted(ring)]
        model = self.model.model_validate(header)
        if token is not None:
            self.cache.put(key, token, model, layout)
        return model, layout

    # ---- writing ---------------------------------------------------------------------------------

    def put(self, state: Any, key: bytes, new: M) -> None:
        """Write `new` over what `get` returned for `key` (or over nothing). Every record is built and
        checked first: RecordTooLarge leaves the state untouched."""
        writes: list[tuple[bytes, bytes | None]] = []
        loaded = self._load(state, key)
        old, layout = loaded if loaded is not None else (None, _Layout())
        # Copy on write: a page is copied when a write changes it, and the entry -> page maps take the
        # changes in an overlay applied once every record passed its check (a big collection is not copied).
        pages = {name: _Pages(layout.pages.get(name, [])) for name in self.collections}
        where = {name: _Overlay(layout.where.get(name, {})) for name in self.collections}
        touched: set[tuple[str, int]] = set()
        maps: dict[str, dict[str, Any]] = {}
        for name, c in self.collections.items():
            before = layout.maps[name] if name in layout.maps else self._as_map(c, old)
            after = maps[name] = self._as_map(c, new, before)
            adapter = self._adapters[name]
            # The same dict is the same entries (models are never changed in place); a dict the core made by
            # editing the one written last says which keys it changed (agents/core/lineage.py).
            known = set() if before is after else lineage.changes(before, after) if c.key_of is None else None
            changed = after.keys() if known is None else sorted(k for k in known if k in after)
            removed = before.keys() - after.keys() if known is None else sorted(k for k in known if k not in after)
            for entry in changed:
                value, prior = after[entry], before.get(entry)
                if prior is value or (prior is not None and prior == value):
                    continue
                writes.append((_entry_key(name, entry), adapter.dump_json(value)))
                if entry not in where[name]:
                    self._add(pages[name], where[name], entry, name, touched)
            for entry in removed:
                if entry not in where[name]:
                    continue  # made and dropped between two writes: never stored
                writes.append((_entry_key(name, entry), None))
                self._remove(pages[name], where[name], entry, name, touched)
        for name, n in touched:
            if n < len(pages[name].lists):
                writes.append((_page_key(name, n), orjson.dumps(pages[name].lists[n])))
            else:
                writes.append((_page_key(name, n), None))
        seq = layout.seq
        if self.ring:
            seen = set(getattr(old, self.ring)) if old is not None else set()
            for item in getattr(new, self.ring):
                if item not in seen:
                    writes.append((_ring_key(seq % self.window), f"{seq}:{item}".encode()))
                    seq += 1
        header = self._header(new, seq, {name: len(pages[name].lists) for name in self.collections})
        if header != layout.header:
            writes.append((HEADER, header))
        for record, value in writes:
            if value is not None:
                check_size("a state record", key + record, value)
        for record, value in writes:
            if value is None:
                state.delete(record)
            else:
                state.set_bytes(record, value)
        token = new_token()
        state.set_bytes(VERSION, token)
        self.cache.put(
            key,
            token,
            new,
            _Layout(
                header=header,
                pages={name: p.lists for name, p in pages.items()},
                where={name: w.applied() for name, w in where.items()},
                seq=seq,
                maps=maps,
            ),
        )

    @staticmethod
    def _add(pages: _Pages, where: _Overlay, entry: str, name: str, touched: set[Any]) -> None:
        lists = pages.lists
        if not lists or len(lists[-1]) >= PAGE_ENTRIES:
            lists.append([])
            pages.copied.add(len(lists) - 1)
        pages.writable(len(lists) - 1).append(entry)
        where[entry] = len(lists) - 1
        touched.add((name, len(lists) - 1))

    @staticmethod
    def _remove(pages: _Pages, where: _Overlay, entry: str, name: str, touched: set[Any]) -> None:
        n = where.pop(entry)
        last = len(pages.lists) - 1
        moved = pages.writable(last).pop()
        if moved != entry:  # fill the hole with the last key of the last page
            page = pages.writable(n)
            page[page.index(entry)] = moved
            where[moved] = n
            touched.add((name, n))
        touched.add((name, last))
        if not pages.lists[last]:
            pages.lists.pop()

    def _header(self, state: M, seq: int, pages: dict[str, int]) -> bytes:
        body = state.model_dump_json(exclude=self._exclude).encode()
        extra = orjson.dumps({"__seq": seq, "__pages": pages})
        return extra[:-1] + (b"," + body[1:] if body != b"{}" else b"}")

    def _as_map(self, c: Collection, state: M | None, known: dict[str, Any] | None = None) -> dict[str, Any]:
        """The collection as entry key -> entry. An entry that is the very object of `known` (the map as
        last written) keeps its key without computing it again: a write costs what changed."""
        if state is None:
            return {}
        value = getattr(state, c.name)
        if c.key_of is None:
            return value  # type: ignore[no-any-return]
        seen = {id(item): entry for entry, item in known.items()} if known else {}
        key_of = c.key_of
        return {seen.get(id(item)) or key_of(item): item for item in value}


# ---- the layouts of the fleet's split entities ----------------------------------------------------------


def ledger_store(window: int = 512, cache_entries: int = 20_000) -> SplitStore[SkuLedger]:
    """SKU ledgers: a reservation and a queued backorder line per record."""
    return SplitStore(
        SkuLedger,
        (
            Collection("reservations", Reservation),
            Collection(
                "backorders",
                QueuedLine,
                key_of=lambda q: reservation_id(q.order_id, q.line_id),
                order=QueuedLine.sort_key,
            ),
        ),
        ring="processed",
        window=window,
        cache_entries=cache_entries,
    )


def customer_store(window: int = 512, cache_entries: int = 20_000) -> SplitStore[CustomerState]:
    """Customers: a price, and each open order's exposure and holds, per record."""
    return SplitStore(
        CustomerState,
        (Collection("prices", PriceOverride), Collection("exposures", Decimal), Collection("holds", dict[str, int])),
        ring="processed",
        window=window,
        cache_entries=cache_entries,
    )
