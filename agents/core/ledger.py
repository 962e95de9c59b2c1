"""The SKU ledger: on-hand stock per location, reservations and idempotency for one `tenant|sku`.

`handle(ledger, command, now)` is a pure transition: it returns the next ledger and what to publish.
A command the ledger has already applied (same movement or event id inside the dedup window) changes
nothing and re-publishes the current availability, whose event id depends only on the ledger version,
so consumers see the very same event again.

Opportunity soft holds are reservations of kind OPPORTUNITY, one per opportunity and location (`SoftReserve`,
`SoftRelease`). They count against available-to-promise like order reservations, with three rules:

* Queued backorders come before soft holds: a soft hold only takes stock beyond what queued backorder lines
  at the location wait for, and backorders (policy BACKORDER) never take or pre-empt a soft hold. Arriving
  stock therefore fills the queue first (fill_backorders runs after every change, before any later
  SoftReserve can see the stock).
* Conversion: a ReserveStock naming an opportunity counts that opportunity's soft holds on the SKU as free
  for the order, and the order's reservation takes them over: per location, the hold shrinks by what the
  order takes beyond what it already held there; what remains of the hold stays. The opportunity is told
  what the order holds and what of it came out of the hold (OpportunityConverted), and the ledger remembers
  the former, so a SoftReserve sent before the opportunity heard of it does not hold that demand again.
* Pre-emption: a firm ReserveStock (not backorder) short at a location drops whole soft holds of other
  opportunities there, lowest probability first (ties: newest first), until the order fits; if even all
  of them would not be enough, the order is refused as before and nothing is dropped. Each opportunity
  that lost holds is told (OpportunityPreempted). A physical count below what is committed drops soft holds
  before orders (see _deallocate) and tells the opportunities the same way.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field

from agents.core import lineage
from agents.core.commands import (
    BackorderFilled,
    Command,
    ConsumeStock,
    LineRequest,
    LineShortage,
    OpportunityConverted,
    OpportunityPreempted,
    ReleaseStock,
    ReserveStock,
    SoftLine,
    SoftRelease,
    SoftReserve,
    SoftReserved,
    StockLost,
    StockReserved,
)
from agents.core.events import (
    LocationAvailability,
    Model,
    Output,
    Priority,
    ProductUpserted,
    SkuAvailability,
    StockAdjusted,
    StockCounted,
    StockReceived,
    Tier,
)
from agents.core.ids import compose, event_id

DEFAULT_DEDUP_WINDOW = 512
PRIORITY_RANK = {"LOW": 0, "MEDIUM": 1, "HIGH": 2, "URGENT": 3}
RECENT_LOST_KEPT = 32
RECENT_SOFT_KEPT = 64  # notices to opportunities kept to re-send when their command is redelivered
CONVERSIONS_KEPT = 256  # (opportunity, order, location) totals kept (see SoftReserve.converted)
TIER_RANK = {"BRONZE": 0, "SILVER": 1, "GOLD": 2, "PLATINUM": 3}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Movement = StockReceived | StockAdjusted | StockCounted
LedgerCommand = (
    ProductUpserted
    | StockReceived
    | StockAdjusted
    | StockCounted
    | ReserveStock
    | ReleaseStock
    | ConsumeStock
    | SoftReserve
    | SoftRelease
)
SoftNotice = Annotated[OpportunityConverted | OpportunityPreempted, Field(discriminator="kind")]


class Product(Model):
    description: str
    unit_price: Decimal
    unit_cost: Decimal
    lead_time_days: int


class Reservation(Model):
    reservation_id: str
    kind: Literal["ORDER", "OPPORTUNITY"]
    owner_id: str
    quantity: int = Field(gt=0)
    location: str
    expires_at: datetime | None = None
    priority: Priority = "MEDIUM"
    customer_id: str = ""
    reserved_at: datetime | None = None
    probability: float | None = None  # soft holds: the opportunity's win probability (pre-emption order)


class QueuedLine(Model):
    """A backordered order line waiting on this SKU for `quantity` more units."""

    backorder_id: str
    order_id: str
    line_id: str
    location: str
    quantity: int
    priority: Priority = "MEDIUM"
    tier: Tier = "BRONZE"
    customer_id: str = ""
    queued_at: datetime

    def sort_key(self) -> tuple[int, int, datetime, str, str]:
        """URGENT before LOW, then the better tier, then the oldest."""
        return (-PRIORITY_RANK[self.priority], -TIER_RANK[self.tier], self.queued_at, self.order_id, self.line_id)


class SkuLedger(Model):
    tenant_id: str
    sku: str
    version: int = 0
    product: Product | None = None
    on_hand: dict[str, int] = Field(default_factory=dict)
    reservations: dict[str, Reservation] = Field(default_factory=dict)
    backorders: tuple[QueuedLine, ...] = ()  # in queue order
    recent_lost: tuple[StockLost, ...] = ()  # what recent counts told orders, to tell them again on redelivery
    recent_soft: tuple[SoftNotice, ...] = ()  # what recent commands told opportunities, likewise
    # "opportunity|order|location" -> units the order naming the opportunity holds there (the latest
    # CONVERSIONS_KEPT): that much of the opportunity's demand is an order now.
    soft_converted: dict[str, int] = Field(default_factory=dict)
    # Recently applied command ids, oldest first, bounded by the dedup window.
    processed: tuple[str, ...] = ()
    # The command that produced this version and when: the availability of a version is a pure function
    # of the ledger, so a re-published availability is byte-for-byte the one published first.
    last_causation_id: str = ""
    updated_at: datetime | None = None

    def committed(self, location: str, kind: Literal["ORDER", "OPPORTUNITY"]) -> int:
        return _index(self).committed.get((location, kind), 0)

    def available(self, location: str) -> int:
        return (
            self.on_hand.get(location, 0) - self.committed(location, "ORDER") - self.committed(location, "OPPORTUNITY")
        )

    def locations(self) -> list[str]:
        return sorted(set(self.on_hand) | _index(self).locations | {q.location for q in self.backorders})

    def has_processed(self, command_id: str) -> bool:
        return command_id in self.processed

    def backordered(self, location: str) -> int:
        return sum(q.quantity for q in self.backorders if q.location == location)


class _Index:
    """Sums and owners over one reservations dict (`source`): units held per (location, kind) and the
    reservation ids of each (kind, owner). A ledger is immutable, so its index is a pure function of its
    reservations; `_Edit` hands the index on to the dict it makes, updated for the entries it changed, so a
    command on a SKU with thousands of open reservations costs what it changes, not what the SKU holds."""

    __slots__ = ("committed", "owners", "source")

    def __init__(self, source: dict[str, Reservation]) -> None:
        self.source = source
        self.committed: dict[tuple[str, str], int] = {}
        self.owners: dict[tuple[str, str], set[str]] = {}
        for r in source.values():
            self.add(r)

    def add(self, r: Reservation) -> None:
        key = (r.location, r.kind)
        self.committed[key] = self.committed.get(key, 0) + r.quantity
        self.owners.setdefault((r.kind, r.owner_id), set()).add(r.reservation_id)

    def remove(self, r: Reservation) -> None:
        key = (r.location, r.kind)
        left = self.committed[key] - r.quantity
        if left:
            self.committed[key] = left
        else:  # quantities are positive: none of that kind is held there any more
            del self.committed[key]
        owned = self.owners[(r.kind, r.owner_id)]
        owned.discard(r.reservation_id)
        if not owned:
            del self.owners[(r.kind, r.owner_id)]

    @property
    def locations(self) -> frozenset[str]:
        return frozenset(loc for loc, _ in self.committed)

    def snapshot(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], frozenset[str]]]:
        return dict(self.committed), {k: frozenset(v) for k, v in self.owners.items() if v}


# The indexes of the reservations dicts in use (id -> index; the index holds its dict, so an id is not
# reused while it is here), most recently used last.
_INDEXES: OrderedDict[int, _Index] = OrderedDict()
_INDEXES_KEPT = 4096


def _index(ledger: SkuLedger) -> _Index:
    return _index_of(ledger.reservations)


def _index_of(reservations: dict[str, Reservation]) -> _Index:
    hit = _INDEXES.get(id(reservations))
    if hit is not None and hit.source is reservations:
        _INDEXES.move_to_end(id(reservations))
        return hit
    index = _Index(reservations)
    _remember(index)
    return index


def _remember(index: _Index) -> None:
    _INDEXES[id(index.source)] = index
    _INDEXES.move_to_end(id(index.source))
    while len(_INDEXES) > _INDEXES_KEPT:
        _INDEXES.popitem(last=False)


class _Edit:
    """A new reservations dict made from `base` by changing a few entries. `done()` returns it, with the
    index of `base` carried over to it in O(changes) (the base's own index is rebuilt if it is asked for
    again), and its lineage noted (agents/core/lineage.py: the state store writes only what changed).
    Nothing may change the dict after `done()`."""

    def __init__(self, base: dict[str, Reservation], drop: Iterable[str] = ()) -> None:
        self.base = base
        self.new = dict(base)
        self.changed: set[str] = set()
        for rid in drop:
            self.drop(rid)

    def get(self, rid: str) -> Reservation | None:
        return self.new.get(rid)

    def put(self, r: Reservation) -> None:
        self.new[r.reservation_id] = r
        self.changed.add(r.reservation_id)

    def drop(self, rid: str) -> None:
        if rid in self.new:
            del self.new[rid]
            self.changed.add(rid)

    def done(self) -> dict[str, Reservation]:
        base, new = self.base, self.new
        index = _INDEXES.pop(id(base), None)
        if index is not None and index.source is base:
            for rid in self.changed:
                before, after = base.get(rid), new.get(rid)
                if before is not None:
                    index.remove(before)
                if after is not None:
                    index.add(after)
            index.source = new
            _remember(index)
        lineage.note(base, new, self.changed)
        return new


class BusinessRuleViolation(ValueError):
    """A well-formed command that the ledger refuses; it goes to the DLQ with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class LedgerResult:
    ledger: SkuLedger
    outputs: list[Output] = field(default_factory=list)
    replies: list[Command] = field(default_factory=list)
    duplicate: bool = False


