"""agents/runtime/store.py and the paged index sets on real Quix Streams state (a RocksDB store partition
in a temporary folder, no Kafka): entities come back as written, no record grows with the entity, the
decoded-state cache never serves a stale entity, and a write that would exceed the bound writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict
from quixstreams.state.rocksdb import RocksDBStorePartition

from agents.core import ledger as core
from agents.processors.indexes import PagedSet
from agents.runtime.bounds import MAX_RECORD_BYTES, RecordTooLarge
from agents.runtime.quix_compat import sibling
from agents.runtime.store import PAGE_ENTRIES, Collection, EntityStore, SplitStore, ledger_store
from tests.unit.factories import T0, reserve_stock_factory, stock_received_factory


class Item(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    rank: int


class Entity(BaseModel):
    model_config = ConfigDict(frozen=True)
    label: str = ""
    counts: dict[str, int] = {}
    items: tuple[Item, ...] = ()
    seen: tuple[str, ...] = ()


WINDOW = 5
KEY = b"t|e"


def split_store() -> SplitStore[Entity]:
    return SplitStore(
        Entity,
        (
            Collection("counts", int),
            Collection("items", Item, key_of=lambda i: i.name, order=lambda i: (i.rank, i.name)),
        ),
        ring="seen",
        window=WINDOW,
    )


class Partition:
    """One Quix store partition; `state(key)` opens a transaction and yields the key's State, committed
    (written to RocksDB) when the block ends without an exception."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = RocksDBStorePartition(str(path))

    @contextmanager
    def state(self, key: bytes) -> Iterator[Any]:
        with self.db.begin() as tx:
            yield tx.as_state(prefix=key)

    def records(self) -> dict[bytes, bytes]:
        return {bytes(k): bytes(v) for k, v in self.db._db.items() if not bytes(k).startswith(b"__")}  # test only

    def reopen(self) -> Partition:
        self.db.close()
        return Partition(self.path)


@pytest.fixture
def partition(tmp_path: Path) -> Iterator[Partition]:
    p = Partition(tmp_path / "db")
    yield p
    p.db.close()


