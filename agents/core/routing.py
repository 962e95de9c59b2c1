"""Where each accepted input goes: the internal topic (by id) and the entity that owns it."""

from __future__ import annotations

from dataclasses import dataclass

from agents.core.commands import (
    BackorderFilled,
    Command,
    ConsumeStock,
    FillBackorders,
    OpenOrder,
    OpportunityConverted,
    OpportunityPreempted,
    OrderPriced,
    PriceOrder,
    ReleaseCredit,
    ReleaseStock,
    ReserveStock,
    SoftRelease,
    SoftReserve,
    SoftReserved,
    StockLost,
    StockReserved,
)
from agents.core.events import (
    BackorderOutput,
    CustomerPricingUpdated,
    CustomerUpserted,
    FulfillmentCompleted,
    FulfillmentOutput,
    FulfillmentStarted,
    InputEvent,
    OpportunityOutput,
    OpportunityUpserted,
    OrderCancelled,
    OrderOutput,
    OrderPlaced,
    OrderSnapshot,
    Output,
    ProductUpserted,
    ShipmentDelivered,
    ShipmentDispatched,
    SkuAvailability,
    StockAdjusted,
    StockCounted,
    StockReceived,
)


@dataclass(frozen=True)
class Route:
    topic_id: str
    tenant_id: str
    entity_id: str
    # Reference data that every partition of another topic keeps a copy of (products -> customers).
    broadcast_to: str | None = None


def route(event: InputEvent) -> Route:
    match event:
        case ProductUpserted():
            return Route("sku_commands", event.tenant_id, event.sku, broadcast_to="customer_commands")
        case StockReceived() | StockAdjusted() | StockCounted():
            return Route("sku_commands", event.tenant_id, event.sku)
        case CustomerUpserted() | CustomerPricingUpdated() | OrderPlaced():
            # An order is priced and its credit held first, where its customer lives (OpenOrder follows).
            return Route("customer_commands", event.tenant_id, event.customer_id)
        case OpportunityUpserted():
            return Route("opportunity_commands", event.tenant_id, event.opportunity_id)
        case (
            OrderCancelled()
            | OrderSnapshot()
            | FulfillmentStarted()
            | FulfillmentCompleted()
            | ShipmentDispatched()
            | ShipmentDelivered()
        ):
            return Route("order_commands", event.tenant_id, event.order_id)
    raise TypeError(f"no route for {type(event).__name__}")  # pragma: no cover - the union is closed


def route_command(command: Command) -> Route:
    """Where a command between partitions goes: the partition of the entity that must act on it."""
    match command:
        case PriceOrder() | ReleaseCredit():
            return Route("customer_commands", command.tenant_id, command.customer_id)
        case OrderPriced() | OpenOrder() | StockReserved() | StockLost() | BackorderFilled():
            return Route("order_commands", command.tenant_id, command.order_id)
        case ReserveStock() | ReleaseStock() | ConsumeStock() | SoftReserve() | SoftRelease() | FillBackorders():
            return Route("sku_commands", command.tenant_id, command.sku)
        case SoftReserved() | OpportunityConverted() | OpportunityPreempted():
            return Route("opportunity_commands", command.tenant_id, command.opportunity_id)
    raise TypeError(f"no route for {type(command).__name__}")


def output_topic(output: Output) -> tuple[str, str]:
    """(output topic id, entity id of its `tenant:entity` key) for an event the fleet publishes."""
    if isinstance(output, FulfillmentOutput):
        return "fulfillments", output.order_id
    if isinstance(output, BackorderOutput):
        return "backorders", output.backorder_id
    if isinstance(output, SkuAvailability):
        return "availability", output.sku
    if isinstance(output, OrderOutput):
        return "allocations", output.order_id
    if isinstance(output, OpportunityOutput):
        return "allocations", output.opportunity_id
    raise TypeError(f"no output topic for {type(output).__name__}")