def new_ledger(tenant_id: str, sku: str) -> SkuLedger:
    return SkuLedger(tenant_id=tenant_id, sku=sku)


def command_id(command: LedgerCommand) -> str:
    if isinstance(command, ProductUpserted):
        return f"product:{command.event_id}"
    if isinstance(command, ReserveStock | ReleaseStock | ConsumeStock | SoftReserve | SoftRelease):
        return f"cmd:{command.command_id}"
    return f"movement:{command.movement_id}"


def released_marker(order_id: str) -> str:
    return f"released:{order_id}"


def handle(
    ledger: SkuLedger, command: LedgerCommand, now: datetime, dedup_window: int = DEFAULT_DEDUP_WINDOW
) -> LedgerResult:
    """Apply one command; raise BusinessRuleViolation for a command that must be refused."""
    if (command.tenant_id, command.sku) != (ledger.tenant_id, ledger.sku):
        raise BusinessRuleViolation(
            f"command for {command.tenant_id}/{command.sku} routed to ledger {ledger.tenant_id}/{ledger.sku}"
        )
    result = _handle(ledger, command, now, dedup_window)
    if result.duplicate or not result.ledger.backorders or result.ledger is ledger:
        return result
    filled, replies = fill_backorders(result.ledger, now)
    if filled is result.ledger:
        return result
    return LedgerResult(filled, [availability(filled)], [*result.replies, *replies])


