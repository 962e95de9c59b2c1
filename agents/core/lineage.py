"""Costs that follow what a command changes, not what an entity holds.

The core's entities are immutable: a command makes a new version, and a busy entity holds big
collections (a hot SKU's open reservations, a big customer's open orders). Copying such a dict is cheap
(C); walking it in Python on every command is not. Two tools keep that walk off the hot path:

* `edited` makes a new dict from a base with a few keys put or dropped, and notes its lineage, so that
  `changes(before, after)` can say which keys differ (the state store writes only those);
* `Carried` keeps an aggregate of a dict (a sum, per-key totals) and derives the aggregate of an edited
  dict from its base's in O(changes), handing it on (the base's is recomputed if it is asked again).

Both are caches of pure functions of a dict: a miss costs a full pass, never a wrong answer. Entries are
keyed by the dict's id and hold the dict itself, so an id is not reused while its entry lives.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
A = TypeVar("A")

_LINEAGE: OrderedDict[int, tuple[dict[Any, Any], dict[Any, Any], frozenset[Any]]] = OrderedDict()
LINEAGE_KEPT = 8  # each entry holds its base alive: few are kept (a write follows its command at once)


def note(base: dict[Any, Any], new: dict[Any, Any], changed: Iterable[Any]) -> None:
    """Record that `new` is `base` with the keys `changed` put or dropped (nothing changes either after)."""
    _LINEAGE[id(new)] = (new, base, frozenset(changed))
    _LINEAGE.move_to_end(id(new))
    while len(_LINEAGE) > LINEAGE_KEPT:
        _LINEAGE.popitem(last=False)


def edited(base: dict[K, V], put: Mapping[K, V] | None = None, drop: Iterable[K] = ()) -> dict[K, V]:
    """A copy of `base` with `put` set and `drop` removed, its lineage noted."""
    new = dict(base)
    changed: set[K] = set()
    for key in drop:
        if key in new:
            del new[key]
            changed.add(key)
    if put:
        new.update(put)
        changed.update(put)
    note(base, new, changed)
    return new


def parent(d: dict[Any, Any]) -> tuple[dict[Any, Any], frozenset[Any]] | None:
    entry = _LINEAGE.get(id(d))
    if entry is None or entry[0] is not d:
        return None
    return entry[1], entry[2]


def changes(before: dict[Any, Any], after: dict[Any, Any]) -> set[Any] | None:
    """The keys in which `after` differs from `before`, when `after` was made from `before` by recent edits
    in this process; None when that is not known (compare them whole)."""
    found: set[Any] = set()
    at = after
    for _ in range(LINEAGE_KEPT):
        if at is before:
            return found
        step = parent(at)
        if step is None:
            return None
        at, keys = step
        found |= keys
    return found if at is before else None


class Carried(Generic[K, V, A]):
    """An aggregate of dicts, computed by `build(d)` and moved from a base dict to an edited one by
    `update(aggregate, key, old value or None, new value or None)`, which may change the aggregate in
    place (it is handed on: the base's is rebuilt if asked for again). Callers must not change what it returns."""

    def __init__(
        self,
        build: Callable[[dict[K, V]], A],
        update: Callable[[A, K, V | None, V | None], A],
        kept: int = 4096,
    ) -> None:
        self.build = build
        self.update = update
        self.kept = kept
        self.memo: OrderedDict[int, tuple[dict[K, V], A]] = OrderedDict()
        self.lock = threading.Lock()  # the HTTP thread asks too (customer views from the read models)

    def __call__(self, d: dict[K, V]) -> A:
        with self.lock:
            return self._get(d)

    def _get(self, d: dict[K, V]) -> A:
        hit = self.memo.get(id(d))
        if hit is not None and hit[0] is d:
            self.memo.move_to_end(id(d))
            return hit[1]
        step = parent(d)
        if step is not None:
            base, keys = step
            held = self.memo.get(id(base))
            if held is not None and held[0] is base:
                del self.memo[id(base)]
                value = held[1]
                for key in keys:
                    value = self.update(value, key, base.get(key), d.get(key))
                return self._remember(d, value)
        return self._remember(d, self.build(d))

    def _remember(self, d: dict[K, V], value: A) -> A:
        self.memo[id(d)] = (d, value)
        while len(self.memo) > self.kept:
            self.memo.popitem(last=False)
        return value
