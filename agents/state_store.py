"""Entity state in a faust table, stored so that no record grows with the entity.

A SKU ledger holds a reservation per open order line and a customer an exposure per open order. Written
as one JSON value, a busy SKU's ledger passes Kafka's 1 MB record limit at about 4,000 open reservations,
and every command parses and re-writes all of it. Here an entity is a *header* (the model without its
collections) under its key, and each collection entry is a record of its own under
`key \\x00 field \\x00 entry-key`, in the same table and partition. A write touches the header and the
entries that changed. The id window (`processed`) is a ring of `window` slots: appending an id overwrites
the oldest.

A write is several records, and a crash can stop it anywhere, both in the local RocksDB and in the
changelog. The header is the commit point: it is written first and carries the write's changes (`__diff`),
so a reader that finds the header rolls the changes forward, and a write the header never reached never
happened. Entries carry the number of the write that made them (`__w`). On a redelivered command the
caller asks for a *refresh*: every live entry is written again under a new write number, then a header
whose `__floor` says that older entries are gone. That repairs a changelog that lost the tail of earlier
writes (records still in the producer's buffer at the crash) while the local RocksDB kept them.

Decoded entities are kept in an LRU cache: a worker is the only writer of its active partitions, and
the cache is emptied on every rebalance (`clear`).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter

from agents.core.customer import CustomerState, PriceOverride
from agents.core.ledger import QueuedLine, Reservation, SkuLedger, reservation_id

M = TypeVar("M", bound=BaseModel)

SEP = b"\x00"
RING = "__ring"


@dataclass(frozen=True)
class Collection:
    """A collection of the model stored one entry per record: a dict (`key_of` None), or a tuple of
    models keyed by `key_of` and sorted by `order` when read back."""

    name: str
    entry: Any  # the type of one entry (a dict value or a tuple item)
    key_of: Callable[[Any], str] | None = None
    order: Callable[[Any], Any] | None = None


def is_entry_key(key: bytes) -> bool:
    """True for a collection entry's record (not a header)."""
    return SEP in key.lstrip(SEP)


@dataclass
class _Meta:
    write: int = 0  # number of the last write (header `__w`)
    floor: int = 0  # entries of earlier writes are gone
    seq: int = 0  # next ring sequence number
    repair: dict[tuple[str, str], bytes | None] | None = None  # records to write again on the next put