def fill_backorders(ledger: SkuLedger, now: datetime) -> tuple[SkuLedger, list[Command]]:
    """Give free stock to the queue, in queue order; a line is filled when all it waits for is reserved."""
    if not ledger.backorders:
        return ledger, []
    locations = set(ledger.on_hand) | _index(ledger).locations
    free = {loc: ledger.available(loc) for loc in locations}
    if all(units <= 0 for units in free.values()):
        return ledger, []  # nothing to give: a busy SKU's long queue is not walked on every command
    reservations = _Edit(ledger.reservations)
    queue: list[QueuedLine] = []
    replies: list[Command] = []
    changed = False
    for entry in sorted(ledger.backorders, key=QueuedLine.sort_key):
        take = min(entry.quantity, max(free.get(entry.location, 0), 0))
        if take == 0:
            queue.append(entry)
            continue
        changed = True
        free[entry.location] -= take
        rid = reservation_id(entry.order_id, entry.line_id)
        held = reservations.get(rid)
        filled = Reservation(
            reservation_id=rid,
            kind="ORDER",
            owner_id=entry.order_id,
            quantity=(held.quantity if held else 0) + take,
            location=entry.location,
            priority=entry.priority,
            customer_id=entry.customer_id,
            reserved_at=now,
        )
        reservations.put(filled)
        if take < entry.quantity:
            queue.append(entry.model_copy(update={"quantity": entry.quantity - take}))
            continue
        replies.append(
            BackorderFilled(
                command_id=event_id("BackorderFilled", ledger.tenant_id, entry.order_id, ledger.sku, entry.line_id),
                tenant_id=ledger.tenant_id,
                issued_at=now,
                order_id=entry.order_id,
                sku=ledger.sku,
                line_id=entry.line_id,
                location=entry.location,
                quantity=filled.quantity,
            )
        )
    if not changed:
        return ledger, []
    return ledger.model_copy(
        update={
            "reservations": reservations.done(),
            "backorders": tuple(sorted(queue, key=QueuedLine.sort_key)),
            "updated_at": now,
        }
    ), replies


def _handle(ledger: SkuLedger, command: LedgerCommand, now: datetime, dedup_window: int) -> LedgerResult:
    cid = command_id(command)
    if isinstance(command, ReserveStock):
        return _reserve(ledger, command, cid, now, dedup_window)
    if isinstance(command, ReleaseStock):
        return _release(ledger, command, cid, now, dedup_window)
    if isinstance(command, ConsumeStock):
        return _consume(ledger, command, cid, now, dedup_window)
    if isinstance(command, SoftReserve):
        return _soft_reserve(ledger, command, cid, now, dedup_window)
    if isinstance(command, SoftRelease):
        return _soft_release(ledger, command, cid, now, dedup_window)
    if ledger.has_processed(cid):
        # Re-send what the first attempt told orders and opportunities (the send may have been lost in a crash).
        again: list[Command] = [
            lost
            for lost in ledger.recent_lost
            if isinstance(command, StockCounted) and lost.movement_id == command.movement_id
        ]
        return LedgerResult(ledger, [availability(ledger)], [*again, *_notices_of(ledger, cid)], duplicate=True)
    changes: dict[str, object] = {}
    if isinstance(command, ProductUpserted):
        changes["product"] = Product(
            description=command.description,
            unit_price=command.unit_price,
            unit_cost=command.unit_cost,
            lead_time_days=command.lead_time_days,
        )
    else:
        changes["on_hand"] = {**ledger.on_hand, command.location: _new_on_hand(ledger, command)}
    nxt = _next_version(ledger, changes, cid, command.event_id, now, dedup_window)
    lost: list[Command] = []
    if isinstance(command, StockCounted):
        nxt, lost = _deallocate(nxt, command, now)
    return LedgerResult(nxt, [availability(nxt)], lost)


