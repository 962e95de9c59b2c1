"""The order saga (one per `tenant|order`): prices and holds credit through the customer partition,
reserves every line through the SKU ledgers, and settles all-or-nothing.

`handle(saga, message, now, hold)` returns the next saga, the outputs to publish and the commands to send
to other partitions. Outcomes are stored in the saga, so a duplicate input re-publishes the very same
events (same event ids) instead of deciding again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field

from agents.core import fulfillment as fulfil
from agents.core.commands import (
    BackorderFilled,
    Command,
    ExpiryTick,
    LineRequest,
    LineShortage,
    OpenOrder,
    OrderPriced,
    PriceOrder,
    ReleaseCredit,
    ReleaseStock,
    ReserveStock,
    StockLost,
    StockReserved,
)
from agents.core.events import (
    AllocatedLine,
    BackorderCancelled,
    BackorderCreated,
    BackorderFulfilled,
    BackorderItem,
    BackorderOutput,
    BackorderPolicy,
    FulfillmentAccepted,
    FulfillmentCompleted,
    FulfillmentRejected,
    FulfillmentStarted,
    Model,
    OrderAllocationRejected,
    OrderBackordered,
    OrderCancelled,
    OrderInventoryAllocated,
    OrderInventoryReleased,
    OrderInventorySynced,
    OrderPlaced,
    OrderSnapshot,
    OrderStatus,
    Output,
    Priority,
    ReleasedLine,
    ShipmentDelivered,
    ShipmentDispatched,
    ShippedItem,
    SyncedLine,
    Tier,
    UnavailableItem,
)
from agents.core.ids import event_id

OutputT = TypeVar("OutputT", bound=Output)
DEFAULT_DEDUP_WINDOW = 64
SYNC_ANSWERS_KEPT = 8
TERMINAL: frozenset[str] = frozenset({"REJECTED", "CANCELLED", "EXPIRED", "DELIVERED"})

OrderOutcome = Annotated[
    OrderInventoryAllocated
    | OrderAllocationRejected
    | OrderInventoryReleased
    | OrderInventorySynced
    | OrderBackordered,
    Field(discriminator="event_type"),
]
SagaMessage = (
    OrderPlaced
    | OpenOrder
    | OrderCancelled
    | OrderSnapshot
    | OrderPriced
    | StockReserved
    | StockLost
    | BackorderFilled
    | ExpiryTick
    | FulfillmentStarted
    | FulfillmentCompleted
    | ShipmentDispatched
    | ShipmentDelivered
)


class SagaLine(Model):
    line_id: str
    sku: str
    quantity: int
    location: str
    unit_price: Decimal | None = None
    customer_price: Decimal | None = None
    unit_cost: Decimal | None = None

    def request(self) -> LineRequest:
        return LineRequest(line_id=self.line_id, sku=self.sku, quantity=self.quantity, location=self.location)


class SkuReply(Model):
    accepted: bool
    shortages: tuple[LineShortage, ...] = ()
    backordered: tuple[LineRequest, ...] = ()
    unit_cost: Decimal | None = None


class Round(Model):
    """One price-then-reserve round: the placement, or a sync with the OMS's snapshot."""

    purpose: Literal["PLACE", "SYNC"]
    causation_id: str
    phase: Literal["PRICING", "RESERVING"] = "PRICING"
    price_request_id: str = ""
    lines: tuple[SagaLine, ...] = ()  # what the round asks for
    reserve_requests: dict[str, str] = Field(default_factory=dict)  # sku -> ReserveStock command id
    replies: dict[str, SkuReply] = Field(default_factory=dict)
    order_value: Decimal = Decimal(0)


class OrderSaga(Model):
    tenant_id: str
    order_id: str
    status: OrderStatus = "PENDING"
    placed: bool = False
    placed_event_id: str = ""
    customer_id: str = ""
    order_number: str = ""
    order_date: datetime | None = None
    priority: Priority = "MEDIUM"
    backorder_policy: BackorderPolicy = "REJECT"
    opportunity_id: str | None = None
    lines: tuple[SagaLine, ...] = ()  # the lines as reserved (or requested, before allocation)
    order_value: Decimal = Decimal(0)
    reserved_until: datetime | None = None
    round: Round | None = None
    outcome: OrderOutcome | None = None  # the placement's terminal outcome
    last_event: OrderOutcome | None = None  # the latest event published for this order
    cancel_reason: str = ""
    tier: Tier = "BRONZE"
    backorder_id: str = ""
    waiting: tuple[str, ...] = ()  # "sku|line_id" of backordered lines not filled yet
    backorder_items: tuple[BackorderItem, ...] = ()
    backorder_status: str = ""  # PENDING, FULFILLED or CANCELLED once the order was backordered
    backordered_at: datetime | None = None
    backorder_filled_at: datetime | None = None
    backorder_causation: str = ""  # what fulfilled or cancelled the backorder, to publish its event again
    sync_answers: tuple[OrderInventorySynced, ...] = ()  # the latest snapshots' answers
    fulfillments: dict[str, fulfil.Fulfillment] = Field(default_factory=dict)
    consumed: dict[str, int] = Field(default_factory=dict)  # line id -> quantity issued by fulfillments
    early: dict[str, tuple[fulfil.ShipmentEvent, ...]] = Field(default_factory=dict)  # before their start
    processed: tuple[str, ...] = ()
    version: int = 0

    def line_shapes(self) -> tuple[tuple[str, str, str, int], ...]:
        return tuple((ln.line_id, ln.sku, ln.location, ln.quantity) for ln in self.lines)


