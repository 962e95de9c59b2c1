"""The SKU ledger: on-hand stock per location, reservations and idempotency for one `tenant|sku`.

`handle(ledger, command, now)` is a pure transition: it returns the next ledger and what to publish.
A command the ledger has already applied (same movement or event id inside the dedup window) changes
nothing and re-publishes the current availability, whose event id depends only on the ledger version,
so consumers see the very same event again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field

from agents.core.commands import (
    BackorderFilled,
    Command,
    ConsumeStock,
    LineRequest,
    LineShortage,
    ReleaseStock,
    ReserveStock,
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
from agents.core.ids import event_id

DEFAULT_DEDUP_WINDOW = 512
PRIORITY_RANK = {"LOW": 0, "MEDIUM": 1, "HIGH": 2, "URGENT": 3}
RECENT_LOST_KEPT = 32
TIER_RANK = {"BRONZE": 0, "SILVER": 1, "GOLD": 2, "PLATINUM": 3}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Movement = StockReceived | StockAdjusted | StockCounted
LedgerCommand = (
    ProductUpserted | StockReceived | StockAdjusted | StockCounted | ReserveStock | ReleaseStock | ConsumeStock
)


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
    # Recently applied command ids, oldest first, bounded by the dedup window.
    processed: tuple[str, ...] = ()
    # The command that produced this version and when: the availability of a version is a pure function
    # of the ledger, so a re-published availability is byte-for-byte the one published first.
    last_causation_id: str = ""
    updated_at: datetime | None = None

    def committed(self, location: str, kind: Literal["ORDER", "OPPORTUNITY"]) -> int:
        return sum(r.quantity for r in self.reservations.values() if r.location == location and r.kind == kind)

    def available(self, location: str) -> int:
        return (
            self.on_hand.get(location, 0) - self.committed(location, "ORDER") - self.committed(location, "OPPORTUNITY")
        )

    def locations(self) -> list[str]:
        return sorted(
            set(self.on_hand) | {r.location for r in self.reservations.values()} | {q.location for q in self.backorders}
        )

    def has_processed(self, command_id: str) -> bool:
        return command_id in self.processed


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
    if isinstance(command, ReserveStock | ReleaseStock | ConsumeStock):
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
    reservations = dict(ledger.reservations)
    queue: list[QueuedLine] = []
    replies: list[Command] = []
    free = {loc: ledger.available(loc) for loc in ledger.locations()}
    for entry in sorted(ledger.backorders, key=QueuedLine.sort_key):
        take = min(entry.quantity, max(free.get(entry.location, 0), 0))
        if take == 0:
            queue.append(entry)
            continue
        free[entry.location] -= take
        rid = reservation_id(entry.order_id, entry.line_id)
        held = reservations.get(rid)
        reservations[rid] = Reservation(
            reservation_id=rid,
            kind="ORDER",
            owner_id=entry.order_id,
            quantity=(held.quantity if held else 0) + take,
            location=entry.location,
            priority=entry.priority,
            customer_id=entry.customer_id,
            reserved_at=now,
        )
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
                quantity=reservations[rid].quantity,
            )
        )
    if len(queue) == len(ledger.backorders) and all(a == b for a, b in zip(queue, ledger.backorders, strict=True)):
        return ledger, []
    return ledger.model_copy(
        update={
            "reservations": reservations,
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
    if ledger.has_processed(cid):
        # Re-send what the first attempt told orders (the send may have been lost in a crash).
        again: list[Command] = [
            lost
            for lost in ledger.recent_lost
            if isinstance(command, StockCounted) and lost.movement_id == command.movement_id
        ]
        return LedgerResult(ledger, [availability(ledger)], again, duplicate=True)
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
            item[0][0] == "ORDER",  # soft holds go first
            PRIORITY_RANK[item[1][0].priority],
            -(item[1][0].reserved_at or EPOCH).timestamp(),
            item[0][1],
        ),
    )
    dropped: set[str] = set()
    lost: list[Command] = []
    for (kind, owner), held in victims:
        if deficit <= 0:
            break
        quantity = sum(r.quantity for r in held)
        deficit -= quantity
        dropped.update(r.reservation_id for r in held)
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
    kept = {rid: r for rid, r in ledger.reservations.items() if rid not in dropped}
    recent = (*ledger.recent_lost, *lost)[-RECENT_LOST_KEPT:]
    return ledger.model_copy(update={"reservations": kept, "recent_lost": recent}), lost


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
    return f"{order_id}/{line_id}"


def order_reservations(ledger: SkuLedger, order_id: str) -> dict[str, Reservation]:
    return {rid: r for rid, r in ledger.reservations.items() if r.kind == "ORDER" and r.owner_id == order_id}


def _shortages(ledger: SkuLedger, command: ReserveStock) -> list[LineShortage]:
    """Per location, the request's total against what is free there (what the order already holds on
    this SKU counts as free for it)."""
    held = order_reservations(ledger, command.order_id)
    required: dict[str, int] = {}
    line_ids: dict[str, list[str]] = {}
    for line in command.lines:
        required[line.location] = required.get(line.location, 0) + line.quantity
        line_ids.setdefault(line.location, []).append(line.line_id)
    short = []
    for location, need in required.items():
        mine = sum(r.quantity for r in held.values() if r.location == location)
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
    if duplicate and command.backorder:
        waiting = tuple(
            LineRequest(line_id=q.line_id, sku=ledger.sku, quantity=q.quantity, location=q.location)
            for q in ledger.backorders
            if q.order_id == command.order_id
        )
        return LedgerResult(
            ledger, [availability(ledger)], [_reply(ledger, command, True, now, backordered=waiting)], True
        )
    if duplicate:
        # A re-sent request: answer as the ledger stands, without changing it.
        if _holds_exactly(ledger, command.order_id, command.lines):
            return LedgerResult(ledger, [availability(ledger)], [_reply(ledger, command, True, now)], duplicate=True)
        reply = _reply(ledger, command, False, now, shortages=tuple(_shortages(ledger, command)))
        return LedgerResult(ledger, [], [reply], duplicate=True)
    if command.backorder:
        return _reserve_or_queue(ledger, command, cid, now, window)
    short = _shortages(ledger, command)
    if short:
        seen = ledger.model_copy(update={"processed": (*ledger.processed, cid)[-window:]})
        return LedgerResult(seen, [], [_reply(ledger, command, False, now, shortages=tuple(short))])
    kept = {
        rid: r for rid, r in ledger.reservations.items() if not (r.kind == "ORDER" and r.owner_id == command.order_id)
    }
    for line in command.lines:
        rid = reservation_id(command.order_id, line.line_id)
        kept[rid] = Reservation(
            reservation_id=rid,
            kind="ORDER",
            owner_id=command.order_id,
            quantity=line.quantity,
            location=line.location,
            expires_at=command.expires_at,
            priority=command.priority,
            customer_id=command.customer_id,
            reserved_at=now,
        )
    nxt = _next_version(ledger, {"reservations": kept}, cid, command.command_id, now, window)
    return LedgerResult(nxt, [availability(nxt)], [_reply(nxt, command, True, now)])


def _consume(ledger: SkuLedger, command: ConsumeStock, cid: str, now: datetime, window: int) -> LedgerResult:
    """Issue reserved stock for a fulfillment: the reservation and on-hand drop together, so what is
    available to others does not change."""
    if ledger.has_processed(cid):
        return LedgerResult(ledger, [availability(ledger)], duplicate=True)
    reservations = dict(ledger.reservations)
    on_hand = dict(ledger.on_hand)
    for line in command.lines:
        rid = reservation_id(command.order_id, line.line_id)
        held = reservations.get(rid)
        take = min(line.quantity, held.quantity if held else 0)
        if held is None or take == 0:
            continue
        if held.quantity == take:
            del reservations[rid]
        else:
            reservations[rid] = held.model_copy(update={"quantity": held.quantity - take})
        on_hand[line.location] = on_hand.get(line.location, 0) - take
    nxt = _next_version(
        ledger, {"reservations": reservations, "on_hand": on_hand}, cid, command.command_id, now, window
    )
    return LedgerResult(nxt, [availability(nxt)])


def _reserve_or_queue(ledger: SkuLedger, command: ReserveStock, cid: str, now: datetime, window: int) -> LedgerResult:
    """Backorder policy: each line takes what is free at its location; the rest joins the queue."""
    mine = order_reservations(ledger, command.order_id)
    kept = {rid: r for rid, r in ledger.reservations.items() if rid not in mine}
    queue = [q for q in ledger.backorders if q.order_id != command.order_id]
    base = ledger.model_copy(update={"reservations": kept, "backorders": ()})
    free = {loc: base.available(loc) for loc in {ln.location for ln in command.lines}}
    queued: list[LineRequest] = []
    for line in command.lines:
        take = min(line.quantity, max(free[line.location], 0))
        free[line.location] -= take
        rid = reservation_id(command.order_id, line.line_id)
        if take:
            kept[rid] = Reservation(
                reservation_id=rid,
                kind="ORDER",
                owner_id=command.order_id,
                quantity=take,
                location=line.location,
                expires_at=command.expires_at,
                priority=command.priority,
                customer_id=command.customer_id,
                reserved_at=now,
            )
        if take < line.quantity:
            queued.append(line.model_copy(update={"quantity": line.quantity - take}))
            queue.append(
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
                )
            )
    changes: dict[str, object] = {"reservations": kept, "backorders": tuple(sorted(queue, key=QueuedLine.sort_key))}
    nxt = _next_version(ledger, changes, cid, command.command_id, now, window)
    return LedgerResult(nxt, [availability(nxt)], [_reply(nxt, command, True, now, backordered=tuple(queued))])


def _release(ledger: SkuLedger, command: ReleaseStock, cid: str, now: datetime, window: int) -> LedgerResult:
    marker = released_marker(command.order_id)
    held = order_reservations(ledger, command.order_id)
    queued = [q for q in ledger.backorders if q.order_id == command.order_id]
    if not held and not queued:
        if ledger.has_processed(marker):
            return LedgerResult(ledger, duplicate=True)
        # Nothing held (yet): remember the release so a late reservation for the order is refused.
        return LedgerResult(ledger.model_copy(update={"processed": (*ledger.processed, marker)[-window:]}))
    kept = {rid: r for rid, r in ledger.reservations.items() if rid not in held}
    queue = tuple(q for q in ledger.backorders if q.order_id != command.order_id)
    nxt = _next_version(ledger, {"reservations": kept, "backorders": queue}, marker, command.command_id, now, window)
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