def _deallocate(ledger: SkuLedger, count: StockCounted, now: datetime) -> tuple[SkuLedger, list[Command]]:
    """A physical count below what is committed at the location: drop whole holds, soft holds first, then
    orders of the lowest priority, newest first, until reserved + soft_allocated <= on_hand again."""
    location = count.location
    deficit = -ledger.available(location)
    if deficit <= 0:
        return ledger, []
    holders: dict[tuple[str, str], list[Reservation]] = {}
    for r in ledger.reservations.values():
        if r.location == location:
            holders.setdefault((r.kind, r.owner_id), []).append(r)
    victims = sorted(
        holders.items(),
        key=lambda item: (
            item[0][0] == "ORDER",  # soft holds go first, the least likely first
            PRIORITY_RANK[item[1][0].priority],
            item[1][0].probability or 0.0,
            -(item[1][0].reserved_at or EPOCH).timestamp(),
            item[0][1],
        ),
    )
    dropped: set[str] = set()
    lost: list[Command] = []
    notices: list[OpportunityConverted | OpportunityPreempted] = []
    for (kind, owner), held in victims:
        if deficit <= 0:
            break
        quantity = sum(r.quantity for r in held)
        deficit -= quantity
        dropped.update(r.reservation_id for r in held)
        if kind == "OPPORTUNITY":
            notices.append(
                OpportunityPreempted(
                    command_id=event_id("OpportunityPreempted", ledger.tenant_id, owner, ledger.sku, count.movement_id),
                    tenant_id=ledger.tenant_id,
                    issued_at=now,
                    opportunity_id=owner,
                    sku=ledger.sku,
                    movement_id=count.movement_id,
                    items=(SoftLine(location=location, quantity=quantity),),
                    cause_id=f"movement:{count.movement_id}",
                    message=f"count {count.movement_id} found {count.quantity} at {location}, below what was committed",
                )
            )
        if kind == "ORDER":
            lost.append(
                StockLost(
                    command_id=event_id("StockLost", ledger.tenant_id, owner, ledger.sku, count.movement_id),
                    tenant_id=ledger.tenant_id,
                    issued_at=now,
                    order_id=owner,
                    sku=ledger.sku,
                    location=location,
                    quantity=quantity,
                    movement_id=count.movement_id,
                    message=f"count {count.movement_id} found {count.quantity} at {location}, below what was reserved",
                )
            )
    recent = (*ledger.recent_lost, *lost)[-RECENT_LOST_KEPT:]
    soft = (*ledger.recent_soft, *notices)[-RECENT_SOFT_KEPT:]
    kept = _Edit(ledger.reservations, dropped).done()
    nxt = ledger.model_copy(update={"reservations": kept, "recent_lost": recent, "recent_soft": soft})
    return nxt, [*lost, *notices]


def _next_version(
    ledger: SkuLedger, changes: dict[str, object], cid: str, causation: str, now: datetime, window: int
) -> SkuLedger:
    return ledger.model_copy(
        update={
            **changes,
            "processed": (*ledger.processed, cid)[-window:],
            "version": ledger.version + 1,
            "last_causation_id": causation,
            "updated_at": now,
        }
    )


def reservation_id(order_id: str, line_id: str) -> str:
    """The reservation of one order line: distinct for every distinct (order, line), whatever characters
    the ids hold (ids may contain `/`; `order/line` once gave two lines one reservation)."""
    return compose(order_id, line_id)


def _owned(ledger: SkuLedger, kind: str, owner_id: str) -> dict[str, Reservation]:
    reservations = ledger.reservations
    return {rid: reservations[rid] for rid in sorted(_index(ledger).owners.get((kind, owner_id), ()))}


def order_reservations(ledger: SkuLedger, order_id: str) -> dict[str, Reservation]:
    return _owned(ledger, "ORDER", order_id)


def soft_reservation_id(opportunity_id: str, location: str) -> str:
    """One soft hold per opportunity and location; `|` never occurs in an id, so this never collides with
    an order's reservation id (which starts with a digit: `compose`)."""
    return f"opportunity|{opportunity_id}|{location}"


def opportunity_reservations(ledger: SkuLedger, opportunity_id: str | None) -> dict[str, Reservation]:
    if not opportunity_id:
        return {}
    return _owned(ledger, "OPPORTUNITY", opportunity_id)