@dataclass(frozen=True)
class SagaResult:
    saga: OrderSaga
    outputs: list[Output] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    duplicate: bool = False
    note: str = ""  # why nothing happened, for the log


def new_saga(tenant_id: str, order_id: str) -> OrderSaga:
    return OrderSaga(tenant_id=tenant_id, order_id=order_id)


def _bump(saga: OrderSaga, seen: str | None = None, **changes: object) -> OrderSaga:
    processed = (*saga.processed, seen)[-DEFAULT_DEDUP_WINDOW:] if seen else saga.processed
    return saga.model_copy(update={**changes, "processed": processed, "version": saga.version + 1})


def handle(saga: OrderSaga, message: SagaMessage, now: datetime, hold: timedelta) -> SagaResult:
    match message:
        case OrderPlaced():
            return _place(saga, message, now)
        case OpenOrder():
            return _open(saga, message, now, hold)
        case OrderPriced():
            return _priced(saga, message, now, hold)
        case StockReserved():
            return _reserved(saga, message, now)
        case OrderCancelled():
            return _cancel(saga, message, now)
        case OrderSnapshot():
            return _sync(saga, message, now)
        case StockLost():
            return _stock_lost(saga, message, now)
        case BackorderFilled():
            return _backorder_filled(saga, message, now, hold)
        case FulfillmentStarted():
            return _start_fulfillment(saga, message, now)
        case FulfillmentCompleted() | ShipmentDispatched() | ShipmentDelivered():
            return _advance_fulfillment(saga, message, now)
        case ExpiryTick():
            return expire(saga, message.issued_at, message.command_id)
    raise TypeError(f"unexpected message {type(message).__name__}")  # pragma: no cover


# ---- redelivery ----------------------------------------------------------------------------------------


def resend(saga: OrderSaga, now: datetime, note: str) -> SagaResult:
    """A redelivered or stale message: change nothing, but send again what the current state implies, since
    the first attempt's sends may not have been flushed before a crash. Every re-sent command has its
    original id (targets dedupe it) and every re-published event its original event id."""
    outputs: list[Output] = [saga.last_event] if saga.last_event is not None else []
    if saga.backorder_status in ("FULFILLED", "CANCELLED"):
        # Published with the order's event by the same step, so possibly lost with it.
        cls = BackorderFulfilled if saga.backorder_status == "FULFILLED" else BackorderCancelled
        outputs.insert(0, _backorder_event(cls, saga, now, saga.backorder_causation))
    commands: list[Command] = []
    round_ = saga.round
    if round_ is not None and round_.phase == "PRICING":
        lines = round_.lines if round_.purpose == "SYNC" else saga.lines
        commands.append(_price_request(saga, lines, round_.causation_id, now))
    elif round_ is not None:
        waiting = set(round_.reserve_requests) - set(round_.replies)
        commands.extend(
            _reserve_requests(saga, round_.lines, round_.causation_id, now, saga.reserved_until, skus=waiting)
        )
    elif saga.status in ("REJECTED", "CANCELLED", "EXPIRED") and saga.placed:
        commands.extend(_release_stock(saga, {ln.sku for ln in saga.lines}, saga.status, now))
        commands.append(_release_credit(saga, saga.status, now))
    return SagaResult(saga, outputs, commands, duplicate=True, note=note)


# ---- placement -----------------------------------------------------------------------------------------


def order_problem(order: OrderPlaced) -> str | None:
    """Why the order cannot be placed at all (INVALID_ORDER), or None."""
    if not order.lines:
        return "the order has no lines"
    problems = [f"line {ln.line_id} has quantity {ln.quantity}" for ln in order.lines if ln.quantity <= 0]
    if problems:
        return "; ".join(problems) + "; quantities must be positive"
    seen: set[str] = set()
    for line in order.lines:
        if line.line_id in seen:
            return f"line id {line.line_id} appears more than once"
        seen.add(line.line_id)
    return None


def _order_event(
    cls: type[OutputT], saga: OrderSaga, now: datetime, causation: str, outcome: object, **fields: Any
) -> OutputT:
    """An event about the order: its event id depends only on the order and `outcome`, so publishing the
    same outcome again gives the same id."""
    return cls(
        event_id=event_id(cls.__name__, saga.tenant_id, saga.order_id, outcome),
        tenant_id=saga.tenant_id,
        occurred_at=now,
        causation_id=causation,
        order_id=saga.order_id,
        customer_id=saga.customer_id,
        opportunity_id=saga.opportunity_id,
        **fields,
    )


def _rejected(
    saga: OrderSaga, now: datetime, reason: str, message: str, items: tuple[UnavailableItem, ...] = ()
) -> OrderAllocationRejected:
    return _order_event(
        OrderAllocationRejected,
        saga,
        now,
        saga.placed_event_id,
        saga.placed_event_id,
        reason=reason,
        message=message,
        unavailable_items=items,
    )


