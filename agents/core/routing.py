"""Where each accepted input goes: the internal topic (by id) and the entity that owns it."""

from __future__ import annotations

from dataclasses import dataclass

from agents.core.events import (
    CustomerPricingUpdated,
    CustomerUpserted,
    FulfillmentCompleted,
    FulfillmentStarted,
    InputEvent,
    OpportunityUpserted,
    OrderCancelled,
    OrderPlaced,
    OrderSnapshot,
    ProductUpserted,
    ShipmentDelivered,
    ShipmentDispatched,
    StockAdjusted,
    StockCounted,
    StockReceived,
)


@dataclass(frozen=True)
class Route:
    topic_id: str
    tenant_id: str
    entity_id: str


def route(event: InputEvent) -> Route:
    match event:
        case ProductUpserted() | StockReceived() | StockAdjusted() | StockCounted():
            return Route("sku_commands", event.tenant_id, event.sku)
        case CustomerUpserted() | CustomerPricingUpdated():
            return Route("customer_commands", event.tenant_id, event.customer_id)
        case OpportunityUpserted():
            return Route("opportunity_commands", event.tenant_id, event.opportunity_id)
        case (
            OrderPlaced()
            | OrderCancelled()
            | OrderSnapshot()
            | FulfillmentStarted()
            | FulfillmentCompleted()
            | ShipmentDispatched()
            | ShipmentDelivered()
        ):
            return Route("order_commands", event.tenant_id, event.order_id)
    raise TypeError(f"no route for {type(event).__name__}")  # pragma: no cover - the union is closed