def _per_location(reservations: dict[str, Reservation]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in reservations.values():
        out[r.location] = out.get(r.location, 0) + r.quantity
    return out


def served(ledger: SkuLedger, opportunity_id: str, location: str) -> int:
    """Units that orders naming the opportunity hold at the location (as far as the ledger remembers)."""
    total = 0
    for key, quantity in ledger.soft_converted.items():
        opp, _, loc = key.split("|")
        if opp == opportunity_id and loc == location:
            total += quantity
    return total


def _notices_of(ledger: SkuLedger, cid: str) -> list[Command]:
    return [n for n in ledger.recent_soft if n.cause_id == cid]


def _shortages(ledger: SkuLedger, command: ReserveStock) -> list[LineShortage]:
    """Per location, the request's total against what is free there (what the order already holds on
    this SKU, and the soft holds of the opportunity it names, count as free for it)."""
    held = order_reservations(ledger, command.order_id)
    soft = _per_location(opportunity_reservations(ledger, command.opportunity_id))
    required: dict[str, int] = {}
    line_ids: dict[str, list[str]] = {}
    for line in command.lines:
        required[line.location] = required.get(line.location, 0) + line.quantity
        line_ids.setdefault(line.location, []).append(line.line_id)
    short = []
    for location, need in required.items():
        mine = sum(r.quantity for r in held.values() if r.location == location) + soft.get(location, 0)
        free = max(ledger.available(location) + mine, 0)
        if need > free:
            short.append(
                LineShortage(
                    line_id=",".join(line_ids[location]),
                    sku=ledger.sku,
                    location=location,
                    required=need,
                    available=free,
                    shortfall=need - free,
                )
            )
    return short


def _holds_exactly(ledger: SkuLedger, order_id: str, lines: tuple[LineRequest, ...]) -> bool:
    held = order_reservations(ledger, order_id)
    wanted = {reservation_id(order_id, ln.line_id): (ln.quantity, ln.location) for ln in lines}
    return {rid: (r.quantity, r.location) for rid, r in held.items()} == wanted


def _reply(ledger: SkuLedger, command: ReserveStock, accepted: bool, now: datetime, **fields: object) -> StockReserved:
    return StockReserved(
        command_id=event_id("StockReserved", command.command_id, accepted),
        tenant_id=ledger.tenant_id,
        issued_at=now,
        order_id=command.order_id,
        sku=ledger.sku,
        request_id=command.command_id,
        accepted=accepted,
        unit_cost=ledger.product.unit_cost if ledger.product else None,
        **fields,
    )


def _reserve(ledger: SkuLedger, command: ReserveStock, cid: str, now: datetime, window: int) -> LedgerResult:
    duplicate = ledger.has_processed(cid)
    if ledger.has_processed(released_marker(command.order_id)):
        msg = f"order {command.order_id} was released on {ledger.sku}; it cannot reserve again"
        seen = ledger if duplicate else ledger.model_copy(update={"processed": (*ledger.processed, cid)[-window:]})
        return LedgerResult(seen, [], [_reply(ledger, command, False, now, message=msg)], duplicate=duplicate)
    again = _notices_of(ledger, cid)  # conversions and pre-emptions the first attempt told opportunities
    if duplicate and command.backorder:
        waiting = tuple(
            LineRequest(line_id=q.line_id, sku=ledger.sku, quantity=q.quantity, location=q.location)
            for q in ledger.backorders
            if q.order_id == command.order_id
        )
        return LedgerResult(
            ledger, [availability(ledger)], [_reply(ledger, command, True, now, backordered=waiting), *again], True
        )
    if duplicate:
        # A re-sent request: answer as the ledger stands, without changing it.
        if _holds_exactly(ledger, command.order_id, command.lines):
            reply = _reply(ledger, command, True, now)
            return LedgerResult(ledger, [availability(ledger)], [reply, *again], duplicate=True)
        reply = _reply(ledger, command, False, now, shortages=tuple(_shortages(ledger, command)))
        return LedgerResult(ledger, [], [reply, *again], duplicate=True)
    if command.backorder:
        return _reserve_or_queue(ledger, command, cid, now, window)
    short = _shortages(ledger, command)
    victims = _preemption_victims(ledger, command, short) if short else []
    if victims is None:
        seen = ledger.model_copy(update={"processed": (*ledger.processed, cid)[-window:]})
        return LedgerResult(seen, [], [_reply(ledger, command, False, now, shortages=tuple(short))])
    kept = _Edit(
        ledger.reservations, (*order_reservations(ledger, command.order_id), *(r.reservation_id for r in victims))
    )
    for line in command.lines:
        kept.put(_order_hold(command, line, line.quantity, now))
    need: dict[str, int] = {}
    for line in command.lines:
        need[line.location] = need.get(line.location, 0) + line.quantity
    changes, converted = _convert(ledger, kept, command, need, cid, now)
    notices: list[Command] = [*_preempted(ledger, command, victims, short, cid, now), *converted]
    if notices:
        changes["recent_soft"] = (*ledger.recent_soft, *notices)[-RECENT_SOFT_KEPT:]
    nxt = _next_version(ledger, changes, cid, command.command_id, now, window)
    return LedgerResult(nxt, [availability(nxt)], [_reply(nxt, command, True, now), *notices])


def _order_hold(command: ReserveStock, line: LineRequest, quantity: int, now: datetime) -> Reservation:
    """The reservation of `quantity` units for one line of a ReserveStock."""
    return Reservation(
        reservation_id=reservation_id(command.order_id, line.line_id),
        kind="ORDER",
        owner_id=command.order_id,
        quantity=quantity,
        location=line.location,
        expires_at=command.expires_at,
        priority=command.priority,
        customer_id=command.customer_id,
        reserved_at=now,
    )


def _preemption_victims(
    ledger: SkuLedger, command: ReserveStock, short: list[LineShortage]
) -> list[Reservation] | None:
    """The whole soft holds (of opportunities other than the one the order names) to drop so that the order
    fits at every short location, lowest probability first, newest first among equals; None if even all
    of them at some location would not be enough."""
    victims: list[Reservation] = []
    for shortage in short:
        candidates = sorted(
            (
                r
                for r in ledger.reservations.values()
                if r.kind == "OPPORTUNITY" and r.location == shortage.location and r.owner_id != command.opportunity_id
            ),
            key=lambda r: (r.probability or 0.0, -(r.reserved_at or EPOCH).timestamp(), r.reservation_id),
        )
        freed = 0
        for r in candidates:
            if freed >= shortage.shortfall:
                break
            victims.append(r)
            freed += r.quantity
        if freed < shortage.shortfall:
            return None
    return victims


def _preempted(
    ledger: SkuLedger,
    command: ReserveStock,
    victims: list[Reservation],
    short: list[LineShortage],
    cid: str,
    now: datetime,
) -> list[OpportunityPreempted]:
    by_owner: dict[str, list[Reservation]] = {}
    for r in victims:
        by_owner.setdefault(r.owner_id, []).append(r)
    shortfall = {s.location: s.shortfall for s in short}
    return [
        OpportunityPreempted(
            command_id=event_id("OpportunityPreempted", command.command_id, owner),
            tenant_id=ledger.tenant_id,
            issued_at=now,
            opportunity_id=owner,
            sku=ledger.sku,
            order_id=command.order_id,
            items=tuple(SoftLine(location=r.location, quantity=r.quantity) for r in sorted(held, key=_by_location)),
            cause_id=cid,
            message="; ".join(
                f"order {command.order_id} was {shortfall[r.location]} short at {r.location}" for r in held
            ),
        )
        for owner, held in sorted(by_owner.items())
    ]


def _by_location(r: Reservation) -> str:
    return r.location


def _convert(
    ledger: SkuLedger,
    reservations: _Edit,
    command: ReserveStock,
    taken: dict[str, int],
    cid: str,
    now: datetime,
) -> tuple[dict[str, object], list[OpportunityConverted]]:
    """The order takes over the soft holds of the opportunity it names: per location, what it takes beyond
    what it already held there comes out of the hold first (only up to the hold; the rest of the hold
    stays). Returns the ledger changes and the OpportunityConverted notice (sent whenever the order names
    the opportunity, so that it learns what the order holds even when nothing came out of its holds).
    `reservations` is the edit the command made; the changes hold the dict it ends with."""
    opportunity = command.opportunity_id
    if not opportunity:
        return {"reservations": reservations.done()}, []
    before = _per_location(order_reservations(ledger, command.order_id))
    items: list[SoftLine] = []
    for rid, hold in sorted(opportunity_reservations(ledger, opportunity).items()):
        take = min(hold.quantity, max(taken.get(hold.location, 0) - before.get(hold.location, 0), 0))
        if take == 0:
            continue
        if take == hold.quantity:
            reservations.drop(rid)
        else:
            reservations.put(hold.model_copy(update={"quantity": hold.quantity - take}))
        items.append(SoftLine(location=hold.location, quantity=take))
    converted = dict(ledger.soft_converted)
    for location in sorted(set(before) | set(taken)):
        key = f"{opportunity}|{command.order_id}|{location}"
        converted.pop(key, None)
        if taken.get(location, 0):
            converted[key] = taken[location]  # (re-)inserted last: the most recent are the ones kept
    changes: dict[str, object] = {
        "reservations": reservations.done(),
        "soft_converted": dict(list(converted.items())[-CONVERSIONS_KEPT:]),
    }
    ordered = tuple(SoftLine(location=loc, quantity=q) for loc, q in sorted(taken.items()) if q)
    return changes, [
        OpportunityConverted(
            command_id=event_id("OpportunityConverted", command.command_id, opportunity),
            tenant_id=ledger.tenant_id,
            issued_at=now,
            opportunity_id=opportunity,
            sku=ledger.sku,
            order_id=command.order_id,
            items=tuple(items),
            ordered=ordered,
            cause_id=cid,
        )
    ]


def _consume(ledger: SkuLedger, command: ConsumeStock, cid: str, now: datetime, window: int) -> LedgerResult:
    """Issue reserved stock for a fulfillment: the reservation and on-hand drop together, so what is
    available to others does not change."""
    if ledger.has_processed(cid):
        return LedgerResult(ledger, [availability(ledger)], duplicate=True)
    reservations = _Edit(ledger.reservations)
    on_hand = dict(ledger.on_hand)
    for line in command.lines:
        rid = reservation_id(command.order_id, line.line_id)
        held = reservations.get(rid)
        take = min(line.quantity, held.quantity if held else 0)
        if held is None or take == 0:
            continue
        if held.quantity == take:
            reservations.drop(rid)
        else:
            reservations.put(held.model_copy(update={"quantity": held.quantity - take}))
        on_hand[line.location] = on_hand.get(line.location, 0) - take
    nxt = _next_version(
        ledger, {"reservations": reservations.done(), "on_hand": on_hand}, cid, command.command_id, now, window
    )
    return LedgerResult(nxt, [availability(nxt)])


def _reserve_or_queue(ledger: SkuLedger, command: ReserveStock, cid: str, now: datetime, window: int) -> LedgerResult:
    """Backorder policy: each line takes what is free at its location; the rest joins the queue."""
    mine = order_reservations(ledger, command.order_id)
    kept = _Edit(ledger.reservations, mine)
    queue = [q for q in ledger.backorders if q.order_id != command.order_id]
    # What the order held here is free for it again; so are the soft holds it converts (taken as it takes).
    own = _per_location(mine)
    soft = _per_location(opportunity_reservations(ledger, command.opportunity_id))
    free = {
        loc: ledger.available(loc) + own.get(loc, 0) + soft.get(loc, 0) for loc in {ln.location for ln in command.lines}
    }
    queued: list[LineRequest] = []
    taken: dict[str, int] = {}
    for line in command.lines:
        take = min(line.quantity, max(free[line.location], 0))
        free[line.location] -= take
        taken[line.location] = taken.get(line.location, 0) + take
        if take:
            kept.put(_order_hold(command, line, take, now))
        if take < line.quantity:
            queued.append(line.model_copy(update={"quantity": line.quantity - take}))
            bisect.insort(  # the queue is kept in order: a new line goes to its place, nothing is re-sorted
                queue,
                QueuedLine(
                    backorder_id=event_id("backorder", ledger.tenant_id, command.order_id),
                    order_id=command.order_id,
                    line_id=line.line_id,
                    location=line.location,
                    quantity=line.quantity - take,
                    priority=command.priority,
                    tier=command.tier,
                    customer_id=command.customer_id,
                    queued_at=command.ordered_at or now,
                ),
                key=QueuedLine.sort_key,
            )
    changes, notices = _convert(ledger, kept, command, taken, cid, now)
    changes["backorders"] = tuple(queue)
    if notices:
        changes["recent_soft"] = (*ledger.recent_soft, *notices)[-RECENT_SOFT_KEPT:]
    nxt = _next_version(ledger, changes, cid, command.command_id, now, window)
    reply = _reply(nxt, command, True, now, backordered=tuple(queued))
    return LedgerResult(nxt, [availability(nxt)], [reply, *notices])


def _release(ledger: SkuLedger, command: ReleaseStock, cid: str, now: datetime, window: int) -> LedgerResult:
    marker = released_marker(command.order_id)
    held = order_reservations(ledger, command.order_id)
    queued = [q for q in ledger.backorders if q.order_id == command.order_id]
    if not held and not queued:
        if ledger.has_processed(marker):
            return LedgerResult(ledger, duplicate=True)
        # Nothing held (yet): remember the release so a late reservation for the order is refused.
        return LedgerResult(ledger.model_copy(update={"processed": (*ledger.processed, marker)[-window:]}))
    queue = tuple(q for q in ledger.backorders if q.order_id != command.order_id)
    changes: dict[str, object] = {"reservations": _Edit(ledger.reservations, held).done(), "backorders": queue}
    nxt = _next_version(ledger, changes, marker, command.command_id, now, window)
    return LedgerResult(nxt, [availability(nxt)])


def _soft_wanted(ledger: SkuLedger, command: SoftReserve) -> dict[str, int]:
    """Per location, what the opportunity asks to hold, less what orders naming it hold there that it had
    not heard of when it asked (so the same demand is never held twice)."""
    wanted: dict[str, int] = {}
    for line in command.lines:
        wanted[line.location] = wanted.get(line.location, 0) + line.quantity
    known: dict[str, int] = {}
    for line in command.converted:
        known[line.location] = known.get(line.location, 0) + line.quantity
    out = {}
    for location, quantity in sorted(wanted.items()):
        unseen = max(served(ledger, command.opportunity_id, location) - known.get(location, 0), 0)
        if quantity - unseen > 0:
            out[location] = quantity - unseen
    return out


def _soft_shortages(ledger: SkuLedger, command: SoftReserve, wanted: dict[str, int]) -> list[LineShortage]:
    """What the opportunity holds at a location stays free for it; beyond that it may take only what queued
    backorders there do not wait for."""
    held = _per_location(opportunity_reservations(ledger, command.opportunity_id))
    short = []
    for location, need in sorted(wanted.items()):
        spare = ledger.available(location) - ledger.backordered(location)
        free = held.get(location, 0) + max(spare, 0)
        if need > free:
            short.append(
                LineShortage(
                    line_id="",
                    sku=ledger.sku,
                    location=location,
                    required=need,
                    available=free,
                    shortfall=need - free,
                )
            )
    return short


def _soft_reply(
    ledger: SkuLedger, command: SoftReserve, accepted: bool, now: datetime, **fields: object
) -> SoftReserved:
    held = _per_location(opportunity_reservations(ledger, command.opportunity_id)) if accepted else {}
    return SoftReserved(
        command_id=event_id("SoftReserved", command.command_id, accepted),
        tenant_id=ledger.tenant_id,
        issued_at=now,
        opportunity_id=command.opportunity_id,
        sku=ledger.sku,
        request_id=command.command_id,
        accepted=accepted,
        held=tuple(SoftLine(location=loc, quantity=q) for loc, q in sorted(held.items())),
        **fields,
    )


def _soft_reserve(ledger: SkuLedger, command: SoftReserve, cid: str, now: datetime, window: int) -> LedgerResult:
    """Make the opportunity's soft holds on this SKU exactly what it asks for, all locations or none."""
    wanted = _soft_wanted(ledger, command)
    held = opportunity_reservations(ledger, command.opportunity_id)
    if ledger.has_processed(cid):  # a re-sent request: answer as the ledger stands
        if _per_location(held) == wanted:
            reply = _soft_reply(ledger, command, True, now)
            return LedgerResult(ledger, [availability(ledger)], [reply], duplicate=True)
        reply = _soft_reply(ledger, command, False, now, shortages=tuple(_soft_shortages(ledger, command, wanted)))
        return LedgerResult(ledger, [], [reply], duplicate=True)
    short = _soft_shortages(ledger, command, wanted)
    if short:
        seen = ledger.model_copy(update={"processed": (*ledger.processed, cid)[-window:]})
        return LedgerResult(seen, [], [_soft_reply(ledger, command, False, now, shortages=tuple(short))])
    kept = _Edit(ledger.reservations, held)
    for location, quantity in wanted.items():
        rid = soft_reservation_id(command.opportunity_id, location)
        before = held.get(rid)
        kept.put(
            Reservation(
                reservation_id=rid,
                kind="OPPORTUNITY",
                owner_id=command.opportunity_id,
                quantity=quantity,
                location=location,
                expires_at=command.expires_at,
                customer_id=command.customer_id,
                reserved_at=before.reserved_at if before is not None and before.reserved_at else now,  # age kept
                probability=command.probability,
            )
        )
    nxt = _next_version(ledger, {"reservations": kept.done()}, cid, command.command_id, now, window)
    return LedgerResult(nxt, [availability(nxt)], [_soft_reply(nxt, command, True, now)])


def _soft_release(ledger: SkuLedger, command: SoftRelease, cid: str, now: datetime, window: int) -> LedgerResult:
    if ledger.has_processed(cid):
        return LedgerResult(ledger, [availability(ledger)], duplicate=True)
    held = opportunity_reservations(ledger, command.opportunity_id)
    if not held:
        return LedgerResult(ledger.model_copy(update={"processed": (*ledger.processed, cid)[-window:]}))
    nxt = _next_version(
        ledger, {"reservations": _Edit(ledger.reservations, held).done()}, cid, command.command_id, now, window
    )
    return LedgerResult(nxt, [availability(nxt)])


def _new_on_hand(ledger: SkuLedger, movement: Movement) -> int:
    current = ledger.on_hand.get(movement.location, 0)
    if isinstance(movement, StockReceived):
        return current + movement.quantity
    if isinstance(movement, StockCounted):
        return movement.quantity
    result = current + movement.delta
    committed = current - ledger.available(movement.location)
    if result < committed:
        floor = "0" if committed == 0 else f"{committed} (reserved and soft-allocated)"
        raise BusinessRuleViolation(
            f"StockAdjusted {movement.movement_id}: delta {movement.delta} at {movement.location} would take "
            f"on_hand from {current} to {result}, below {floor}; send a StockCounted with the physical count"
        )
    return result


def availability(ledger: SkuLedger) -> SkuAvailability:
    """The SKU's availability as of this ledger version (event id derived from the version alone)."""
    as_of = ledger.updated_at or EPOCH
    locations = tuple(
        LocationAvailability(
            location=loc,
            on_hand=ledger.on_hand.get(loc, 0),
            reserved=ledger.committed(loc, "ORDER"),
            soft_allocated=ledger.committed(loc, "OPPORTUNITY"),
            backordered=sum(q.quantity for q in ledger.backorders if q.location == loc),
            available=max(ledger.available(loc), 0),
        )
        for loc in ledger.locations()
    )
    product = ledger.product
    return SkuAvailability(
        event_id=event_id("availability", ledger.tenant_id, ledger.sku, ledger.version),
        tenant_id=ledger.tenant_id,
        occurred_at=as_of,
        causation_id=ledger.last_causation_id,
        sku=ledger.sku,
        description=product.description if product else None,
        unit_price=product.unit_price if product else None,
        lead_time_days=product.lead_time_days if product else None,
        locations=locations,
        version=ledger.version,
        as_of=as_of,
    )