def _released(
    saga: OrderSaga,
    now: datetime,
    reason: Literal["CANCELLED", "EXPIRED", "STOCK_LOST"],
    causation: str,
    message: str = "",
) -> OrderInventoryReleased:
    held = saga.lines if saga.status in ("INVENTORY_ALLOCATED", "PENDING", "BACKORDERED") else ()
    return _order_event(
        OrderInventoryReleased,
        saga,
        now,
        causation,
        reason,
        reason=reason,
        message=message,
        lines=tuple(
            ReleasedLine(line_id=ln.line_id, sku=ln.sku, quantity=ln.quantity, location=ln.location) for ln in held
        ),
    )


def placement_price_request(order: OrderPlaced, now: datetime) -> PriceOrder:
    """The PriceOrder the saga asks of the customer when `order` is placed; the customer prices an order sent
    to it first (OpenOrder) under the same id, so its OrderPriced answers that placement's round."""
    return _price_request(
        new_saga(order.tenant_id, order.order_id).model_copy(update={"customer_id": order.customer_id}),
        _saga_lines(order),
        order.event_id,
        now,
    )


def _saga_lines(order: OrderPlaced) -> tuple[SagaLine, ...]:
    return tuple(
        SagaLine(line_id=ln.line_id, sku=ln.sku, quantity=ln.quantity, location=ln.location) for ln in order.lines
    )


def _price_request(saga: OrderSaga, lines: tuple[SagaLine, ...], causation: str, now: datetime) -> PriceOrder:
    return PriceOrder(
        command_id=event_id("PriceOrder", saga.tenant_id, saga.order_id, causation),
        tenant_id=saga.tenant_id,
        issued_at=now,
        order_id=saga.order_id,
        customer_id=saga.customer_id,
        lines=tuple(ln.request() for ln in lines),
    )


def _place(saga: OrderSaga, order: OrderPlaced, now: datetime) -> SagaResult:
    if saga.placed:  # the same order again (redelivered, or re-sent upstream with a new event id)
        return resend(saga, now, "duplicate OrderPlaced")
    placed = _bump(
        saga,
        placed=True,
        placed_event_id=order.event_id,
        customer_id=order.customer_id,
        order_number=order.order_number,
        order_date=order.order_date,
        priority=order.priority,
        backorder_policy=order.backorder_policy,
        opportunity_id=order.opportunity_id,
        lines=_saga_lines(order),
    )
    if saga.status == "CANCELLED":  # the cancel overtook the order: nothing was, or will be, reserved
        released = _released(placed.model_copy(update={"lines": ()}), now, "CANCELLED", order.event_id)
        return SagaResult(placed.model_copy(update={"outcome": released, "last_event": released}), [released])
    problem = order_problem(order)
    if problem:
        outcome = _rejected(placed, now, "INVALID_ORDER", problem)
        done = placed.model_copy(update={"status": "REJECTED", "outcome": outcome, "last_event": outcome})
        return SagaResult(done, [outcome])
    request = _price_request(placed, placed.lines, order.event_id, now)
    round_ = Round(purpose="PLACE", causation_id=order.event_id, price_request_id=request.command_id)
    return SagaResult(placed.model_copy(update={"round": round_}), [], [request])


def _open(saga: OrderSaga, opened: OpenOrder, now: datetime, hold: timedelta) -> SagaResult:
    """An order that went to its customer first: placed, then priced at once when the customer priced it for
    this very placement. When the placement is not new (the order again, or cancelled before it came) and
    the customer held credit for it, that hold is released unless the saga still holds the order's credit
    (its own release, by order id, drops the hold whole when the order ends)."""
    placed = _place(saga, opened.order, now)
    priced, round_ = opened.priced, placed.saga.round
    if priced is None:
        return placed  # as a bare OrderPlaced: a new, valid order asks its customer for the price
    fresh = (
        not saga.placed
        and round_ is not None
        and round_.purpose == "PLACE"
        and round_.phase == "PRICING"
        and priced.command_id == event_id("OrderPriced", round_.price_request_id)
    )
    if fresh:
        done = _priced(placed.saga, priced, now, hold)
        return SagaResult(done.saga, [*placed.outputs, *done.outputs], done.commands, note=done.note)
    releases = any(isinstance(c, ReleaseCredit) for c in placed.commands)
    if priced.accepted and placed.saga.status in TERMINAL and not releases:
        release = _release_credit(placed.saga, placed.saga.status, now)
        return SagaResult(placed.saga, placed.outputs, [*placed.commands, release], placed.duplicate, placed.note)
    return placed


