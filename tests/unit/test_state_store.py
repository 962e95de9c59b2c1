"""agents/state_store.py on an in-memory table: entities come back as written, no record grows with the
entity, a write cut short anywhere reads as all or nothing, and a refresh repairs a changelog that lost
the tail of earlier writes."""

from __future__ import annotations

import bisect

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from agents.core import ledger as core
from agents.state_store import Collection, SplitStore, is_entry_key, ledger_store
from tests.unit.factories import T0, reserve_stock_factory, stock_received_factory


class Crash(Exception):
    pass


class Db:
    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data

    def _from(self, from_key: bytes) -> list[bytes]:
        keys = sorted(self.data)
        return keys[bisect.bisect_left(keys, from_key) :]

    def items(self, from_key: bytes = b"") -> list[tuple[bytes, bytes]]:
        return [(k, self.data[k]) for k in self._from(from_key)]

    def keys(self, from_key: bytes = b"") -> list[bytes]:
        return self._from(from_key)


class Table:
    """What the store uses of a faust table; `log` is the changelog, `fail_after` simulates a crash."""

    def __init__(self, data: dict[bytes, bytes] | None = None) -> None:
        self.rows: dict[bytes, bytes] = data if data is not None else {}
        self.data = type("Store", (), {"_dbs": {0: Db(self.rows)}})()
        self.log: list[tuple[bytes, bytes | None]] = []
        self.fail_after: int | None = None

    def _tick(self) -> None:
        if self.fail_after is not None:
            if self.fail_after == 0:
                raise Crash
            self.fail_after -= 1

    def get(self, key: bytes) -> bytes | None:
        return self.rows.get(key)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._tick()
        self.rows[key] = value
        self.log.append((key, value))

    def __delitem__(self, key: bytes) -> None:
        self._tick()
        del self.rows[key]
        self.log.append((key, None))


def replay(log: list[tuple[bytes, bytes | None]]) -> Table:
    table = Table()
    for key, value in log:
        if value is None:
            table.rows.pop(key, None)
        else:
            table.rows[key] = value
    table.log = list(log)
    return table


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


def store(table: Table) -> SplitStore[Entity]:
    return SplitStore(
        table,
        Entity,
        (
            Collection("counts", int),
            Collection("items", Item, key_of=lambda i: i.name, order=lambda i: (i.rank, i.name)),
        ),
        ring="seen",
        window=WINDOW,
    )


names = st.sampled_from(["a", "b", "c", "d", "e/f", "g|h"])
entities = st.builds(
    Entity,
    label=st.text(max_size=5),
    counts=st.dictionaries(names, st.integers(0, 9), max_size=5),
    items=st.lists(st.builds(Item, name=names, rank=st.integers(0, 50)), max_size=4, unique_by=lambda i: i.name).map(
        lambda items: tuple(sorted(items, key=lambda i: (i.rank, i.name)))
    ),
)


def with_seen(entity: Entity, before: Entity | None, new_ids: int, counter: list[int]) -> Entity:
    """Like the core: append fresh ids to the window and keep the last WINDOW."""
    seen = list(before.seen) if before else []
    for _ in range(new_ids):
        counter[0] += 1
        seen.append(f"id{counter[0]}")
    return entity.model_copy(update={"seen": tuple(seen[-WINDOW:])})


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(entities, st.integers(0, 3)), min_size=1, max_size=8))
def test_entities_come_back_as_written(steps: list[tuple[Entity, int]]) -> None:
    table = Table()
    writer = store(table)
    counter = [0]
    current: Entity | None = None
    for entity, ids in steps:
        current = with_seen(entity, current, ids, counter)
        writer.put(KEY, current)
        assert store(table).get(KEY) == current  # a fresh reader: from the records alone
        assert store(replay(table.log)).get(KEY) == current  # a worker recovering from the changelog


@settings(max_examples=200, deadline=None)
@given(entities, entities, st.integers(0, 3), st.integers(0, 40), entities)
def test_a_write_cut_short_reads_as_all_or_nothing(
    first: Entity, second: Entity, ids: int, crash_at: int, third: Entity
) -> None:
    table = Table()
    counter = [0]
    first = with_seen(first, None, 2, counter)
    store(table).put(KEY, first)
    second = with_seen(second, first, ids, counter)
    table.fail_after = crash_at
    try:
        store(table).put(KEY, second)
    except Crash:
        pass
    table.fail_after = None
    for view in (table, replay(table.log)):  # the local database and the changelog were cut alike
        restarted = store(view)
        seen = restarted.get(KEY)
        assert seen in (first, second)
        # The next write, from whichever state was read, leaves exactly that write's state.
        nxt = with_seen(third, seen, 1, counter)
        restarted.put(KEY, nxt)
        assert store(view).get(KEY) == nxt
        assert store(replay(view.log)).get(KEY) == nxt


