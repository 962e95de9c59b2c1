"""Fulfillment of an allocated order: issuing reserved stock, and tracking each fulfillment through
COMPLETED, SHIPPED and DELIVERED.

Shipment events may arrive out of order. A status only moves forward: a late event for an earlier status
still fills in what it knows (carrier, tracking number, estimated delivery) but changes no status; an
event for a fulfillment not started yet is kept and applied when FulfillmentStarted arrives.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from agents.core.commands import Command, ConsumeStock, LineRequest, ReleaseCredit
from agents.core.events import (
    FulfillmentAccepted,
    FulfillmentCompleted,
    FulfillmentCompletedEvent,
    FulfillmentOutput,
    FulfillmentRejected,
    FulfillmentStarted,
    FulfillmentStatus,
    FulfillmentStatusChanged,
    Model,
    Output,
    ShipmentDelivered,
    ShipmentDispatched,
    ShippedItem,
)
from agents.core.ids import event_id

RANK: dict[str, int] = {"PENDING": 0, "IN_PROGRESS": 1, "COMPLETED": 2, "SHIPPED": 3, "DELIVERED": 4}

ShipmentEvent = Annotated[
    FulfillmentCompleted | ShipmentDispatched | ShipmentDelivered, Field(discriminator="event_type")
]
FulfillmentEvent = Annotated[
    FulfillmentAccepted | FulfillmentRejected | FulfillmentCompletedEvent | FulfillmentStatusChanged,
    Field(discriminator="event_type"),
]


class Fulfillment(Model):
    fulfillment_id: str
    accepted: bool
    status: FulfillmentStatus = "IN_PROGRESS"
    items: tuple[ShippedItem, ...] = ()
    shipping_method: str | None = None
    tracking_number: str | None = None
    carrier: str | None = None
    estimated_delivery: str | None = None
    reason: str | None = None
    issued: dict[str, int] = Field(default_factory=dict)  # line id -> quantity this fulfillment issued
    history: tuple[tuple[str, datetime], ...] = ()  # (status, when the fleet saw it)
    events: tuple[FulfillmentEvent, ...] = ()  # every event published for it, to re-publish on redelivery


def output(
    cls: type[FulfillmentOutput], tenant_id: str, order_id: str, f: Fulfillment, causation: str, now: datetime
) -> FulfillmentOutput:
    return cls(  # type: ignore[call-arg]  # event_type: each subclass has its own default
        event_id=event_id(cls.__name__, tenant_id, order_id, f.fulfillment_id, f.status, causation),
        tenant_id=tenant_id,
        occurred_at=now,
        causation_id=causation,
        fulfillment_id=f.fulfillment_id,
        order_id=order_id,
        status=f.status,
        items=f.items,
        shipping_method=f.shipping_method,
        tracking_number=f.tracking_number,
        carrier=f.carrier,
        estimated_delivery=f.estimated_delivery,
        reason=f.reason,
    )


def allocate_items(
    lines: tuple[tuple[str, str, str, int], ...], consumed: dict[str, int], items: tuple[ShippedItem, ...]
) -> tuple[dict[str, int], str | None]:
    """Map fulfillment items onto order lines (line_id, sku, location, quantity) with room left.

    Returns the quantity issued per line, or the reason the items do not fit what the order holds."""
    left = {line_id: qty - consumed.get(line_id, 0) for line_id, _, _, qty in lines}
    issue: dict[str, int] = {}
    for item in items:
        need = item.quantity
        for line_id, sku, location, _ in lines:
            if need == 0:
                break
            if (sku, location) != (item.sku, item.location):
                continue
            take = min(need, left[line_id])
            if take:
                left[line_id] -= take
                issue[line_id] = issue.get(line_id, 0) + take
                need -= take
        if need:
            held = sum(
                left[lid] + issue.get(lid, 0) for lid, s, loc, _ in lines if (s, loc) == (item.sku, item.location)
            )
            return {}, f"{item.quantity} of {item.sku}@{item.location} requested, {held} reserved and not yet issued"
    return issue, None


def consume_commands(
    tenant_id: str,
    order_id: str,
    fulfillment_id: str,
    lines: dict[str, tuple[str, str]],
    issue: dict[str, int],
    now: datetime,
) -> list[Command]:
    by_sku: dict[str, list[LineRequest]] = {}
    for line_id, quantity in sorted(issue.items()):
        sku, location = lines[line_id]
        by_sku.setdefault(sku, []).append(LineRequest(line_id=line_id, sku=sku, quantity=quantity, location=location))
    return [
        ConsumeStock(
            command_id=event_id("ConsumeStock", tenant_id, order_id, fulfillment_id, sku),
            tenant_id=tenant_id,
            issued_at=now,
            order_id=order_id,
            fulfillment_id=fulfillment_id,
            sku=sku,
            lines=tuple(requests),
        )
        for sku, requests in sorted(by_sku.items())
    ]


def started(start: FulfillmentStarted, accepted: bool, reason: str | None, now: datetime) -> Fulfillment:
    return Fulfillment(
        fulfillment_id=start.fulfillment_id,
        accepted=accepted,
        status="IN_PROGRESS",
        items=tuple(ShippedItem(sku=i.sku, quantity=i.quantity, location=i.location) for i in start.items),
        shipping_method=start.shipping_method,
        tracking_number=start.tracking_number,
        reason=reason,
        history=(("IN_PROGRESS", now),) if accepted else (),
    )


def advance(
    tenant_id: str, order_id: str, f: Fulfillment, event: ShipmentEvent, now: datetime
) -> tuple[Fulfillment, list[Output]]:
    """Apply a shipment event to an accepted fulfillment; only forward moves change the status."""
    target: FulfillmentStatus
    details: dict[str, object] = {}
    cls: type[FulfillmentOutput] = FulfillmentStatusChanged
    if isinstance(event, FulfillmentCompleted):
        target, cls = "COMPLETED", FulfillmentCompletedEvent
    elif isinstance(event, ShipmentDispatched):
        target = "SHIPPED"
        details = {
            "carrier": event.carrier,
            "tracking_number": event.tracking_number,
            "estimated_delivery": event.estimated_delivery.isoformat(),
        }
    else:
        target = "DELIVERED"
    filled = {k: v for k, v in details.items() if getattr(f, k) in (None, "") or RANK[target] >= RANK[f.status]}
    if RANK[target] <= RANK[f.status]:
        return f.model_copy(update=filled), []  # late or repeated: facts only, no status change
    moved = f.model_copy(update={**filled, "status": target, "history": (*f.history, (target, now))})
    out = output(cls, tenant_id, order_id, moved, event.event_id, now)
    return moved.model_copy(update={"events": (*moved.events, out)}), [out]


def order_status(
    lines: tuple[tuple[str, str, str, int], ...], consumed: dict[str, int], fulfillments: dict[str, Fulfillment]
) -> str:
    accepted = [f for f in fulfillments.values() if f.accepted]
    fully_issued = all(consumed.get(line_id, 0) >= qty for line_id, _, _, qty in lines)
    if fully_issued and accepted and all(f.status == "DELIVERED" for f in accepted):
        return "DELIVERED"
    if fully_issued and accepted and all(RANK[f.status] >= RANK["SHIPPED"] for f in accepted):
        return "SHIPPED"
    return "FULFILLMENT_IN_PROGRESS"


def release_credit(tenant_id: str, order_id: str, customer_id: str, now: datetime) -> ReleaseCredit:
    """Delivered: the invoice takes over in the CRM's credit_used, so the order's exposure ends."""
    return ReleaseCredit(
        command_id=event_id("ReleaseCredit", tenant_id, order_id),
        tenant_id=tenant_id,
        issued_at=now,
        order_id=order_id,
        customer_id=customer_id,
        reason="DELIVERED",
    )