def _priced(saga: OrderSaga, reply: OrderPriced, now: datetime, hold: timedelta) -> SagaResult:
    round_ = saga.round
    if (
        round_ is None
        or round_.phase != "PRICING"
        or reply.command_id != event_id("OrderPriced", round_.price_request_id)
    ):
        return resend(saga, now, "stale or repeated OrderPriced")
    if round_.purpose == "SYNC":
        return _sync_priced(saga, round_, reply, now)
    if not reply.accepted:
        outcome = _rejected(saga, now, reply.reason or "INVALID_ORDER", reply.message)
        done = _bump(saga, status="REJECTED", round=None, outcome=outcome, last_event=outcome)
        return SagaResult(done, [outcome])
    prices = {ln.line_id: ln for ln in reply.lines}
    lines = tuple(
        ln.model_copy(
            update={"unit_price": prices[ln.line_id].unit_price, "customer_price": prices[ln.line_id].customer_price}
        )
        for ln in saga.lines
    )
    assert saga.order_date is not None
    reserved_until = saga.order_date + hold
    backorder = saga.backorder_policy == "BACKORDER"
    requests = _reserve_requests(
        saga.model_copy(update={"tier": reply.tier or saga.tier}),
        lines,
        round_.causation_id,
        now,
        reserved_until,
        backorder=backorder,
    )
    nxt = _bump(
        saga,
        lines=lines,
        tier=reply.tier or saga.tier,
        order_value=reply.order_value,
        reserved_until=reserved_until,
        round=round_.model_copy(
            update={
                "phase": "RESERVING",
                "lines": lines,
                "order_value": reply.order_value,
                "reserve_requests": {r.sku: r.command_id for r in requests},
            }
        ),
    )
    return SagaResult(nxt, [], list(requests))


def _by_sku(lines: tuple[SagaLine, ...]) -> dict[str, tuple[SagaLine, ...]]:
    out: dict[str, list[SagaLine]] = {}
    for line in lines:
        out.setdefault(line.sku, []).append(line)
    return {sku: tuple(group) for sku, group in out.items()}


def _reserve_requests(
    saga: OrderSaga,
    lines: tuple[SagaLine, ...],
    causation: str,
    now: datetime,
    expires_at: datetime | None,
    skus: set[str] | None = None,
    backorder: bool = False,
) -> list[ReserveStock]:
    grouped = _by_sku(lines)
    wanted = sorted(skus) if skus is not None else sorted(grouped)
    return [
        ReserveStock(
            command_id=event_id("ReserveStock", saga.tenant_id, saga.order_id, sku, causation),
            tenant_id=saga.tenant_id,
            issued_at=now,
            order_id=saga.order_id,
            sku=sku,
            lines=tuple(ln.request() for ln in grouped.get(sku, ())),
            expires_at=expires_at,
            priority=saga.priority,
            customer_id=saga.customer_id,
            backorder=backorder,
            tier=saga.tier,
            ordered_at=saga.order_date,
            opportunity_id=saga.opportunity_id,
        )
        for sku in wanted
    ]


def _release_stock(saga: OrderSaga, skus: set[str], reason: str, now: datetime) -> list[Command]:
    return [
        ReleaseStock(
            command_id=event_id("ReleaseStock", saga.tenant_id, saga.order_id, sku, reason),
            tenant_id=saga.tenant_id,
            issued_at=now,
            order_id=saga.order_id,
            sku=sku,
            reason=reason,
        )
        for sku in sorted(skus)
    ]


def _release_credit(saga: OrderSaga, reason: str, now: datetime) -> Command:
    return ReleaseCredit(
        command_id=event_id("ReleaseCredit", saga.tenant_id, saga.order_id),
        tenant_id=saga.tenant_id,
        issued_at=now,
        order_id=saga.order_id,
        customer_id=saga.customer_id,
        reason=reason,
    )


def _reserved(saga: OrderSaga, reply: StockReserved, now: datetime) -> SagaResult:
    round_ = saga.round
    current = (
        round_ is not None
        and round_.phase == "RESERVING"
        and round_.reserve_requests.get(reply.sku) == reply.request_id
    )
    if not current:
        if reply.accepted and saga.status in TERMINAL:
            # A reservation that landed after the order ended (or a redelivered one): give the stock back,
            # and the credit too, in case the first release was lost in a crash.
            commands = [*_release_stock(saga, {reply.sku}, saga.status, now), _release_credit(saga, saga.status, now)]
            return SagaResult(saga, [], commands, note="late reservation released")
        return resend(saga, now, "stale or repeated StockReserved")
    assert round_ is not None
    if reply.sku in round_.replies:
        return resend(saga, now, "repeated StockReserved")
    replies = {
        **round_.replies,
        reply.sku: SkuReply(
            accepted=reply.accepted, shortages=reply.shortages, backordered=reply.backordered, unit_cost=reply.unit_cost
        ),
    }
    round_ = round_.model_copy(update={"replies": replies})
    if set(replies) != set(round_.reserve_requests):
        return SagaResult(_bump(saga, round=round_))
    if round_.purpose == "SYNC":
        return _sync_settle(saga, round_, now)
    return _settle_placement(saga, round_, now)


def _backordered(saga: OrderSaga, queued: list[tuple[str, LineRequest]], now: datetime) -> SagaResult:
    """Backorder policy and short lines: keep what was reserved, wait for the rest in the SKU queues."""
    backorder_id = event_id("backorder", saga.tenant_id, saga.order_id)
    items = tuple(
        BackorderItem(sku=sku, location=ln.location, quantity=ln.quantity, line_id=ln.line_id) for sku, ln in queued
    )
    placed = _order_event(
        OrderBackordered,
        saga,
        now,
        saga.placed_event_id,
        saga.placed_event_id,
        backorder_id=backorder_id,
        priority=saga.priority,
        items=items,
    )
    nxt = _bump(
        saga,
        status="BACKORDERED",
        backorder_status="PENDING",
        backordered_at=now,
        backorder_id=backorder_id,
        backorder_items=items,
        waiting=tuple(f"{sku}|{ln.line_id}" for sku, ln in queued),
        outcome=placed,
        last_event=placed,
    )
    return SagaResult(nxt, [placed, _backorder_event(BackorderCreated, nxt, now, saga.placed_event_id)])