@settings(max_examples=150, deadline=None)
@given(st.lists(entities, min_size=2, max_size=6), st.integers(0, 60))
def test_a_refresh_repairs_a_changelog_that_lost_its_tail(states: list[Entity], kept: int) -> None:
    table = Table()
    writer = store(table)
    counter = [0]
    current: Entity | None = None
    for entity in states:
        current = with_seen(entity, current, 1, counter)
        writer.put(KEY, current)
    assert current is not None
    # A SIGKILL: the local database kept every write, the changelog lost whatever was still buffered.
    changelog = table.log[: min(kept, len(table.log))]
    restarted = store(table)
    state = restarted.get(KEY)
    assert state == current
    before = len(table.log)
    restarted.put(KEY, state, refresh=True)  # the redelivered command is a duplicate
    changelog += table.log[before:]
    assert store(replay(changelog)).get(KEY) == current


def test_a_busy_ledger_never_makes_a_big_record() -> None:
    """5,000 open reservations: as one value that was 1.3 MB, past Kafka's 1 MB default record limit."""
    table = Table()
    ledgers = ledger_store(table)
    ledger = core.handle(core.new_ledger("acme", "SKU-1"), stock_received_factory(quantity=100_000), T0, 512).ledger
    for n in range(5000):
        lines = [{"line_id": "L1", "sku": "SKU-1", "quantity": 2, "location": "WH1"}]
        ledger = core.handle(ledger, reserve_stock_factory(order_id=f"ORDER-{n:06d}", lines=lines), T0, 512).ledger
        ledgers.put(b"acme|SKU-1", ledger)  # as the agent does, after every command
    assert len(ledger.reservations) == 5000
    assert len(ledger.model_dump_json()) > 1_000_000  # what one value would have been
    biggest = max(len(k) + len(v) for k, v in table.rows.items())
    assert biggest < 40_000, biggest
    assert ledger_store(table).get(b"acme|SKU-1") == ledger
    assert sum(not is_entry_key(k) for k in table.rows) == 1


def test_replaying_a_changelog_tail_over_tables_ahead_of_it_mixes_versions() -> None:
    """Why a worker that crashed rebuilds its tables from the changelogs alone (agents/__main__.py): faust
    replays the changelog from the last offset it saw acknowledged over the local table, which may hold
    later writes that never reached the changelog. The entity read back is none of the versions written."""
    table = Table()
    writer = store(table)
    counter = [0]
    written: list[Entity] = []
    marks = []
    current: Entity | None = None
    for n in range(5):
        current = with_seen(Entity(label=f"v{n}", counts={"a": n}), current, 1, counter)
        writer.put(KEY, current)
        written.append(current)
        marks.append(len(table.log))
    persisted, acknowledged = marks[1], marks[2]  # callbacks seen up to write 2; the broker has up to 3
    local = Table(dict(table.rows))  # the crashed worker's RocksDB: all five writes
    for key, value in table.log[persisted:acknowledged]:  # faust's recovery of the tail
        if value is None:
            local.rows.pop(key, None)
        else:
            local.rows[key] = value
    assert store(local).get(KEY) not in written
    # Rebuilt from the changelog alone, the entity is the last version the changelog holds.
    assert store(replay(table.log[:acknowledged])).get(KEY) == written[2]


def test_backorder_lines_whose_ids_hold_slashes_stay_two_records() -> None:
    """Order "A/B" line "C" and order "A" line "B/C" were one record (`A/B/C`) and one queued line."""
    table = Table()
    ledgers = ledger_store(table)
    ledger = core.new_ledger("acme", "SKU-1")
    for order_id, line_id in (("A/B", "C"), ("A", "B/C")):
        lines = [{"line_id": line_id, "sku": "SKU-1", "quantity": 2, "location": "WH1"}]
        command = reserve_stock_factory(order_id=order_id, lines=lines, backorder=True)
        ledger = core.handle(ledger, command, T0, 512).ledger
        ledgers.put(b"acme|SKU-1", ledger)
    assert {(q.order_id, q.line_id) for q in ledger.backorders} == {("A/B", "C"), ("A", "B/C")}
    reread = ledger_store(table).get(b"acme|SKU-1")
    assert reread is not None
    assert {(q.order_id, q.line_id) for q in reread.backorders} == {("A/B", "C"), ("A", "B/C")}