names = st.sampled_from(["a", "b", "c", "d", "e/f", "g|h"])
entities = st.builds(
    Entity,
    label=st.text(max_size=5),
    counts=st.dictionaries(names, st.integers(0, 9), max_size=5),
    items=st.lists(st.builds(Item, name=names, rank=st.integers(0, 50)), max_size=4, unique_by=lambda i: i.name).map(
        lambda items: tuple(sorted(items, key=lambda i: (i.rank, i.name)))
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(entities, min_size=1, max_size=8))
def test_split_entities_come_back_as_written(tmp_path_factory: Any, steps: list[Entity]) -> None:
    partition = Partition(tmp_path_factory.mktemp("split"))
    writer, current = split_store(), None
    for counter, entity in enumerate(steps, start=1):
        seen = (*(current.seen if current else ()), f"id{counter}")[-WINDOW:]
        current = entity.model_copy(update={"seen": seen})
        with partition.state(KEY) as state:
            writer.put(state, KEY, current)
        with partition.state(KEY) as state:
            assert writer.get(state, KEY) == current  # through the cache
            assert split_store().get(state, KEY) == current  # decoded from the records
    partition = partition.reopen()
    with partition.state(KEY) as state:
        assert split_store().get(state, KEY) == current
    partition.db.close()


def test_a_busy_ledger_never_makes_a_big_record(partition: Partition) -> None:
    """5,000 open reservations: as one value that was 1.3 MB, past Kafka's 1 MB default record limit."""
    ledgers = ledger_store()
    key = b"acme|SKU-1"
    ledger = core.handle(core.new_ledger("acme", "SKU-1"), stock_received_factory(quantity=100_000), T0, 512).ledger
    for n in range(5000):
        lines = [{"line_id": "L1", "sku": "SKU-1", "quantity": 2, "location": "WH1"}]
        ledger = core.handle(ledger, reserve_stock_factory(order_id=f"ORDER-{n:06d}", lines=lines), T0, 512).ledger
        with partition.state(key) as state:
            ledgers.put(state, key, ledger)  # as the processor does, after every command
    assert len(ledger.reservations) == 5000
    assert len(ledger.model_dump_json()) > 1_000_000  # what one value would have been
    records = partition.records()
    biggest = max(len(k) + len(v) for k, v in records.items())
    assert biggest < 40_000, biggest
    with partition.state(key) as state:
        assert ledger_store().get(state, key) == ledger


def test_the_cache_is_checked_against_the_state(partition: Partition) -> None:
    """A partition recovered or written by another worker meanwhile is read again, not served from memory."""
    a, b = split_store(), split_store()
    with partition.state(KEY) as state:
        a.put(state, KEY, Entity(label="one"))
    with partition.state(KEY) as state:
        b.put(state, KEY, Entity(label="two"))  # another process's write
    with partition.state(KEY) as state:
        found = a.get(state, KEY)
    assert found is not None and found.label == "two"


def test_an_entity_too_big_for_one_record_writes_nothing(partition: Partition) -> None:
    store: EntityStore[Entity] = EntityStore(Entity)
    with partition.state(KEY) as state:
        store.put(state, KEY, Entity(label="small"))
    with partition.state(KEY) as state, pytest.raises(RecordTooLarge):
        store.put(state, KEY, Entity(label="x" * MAX_RECORD_BYTES))
    with partition.state(KEY) as state:
        found = EntityStore(Entity).get(state, KEY)
    assert found is not None and found.label == "small"


def test_a_split_entry_too_big_writes_nothing(partition: Partition) -> None:
    store = split_store()
    with partition.state(KEY) as state:
        store.put(state, KEY, Entity(counts={"a": 1}))
    huge = Entity(counts={"a": 2}, items=(Item(name="n" * MAX_RECORD_BYTES, rank=1),))
    with partition.state(KEY) as state, pytest.raises(RecordTooLarge):
        store.put(state, KEY, huge)
    with partition.state(KEY) as state:
        assert split_store().get(state, KEY) == Entity(counts={"a": 1})


def test_backorder_lines_whose_ids_hold_slashes_stay_two_records(partition: Partition) -> None:
    """Order "A/B" line "C" and order "A" line "B/C" were one record (`A/B/C`) and one queued line."""
    ledgers = ledger_store()
    key = b"acme|SKU-1"
    ledger = core.new_ledger("acme", "SKU-1")
    for order_id, line_id in (("A/B", "C"), ("A", "B/C")):
        lines = [{"line_id": line_id, "sku": "SKU-1", "quantity": 2, "location": "WH1"}]
        command = reserve_stock_factory(order_id=order_id, lines=lines, backorder=True)
        ledger = core.handle(ledger, command, T0, 512).ledger
        with partition.state(key) as state:
            ledgers.put(state, key, ledger)
    with partition.state(key) as state:
        reread = ledger_store().get(state, key)
    assert reread is not None
    assert {(q.order_id, q.line_id) for q in reread.backorders} == {("A/B", "C"), ("A", "B/C")}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 400)), max_size=600))
def test_a_paged_set_is_a_set(tmp_path_factory: Any, ops: list[tuple[bool, int]]) -> None:
    partition = Partition(tmp_path_factory.mktemp("paged"))
    model: set[str] = set()
    with partition.state(b"\x00p0") as state:
        members = PagedSet(state, b"b-acme\x00")
        for add, n in ops:
            member = f"SKU|{n}"
            assert (members.add(member) if add else members.remove(member)) == (
                (member not in model) if add else (member in model)
            )
            (model.add if add else model.discard)(member)
        assert sorted(members) == sorted(model)
    with partition.state(b"\x00p0") as state:
        assert sorted(PagedSet(state, b"b-acme\x00")) == sorted(model)
    pages = [v for k, v in partition.records().items() if b"b-acme\x00." in k]
    assert all(v.count(b",") < PAGE_ENTRIES for v in pages)
    partition.db.close()


def test_sibling_reads_another_key_in_the_same_transaction(partition: Partition) -> None:
    """The one Quix internal (agents/runtime/quix_compat.py): fails when Quix changes it."""
    with partition.db.begin() as tx:
        mine = tx.as_state(prefix=b"acme|C1")
        tx.as_state(prefix=b"\x00p3").set_bytes(b"catalog", b"price")
        assert sibling(mine, b"\x00p3").get_bytes(b"catalog") == b"price"
        assert mine.get_bytes(b"catalog") is None
    with pytest.raises(TypeError):
        sibling(object(), b"x")