def _backorder_event(
    cls: type[BackorderOutput], saga: OrderSaga, now: datetime, causation: str, reason: str | None = None
) -> BackorderOutput:
    return cls(  # type: ignore[call-arg]  # event_type: each subclass has its own default
        event_id=event_id(cls.__name__, saga.tenant_id, saga.backorder_id),
        tenant_id=saga.tenant_id,
        occurred_at=now,
        causation_id=causation,
        backorder_id=saga.backorder_id,
        order_id=saga.order_id,
        customer_id=saga.customer_id,
        priority=saga.priority,
        items=saga.backorder_items,
        reason=reason,
    )


def _backorder_filled(saga: OrderSaga, filled: BackorderFilled, now: datetime, hold: timedelta) -> SagaResult:
    seen = f"cmd:{filled.command_id}"
    if seen in saga.processed:
        return resend(saga, now, "repeated BackorderFilled")
    if saga.status != "BACKORDERED":
        return SagaResult(_bump(saga, seen), note=f"backorder line filled while {saga.status}: nothing to do")
    waiting = tuple(w for w in saga.waiting if w != f"{filled.sku}|{filled.line_id}")
    if waiting:
        return SagaResult(_bump(saga, seen, waiting=waiting))
    done = _bump(
        saga,
        seen,
        waiting=(),
        reserved_until=now + hold,
        backorder_status="FULFILLED",
        backorder_filled_at=now,
        backorder_causation=filled.command_id,
    )
    allocated = _allocated(done, now)
    fulfilled = _backorder_event(BackorderFulfilled, done, now, filled.command_id)
    final = done.model_copy(update={"status": "INVENTORY_ALLOCATED", "last_event": allocated})
    return SagaResult(final, [fulfilled, allocated])


def _allocated(saga: OrderSaga, now: datetime) -> OrderInventoryAllocated:
    assert saga.reserved_until is not None
    return _order_event(
        OrderInventoryAllocated,
        saga,
        now,
        saga.placed_event_id,
        saga.placed_event_id,
        lines=tuple(
            AllocatedLine(
                line_id=ln.line_id,
                sku=ln.sku,
                quantity=ln.quantity,
                location=ln.location,
                unit_price=ln.unit_price or Decimal(0),
                customer_price=ln.customer_price or Decimal(0),
            )
            for ln in saga.lines
        ),
        order_value=saga.order_value,
        reserved_until=saga.reserved_until,
    )


def _settle_placement(saga: OrderSaga, round_: Round, now: datetime) -> SagaResult:
    costs = {sku: r.unit_cost for sku, r in round_.replies.items()}
    queued = [(sku, ln) for sku, r in sorted(round_.replies.items()) for ln in r.backordered]
    if queued and all(r.accepted for r in round_.replies.values()):
        lines = tuple(ln.model_copy(update={"unit_cost": costs.get(ln.sku)}) for ln in saga.lines)
        return _backordered(_bump(saga, lines=lines, round=None), queued, now)
    outcome: Output
    if all(r.accepted for r in round_.replies.values()):
        lines = tuple(ln.model_copy(update={"unit_cost": costs.get(ln.sku)}) for ln in saga.lines)
        outcome = _allocated(saga.model_copy(update={"lines": lines}), now)
        done = _bump(saga, status="INVENTORY_ALLOCATED", lines=lines, round=None, outcome=outcome, last_event=outcome)
        return SagaResult(done, [outcome])
    # Every SKU that answered, not only those that accepted: a hold dropped by a count (StockLost) turns an
    # accepted SKU into a refusal while its other lines may still be held.
    reserved = set(round_.replies)
    items = tuple(
        UnavailableItem(
            sku=s.sku, location=s.location, required=s.required, available=s.available, shortfall=s.shortfall
        )
        for sku in sorted(round_.replies)
        for s in round_.replies[sku].shortages
    )
    message = f"{len(items)} item(s) short: " + ", ".join(
        f"{i.sku}@{i.location} needs {i.required}, {i.available} available" for i in items
    )
    outcome = _rejected(saga, now, "INSUFFICIENT_INVENTORY", message, items)
    commands = [*_release_stock(saga, reserved, "REJECTED", now), _release_credit(saga, "REJECTED", now)]
    done = _bump(saga, status="REJECTED", round=None, outcome=outcome, last_event=outcome)
    return SagaResult(done, [outcome], commands)


# ---- cancellation and expiry ---------------------------------------------------------------------------