class SplitStore(Generic[M]):
    def __init__(
        self,
        table: Any,
        model: type[M],
        collections: tuple[Collection, ...],
        ring: str | None = None,
        window: int = 512,
        cache_entries: int = 20_000,
    ) -> None:
        self.table = table
        self.model = model
        self.collections = {c.name: c for c in collections}
        self.ring = ring
        self.window = window
        self.cache_entries = cache_entries
        self._adapters = {c.name: TypeAdapter(c.entry) for c in collections}
        self._exclude = set(self.collections) | ({ring} if ring else set())
        self._cache: OrderedDict[bytes, tuple[M, _Meta]] = OrderedDict()

    # ---- reading ---------------------------------------------------------------------------------

    def get(self, key: bytes) -> M | None:
        found = self._load(key)
        return None if found is None else found[0]

    def peek(self, key: bytes) -> M | None:
        """Read without caching what was not cached (HTTP views: a standby partition's state changes
        under the cache's feet, from its changelog)."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached[0]
        raw = self.table.get(key)
        return None if raw is None else self._assemble(key, raw)[0]

    def _load(self, key: bytes) -> tuple[M, _Meta] | None:
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        raw = self.table.get(key)
        if raw is None:
            return None
        loaded = self._assemble(key, raw)
        self._remember(key, *loaded)
        return loaded

    def _entries(self, key: bytes) -> Iterator[tuple[str, str, bytes]]:
        prefix = key + SEP
        for db in self.table.data._dbs.values():
            for found, raw in db.items(from_key=prefix):
                if not found.startswith(prefix):
                    break
                name, _, entry_key = found[len(prefix) :].partition(SEP)
                yield name.decode(), entry_key.decode(), raw

    def _assemble(self, key: bytes, raw: bytes) -> tuple[M, _Meta]:
        header = json.loads(raw)
        meta = _Meta(write=header.pop("__w", 0), floor=header.pop("__floor", 0), seq=header.pop("__seq", 0))
        diff: dict[str, Any] = header.pop("__diff", {})
        records: dict[tuple[str, str], bytes] = {}
        repair: dict[tuple[str, str], bytes | None] = {}
        for name in self.collections:  # a value written whole (before this store): its entries move out
            if name in header:
                whole = self.model.model_validate({**header, **{n: header.get(n, {}) for n in self.collections}})
                for entry_key, value in self._as_map(self.collections[name], whole).items():
                    records[(name, entry_key)] = repair[(name, entry_key)] = self._adapters[name].dump_json(value)
                del header[name]
        whole_ring = header.pop(self.ring, None) if self.ring else None
        if whole_ring and not meta.seq:
            for n, item in enumerate(whole_ring[-self.window :]):
                records[(RING, str(n))] = repair[(RING, str(n))] = f"{n}:{item}".encode()
            meta.seq = len(whole_ring[-self.window :])
        for name, entry_key, value in self._entries(key):
            written, _, body = value.partition(b"|")
            if int(written) < meta.floor:
                repair[(name, entry_key)] = None  # left over from before a refresh: gone
            else:
                records[(name, entry_key)] = body
        # Roll the last write forward: its header is here, some of its entries may not be.
        for name, puts in diff.get("p", {}).items():
            for entry_key, body in puts.items():
                encoded = body.encode()
                if records.get((name, entry_key)) != encoded:
                    repair[(name, entry_key)] = encoded
                records[(name, entry_key)] = encoded
        for name, gone in diff.get("d", {}).items():
            for entry_key in gone:
                if records.pop((name, entry_key), None) is not None:
                    repair[(name, entry_key)] = None
        values: dict[str, dict[str, Any]] = {name: {} for name in self.collections}
        ring: list[tuple[int, str]] = []
        for (name, entry_key), body in records.items():
            if name == RING:
                seq, _, item = body.decode().partition(":")
                ring.append((int(seq), item))
            elif name in values:
                values[name][entry_key] = json.loads(body)
        for name, c in self.collections.items():
            if c.key_of is None:
                header[name] = values[name]
            else:
                items = [self._adapters[name].validate_python(v) for v in values[name].values()]
                header[name] = sorted(items, key=c.order) if c.order else items
        if self.ring:
            header[self.ring] = [item for _, item in sorted(ring)][-self.window :]
        meta.repair = repair or None
        return self.model.model_validate(header), meta

    # ---- writing ---------------------------------------------------------------------------------

    def put(self, key: bytes, new: M, refresh: bool = False) -> None:
        """Write `new` over what `get` returned for `key` (or over nothing). `refresh` writes every
        record again (after a redelivery: the changelog may have lost earlier writes)."""
        loaded = self._load(key)
        old, meta = loaded if loaded is not None else (None, _Meta())
        write = meta.write + 1
        if refresh:
            self._refresh(key, new, meta, write)
            return
        changes: dict[tuple[str, str], bytes | None] = dict(meta.repair or {})
        for name, c in self.collections.items():
            before, after = self._as_map(c, old), self._as_map(c, new)
            adapter = self._adapters[name]
            for entry_key, value in after.items():
                prior = before.get(entry_key)
                if prior is value or (prior is not None and prior == value):
                    continue
                changes[(name, entry_key)] = adapter.dump_json(value)
            for entry_key in before.keys() - after.keys():
                changes[(name, entry_key)] = None
        seq = meta.seq
        if self.ring:
            seen = set(getattr(old, self.ring)) if old is not None else set()
            for item in getattr(new, self.ring):
                if item not in seen:
                    changes[(RING, str(seq % self.window))] = f"{seq}:{item}".encode()
                    seq += 1
        diff: dict[str, dict[str, Any]] = {"p": {}, "d": {}}
        for (name, entry_key), body in changes.items():
            if body is None:
                diff["d"].setdefault(name, []).append(entry_key)
            else:
                diff["p"].setdefault(name, {})[entry_key] = body.decode()
        next_meta = _Meta(write=write, floor=meta.floor, seq=seq)
        self.table[key] = self._header(new, next_meta, diff)  # the commit point, first
        for (name, entry_key), body in changes.items():
            self._write(key, name, entry_key, write, body)
        self._remember(key, new, next_meta)

    def _refresh(self, key: bytes, state: M, meta: _Meta, write: int) -> None:
        for name, c in self.collections.items():
            adapter = self._adapters[name]
            for entry_key, value in self._as_map(c, state).items():
                self._write(key, name, entry_key, write, adapter.dump_json(value))
        seq = meta.seq
        if self.ring:
            items = list(getattr(state, self.ring))[-self.window :]
            for n, item in enumerate(items):
                at = seq - len(items) + n
                self._write(key, RING, str(at % self.window), write, f"{at}:{item}".encode())
        next_meta = _Meta(write=write, floor=write, seq=seq)
        self.table[key] = self._header(state, next_meta, {})  # last: until here the old floor holds
        self._remember(key, state, next_meta)

    def _header(self, state: M, meta: _Meta, diff: dict[str, Any]) -> bytes:
        body = state.model_dump_json(exclude=self._exclude).encode()
        extra = json.dumps({"__w": meta.write, "__floor": meta.floor, "__seq": meta.seq, "__diff": diff})
        return extra[:-1].encode() + (b"," + body[1:] if body != b"{}" else b"}")

    def _write(self, key: bytes, name: str, entry_key: str, write: int, body: bytes | None) -> None:
        record = key + SEP + name.encode() + SEP + entry_key.encode()
        if body is None:
            try:
                del self.table[record]
            except KeyError:
                pass
        else:
            self.table[record] = b"%d|" % write + body

    def _as_map(self, c: Collection, state: M | None) -> dict[str, Any]:
        if state is None:
            return {}
        value = getattr(state, c.name)
        if c.key_of is None:
            return value  # type: ignore[no-any-return]
        return {c.key_of(item): item for item in value}

    # ---- the cache -------------------------------------------------------------------------------

    def _remember(self, key: bytes, state: M, meta: _Meta) -> None:
        self._cache[key] = (state, meta)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_entries:
            self._cache.popitem(last=False)

    def clear(self) -> None:
        """Forget every decoded entity (on a rebalance: a partition may come back changed)."""
        self._cache.clear()


# ---- the layouts of the fleet's split entities ----------------------------------------------------------


def ledger_store(table: Any, window: int = 512, cache_entries: int = 20_000) -> SplitStore[SkuLedger]:
    """SKU ledgers: a reservation and a queued backorder line per record."""
    return SplitStore(
        table,
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


def customer_store(table: Any, window: int = 512, cache_entries: int = 20_000) -> SplitStore[CustomerState]:
    """Customers: a price, and each open order's exposure and holds, per record."""
    return SplitStore(
        table,
        CustomerState,
        (Collection("prices", PriceOverride), Collection("exposures", Decimal), Collection("holds", dict[str, int])),
        ring="processed",
        window=window,
        cache_entries=cache_entries,
    )