def _cancel(saga: OrderSaga, cancel: OrderCancelled, now: datetime) -> SagaResult:
    seen = f"event:{cancel.event_id}"
    if seen in saga.processed:
        return resend(saga, now, "duplicate OrderCancelled")
    if not saga.placed:
        if saga.status == "CANCELLED":
            return SagaResult(saga, duplicate=True, note=f"order {saga.order_id} is unknown and already cancelled")
        tomb = _bump(saga, seen, status="CANCELLED", cancel_reason=cancel.reason)
        return SagaResult(
            tomb, note=f"cancel for unknown order {saga.order_id}: remembered, in case the order arrives late"
        )
    if saga.status in TERMINAL:
        return SagaResult(
            _bump(saga, seen), note=f"order {saga.order_id} is already {saga.status}: cancel changes nothing"
        )
    if saga.status not in ("PENDING", "INVENTORY_ALLOCATED", "BACKORDERED"):
        return SagaResult(_bump(saga, seen), note=f"order {saga.order_id} is {saga.status}: too late to cancel")
    return _end(saga, "CANCELLED", cancel.event_id, now, seen=seen, cancel_reason=cancel.reason)


def _end(
    saga: OrderSaga,
    reason: Literal["CANCELLED", "EXPIRED", "STOCK_LOST"],
    causation: str,
    now: datetime,
    seen: str | None = None,
    message: str = "",
    **changes: object,
) -> SagaResult:
    released = _released(saga, now, reason, causation, message)
    status = "REJECTED" if reason == "STOCK_LOST" else reason
    skus = {ln.sku for ln in saga.lines}
    commands = [*_release_stock(saga, skus, status, now), _release_credit(saga, reason, now)]
    outcome_update: dict[str, object] = {"last_event": released}
    if saga.outcome is None:  # still pending: this is the placement's terminal outcome
        outcome_update["outcome"] = released
    done = _bump(saga, seen, status=status, round=None, **outcome_update, **changes)
    outputs: list[Output] = [released]
    if saga.status == "BACKORDERED":
        done = done.model_copy(update={"backorder_status": "CANCELLED", "backorder_causation": causation})
        outputs.append(_backorder_event(BackorderCancelled, done, now, causation, reason))
    return SagaResult(done, outputs, commands)


def _stock_lost(saga: OrderSaga, lost: StockLost, now: datetime) -> SagaResult:
    seen = f"cmd:{lost.command_id}"
    if seen in saga.processed:
        return resend(saga, now, "repeated StockLost")
    round_ = saga.round
    if round_ is not None and round_.phase == "RESERVING" and saga.status == "PENDING":
        # Still collecting replies: this SKU's hold is gone, so count it as refused.
        shortage = LineShortage(
            line_id="",
            sku=lost.sku,
            location=lost.location,
            required=lost.quantity,
            available=0,
            shortfall=lost.quantity,
        )
        replies = {**round_.replies, lost.sku: SkuReply(accepted=False, shortages=(shortage,))}
        round_ = round_.model_copy(update={"replies": replies})
        if set(replies) != set(round_.reserve_requests):
            return SagaResult(_bump(saga, seen, round=round_))
        return _settle_placement(_bump(saga, seen), round_, now)
    if saga.status not in ("INVENTORY_ALLOCATED", "BACKORDERED"):
        return SagaResult(_bump(saga, seen), note=f"stock lost on {lost.sku} while {saga.status}: nothing held")
    message = f"{lost.quantity} reserved on {lost.sku}@{lost.location} lost: {lost.message}"
    return _end(saga, "STOCK_LOST", lost.command_id, now, seen=seen, message=message)


def expire(saga: OrderSaga, now: datetime, causation: str) -> SagaResult:
    """Expire the order's reservations if they are due by `now` (event time of the tick)."""
    if saga.status != "INVENTORY_ALLOCATED" or saga.reserved_until is None or saga.reserved_until > now:
        return SagaResult(saga, duplicate=True, note="not due")
    return _end(saga, "EXPIRED", causation, now)


# ---- synchronisation with the OMS ----------------------------------------------------------------------


def _synced(
    saga: OrderSaga,
    now: datetime,
    causation: str,
    result: str,
    message: str = "",
    items: tuple[UnavailableItem, ...] = (),
    lines: tuple[SagaLine, ...] | None = None,
) -> OrderInventorySynced:
    held = saga.lines if lines is None else lines
    impact = tuple(
        SyncedLine(
            line_id=ln.line_id,
            sku=ln.sku,
            quantity=ln.quantity,
            location=ln.location,
            unit_cost=ln.unit_cost or Decimal(0),
            total_cost=(ln.unit_cost or Decimal(0)) * ln.quantity,
        )
        for ln in held
    )
    return _order_event(
        OrderInventorySynced,
        saga,
        now,
        causation,
        causation,
        status=saga.status,
        result=result,
        message=message,
        lines=impact,
        total_value=sum((i.total_cost for i in impact), Decimal(0)),
        unavailable_items=items,
    )


def _answered(saga: OrderSaga, out: OrderInventorySynced) -> OrderSaga:
    """Remember a snapshot's answer, so the same snapshot sent again gets the very same answer."""
    answers = (*[a for a in saga.sync_answers if a.causation_id != out.causation_id], out)[-SYNC_ANSWERS_KEPT:]
    return saga.model_copy(update={"sync_answers": answers, "last_event": out})


def _sync(saga: OrderSaga, snapshot: OrderSnapshot, now: datetime) -> SagaResult:
    seen = f"event:{snapshot.event_id}"
    if seen in saga.processed:
        if saga.round is not None and saga.round.causation_id == snapshot.event_id:
            return resend(saga, now, "duplicate OrderSnapshot while its sync is under way")
        again: list[Output] = [a for a in saga.sync_answers if a.causation_id == snapshot.event_id]
        return SagaResult(saga, again, duplicate=True, note="duplicate OrderSnapshot")
    if not saga.placed:
        out = _synced(
            saga.model_copy(update={"customer_id": snapshot.customer_id, "status": "PENDING"}),
            now,
            snapshot.event_id,
            "NOT_FOUND",
            f"order {saga.order_id} was never placed with the fleet",
            lines=(),
        )
        return SagaResult(_answered(_bump(saga, seen), out), [out])
    if saga.status == "PENDING" or saga.round is not None:
        # Allocation or another sync in flight: say so without remembering the snapshot, so it can be re-sent.
        out = _synced(saga, now, snapshot.event_id, "PENDING", "allocation or another sync is in flight; send again")
        return SagaResult(saga, [out])
    wanted = tuple(
        SagaLine(line_id=ln.line_id, sku=ln.sku, quantity=ln.quantity, location=ln.location)
        for ln in snapshot.lines
        if ln.quantity > 0
    )
    cancelled = snapshot.status.upper() in ("CANCELLED", "CANCELED") or not wanted
    if cancelled and saga.status in ("INVENTORY_ALLOCATED", "BACKORDERED"):
        ended = _end(saga, "CANCELLED", snapshot.event_id, now, seen=seen, cancel_reason="cancelled in the OMS")
        out = _synced(ended.saga, now, snapshot.event_id, "CANCELLED", "released every reservation", lines=())
        return SagaResult(_answered(ended.saga, out), [*ended.outputs, out], ended.commands)
    if saga.status != "INVENTORY_ALLOCATED":
        out = _synced(saga, now, snapshot.event_id, "NOT_ALLOCATED", f"order is {saga.status}; nothing to reconcile")
        return SagaResult(_answered(_bump(saga, seen), out), [out])
    current = {ln.line_id: (ln.sku, ln.quantity, ln.location) for ln in saga.lines}
    if current == {ln.line_id: (ln.sku, ln.quantity, ln.location) for ln in wanted}:
        out = _synced(saga, now, snapshot.event_id, "IN_SYNC")
        return SagaResult(_answered(_bump(saga, seen), out), [out])
    known = {ln.line_id: ln for ln in saga.lines}
    wanted = tuple(
        ln.model_copy(update={"unit_cost": known[ln.line_id].unit_cost})
        if ln.line_id in known and known[ln.line_id].sku == ln.sku
        else ln
        for ln in wanted
    )
    request = _price_request(saga, wanted, snapshot.event_id, now)
    round_ = Round(purpose="SYNC", causation_id=snapshot.event_id, price_request_id=request.command_id, lines=wanted)
    return SagaResult(_bump(saga, seen, round=round_), [], [request])


def _sync_priced(saga: OrderSaga, round_: Round, reply: OrderPriced, now: datetime) -> SagaResult:
    if not reply.accepted:
        result = "CREDIT_LIMIT_EXCEEDED" if reply.reason == "CREDIT_LIMIT_EXCEEDED" else "REJECTED"
        out = _synced(saga, now, round_.causation_id, result, reply.message)
        return SagaResult(_answered(_bump(saga, round=None), out), [out])
    prices = {ln.line_id: ln for ln in reply.lines}
    lines = tuple(
        ln.model_copy(
            update={"unit_price": prices[ln.line_id].unit_price, "customer_price": prices[ln.line_id].customer_price}
        )
        for ln in round_.lines
    )
    before, after = _by_sku(saga.lines), _by_sku(lines)
    changed = {sku for sku in set(before) | set(after) if _shape(before.get(sku, ())) != _shape(after.get(sku, ()))}
    requests = _reserve_requests(saga, lines, round_.causation_id, now, saga.reserved_until, skus=changed)
    nxt = round_.model_copy(
        update={
            "phase": "RESERVING",
            "lines": lines,
            "order_value": reply.order_value,
            "reserve_requests": {r.sku: r.command_id for r in requests},
        }
    )
    return SagaResult(_bump(saga, round=nxt), [], list(requests))


def _shape(lines: tuple[SagaLine, ...]) -> set[tuple[str, int, str]]:
    return {(ln.line_id, ln.quantity, ln.location) for ln in lines}


def _sync_settle(saga: OrderSaga, round_: Round, now: datetime) -> SagaResult:
    before, after = _by_sku(saga.lines), _by_sku(round_.lines)
    result_lines: list[SagaLine] = []
    for sku in sorted(set(before) | set(after)):
        reply = round_.replies.get(sku)
        if reply is None:  # unchanged SKU
            result_lines.extend(after.get(sku, ()))
        elif reply.accepted:
            result_lines.extend(ln.model_copy(update={"unit_cost": reply.unit_cost}) for ln in after.get(sku, ()))
        else:
            result_lines.extend(before.get(sku, ()))
    lines = tuple(result_lines)
    items = tuple(
        UnavailableItem(
            sku=s.sku, location=s.location, required=s.required, available=s.available, shortfall=s.shortfall
        )
        for sku in sorted(round_.replies)
        for s in round_.replies[sku].shortages
    )
    value = sum(((ln.customer_price or Decimal(0)) * ln.quantity for ln in lines), Decimal(0))
    commands: list[Command] = []
    if items:
        # The customer holds the full requested value; hold what was actually reserved instead.
        commands.append(
            _price_request(saga.model_copy(update={"lines": lines}), lines, f"{round_.causation_id}/partial", now)
        )
    result = "PARTIAL" if items else "UPDATED"
    done = _bump(saga, lines=lines, order_value=value, round=None)
    out = _synced(done, now, round_.causation_id, result, "some lines could not be changed" if items else "", items)
    return SagaResult(_answered(done, out), [out], commands)


# ---- fulfillment ---------------------------------------------------------------------------------------


def _start_fulfillment(saga: OrderSaga, start: FulfillmentStarted, now: datetime) -> SagaResult:
    known = saga.fulfillments.get(start.fulfillment_id)
    if known is not None:  # redelivered: publish again what it led to, re-send the stock issue
        lines = {ln.line_id: (ln.sku, ln.location) for ln in saga.lines}
        commands = fulfil.consume_commands(
            saga.tenant_id, saga.order_id, start.fulfillment_id, lines, known.issued, now
        )
        return SagaResult(saga, list(known.events), commands, duplicate=True)
    reason: str | None = None
    issue: dict[str, int] = {}
    if saga.status not in ("INVENTORY_ALLOCATED", "FULFILLMENT_IN_PROGRESS", "SHIPPED"):
        reason = f"order {saga.order_id} is {saga.status if saga.placed else 'unknown'}, not INVENTORY_ALLOCATED"
    else:
        issue, reason = fulfil.allocate_items(
            saga.line_shapes(),
            saga.consumed,
            tuple(ShippedItem(sku=i.sku, quantity=i.quantity, location=i.location) for i in start.items),
        )
    f = fulfil.started(start, reason is None, reason, now)
    if reason is not None:
        f = f.model_copy(update={"status": "PENDING"})
        out = fulfil.output(FulfillmentRejected, saga.tenant_id, saga.order_id, f, start.event_id, now)
        f = f.model_copy(update={"events": (out,)})
        return SagaResult(_bump(saga, fulfillments={**saga.fulfillments, f.fulfillment_id: f}), [out])
    out = fulfil.output(FulfillmentAccepted, saga.tenant_id, saga.order_id, f, start.event_id, now)
    f = f.model_copy(update={"events": (out,), "issued": issue})
    consumed = {**saga.consumed, **{lid: saga.consumed.get(lid, 0) + q for lid, q in issue.items()}}
    outputs: list[Output] = [out]
    for early in sorted(saga.early.get(f.fulfillment_id, ()), key=lambda e: fulfil.RANK[_target(e)]):
        f, more = fulfil.advance(saga.tenant_id, saga.order_id, f, early, now)
        outputs.extend(more)
    fulfillments = {**saga.fulfillments, f.fulfillment_id: f}
    lines = {ln.line_id: (ln.sku, ln.location) for ln in saga.lines}
    commands = fulfil.consume_commands(saga.tenant_id, saga.order_id, f.fulfillment_id, lines, issue, now)
    early_left = {k: v for k, v in saga.early.items() if k != f.fulfillment_id}
    return _settle_fulfillment(
        saga, now, outputs, commands, fulfillments=fulfillments, consumed=consumed, early=early_left
    )


def _target(event: fulfil.ShipmentEvent) -> str:
    if isinstance(event, FulfillmentCompleted):
        return "COMPLETED"
    return "SHIPPED" if isinstance(event, ShipmentDispatched) else "DELIVERED"


def _advance_fulfillment(
    saga: OrderSaga, event: FulfillmentCompleted | ShipmentDispatched | ShipmentDelivered, now: datetime
) -> SagaResult:
    seen = f"event:{event.event_id}"
    if seen in saga.processed:
        f = saga.fulfillments.get(event.fulfillment_id)
        return SagaResult(saga, list(f.events[-1:]) if f else [], duplicate=True, note="duplicate shipment event")
    f = saga.fulfillments.get(event.fulfillment_id)
    if f is None:  # arrived before its FulfillmentStarted: keep it for then
        early = {**saga.early, event.fulfillment_id: (*saga.early.get(event.fulfillment_id, ()), event)}
        return SagaResult(
            _bump(saga, seen, early=early), note=f"{event.event_type} before its fulfillment started: kept"
        )
    if not f.accepted:
        return SagaResult(_bump(saga, seen), note=f"{event.event_type} for rejected fulfillment {f.fulfillment_id}")
    moved, outputs = fulfil.advance(saga.tenant_id, saga.order_id, f, event, now)
    fulfillments = {**saga.fulfillments, moved.fulfillment_id: moved}
    return _settle_fulfillment(_bump(saga, seen), now, outputs, [], fulfillments=fulfillments)


def _settle_fulfillment(
    saga: OrderSaga, now: datetime, outputs: list[Output], commands: list[Command], **changes: object
) -> SagaResult:
    nxt = saga.model_copy(update={**changes, "version": saga.version + 1})
    status = fulfil.order_status(nxt.line_shapes(), nxt.consumed, nxt.fulfillments)
    if status == "DELIVERED" and saga.status != "DELIVERED":
        commands = [*commands, fulfil.release_credit(saga.tenant_id, saga.order_id, saga.customer_id, now)]
    return SagaResult(nxt.model_copy(update={"status": status}), outputs, commands)
