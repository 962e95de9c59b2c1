"""The wire contract (README "Producing events", docs/ARCHITECTURE.md) as pydantic models.

Inputs are validated here (unknown fields ignored, missing or wrongly typed required fields rejected);
outputs are built here and serialised at the edge.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
    model_validator,
)


def _non_zero(value: int) -> int:
    if value == 0:
        raise ValueError("must not be zero")
    return value


# An identifier that can be part of a `tenant|entity` key: no separator, no control character (Unicode
# category Cc: C0, DEL, C1). The HTTP API accepts exactly this alphabet (agents/http.py `valid_id`).
ID_PATTERN = r"^[^|\x00-\x1f\x7f-\x9f]+$"
Id = Annotated[str, Field(min_length=1, max_length=200, pattern=ID_PATTERN)]
# Quantities fit an Avro int (and a Java int) on every consumer.
MAX_QTY = 2**31 - 1
PositiveQty = Annotated[StrictInt, Field(gt=0, le=MAX_QTY)]
NonNegativeQty = Annotated[StrictInt, Field(ge=0, le=MAX_QTY)]
NonZeroDelta = Annotated[StrictInt, Field(ge=-MAX_QTY, le=MAX_QTY), AfterValidator(_non_zero)]
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=6, allow_inf_nan=False)]
Percentage = Annotated[Decimal, Field(ge=0, le=100, decimal_places=6, allow_inf_nan=False)]

# Text fields and collections have maximum lengths, so that no record the fleet derives from an input (an
# availability record, a customer view, a saga) grows without bound (docs/ARCHITECTURE.md, "Bounds").
Text = Annotated[str, Field(max_length=1_000)]
ShortText = Annotated[str, Field(max_length=200)]
MAX_LINES = 1_000  # order lines, snapshot lines, opportunity items, fulfillment items, pricing updates
Address = Annotated[dict[ShortText, Text], Field(max_length=20)]

Tier = Literal["BRONZE", "SILVER", "GOLD", "PLATINUM"]
Priority = Literal["LOW", "MEDIUM", "HIGH", "URGENT"]
Stage = Literal["LEAD", "QUALIFIED", "PROPOSAL", "NEGOTIATION", "CLOSED_WON", "CLOSED_LOST"]
BackorderPolicy = Literal["REJECT", "BACKORDER"]
OrderStatus = Literal[
    "PENDING",
    "INVENTORY_ALLOCATED",
    "FULFILLMENT_IN_PROGRESS",
    "SHIPPED",
    "DELIVERED",
    "REJECTED",
    "BACKORDERED",
    "CANCELLED",
    "EXPIRED",
]
FulfillmentStatus = Literal["PENDING", "IN_PROGRESS", "COMPLETED", "SHIPPED", "DELIVERED"]
BackorderStatus = Literal["PENDING", "FULFILLED", "CANCELLED"]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


# A tenant id is a plain identifier, so `tenant:entity` output keys split unambiguously at the first colon.
TenantId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class Event(Model):
    event_id: Id
    event_type: str
    tenant_id: TenantId
    occurred_at: AwareDatetime


# ---- inputs -------------------------------------------------------------------------------------------


class ProductUpserted(Event):
    event_type: Literal["ProductUpserted"]
    sku: Id
    description: Text
    unit_price: Money
    unit_cost: Money
    lead_time_days: NonNegativeQty


class StockReceived(Event):
    event_type: Literal["StockReceived"]
    movement_id: Id
    sku: Id
    location: Id
    quantity: PositiveQty


class StockAdjusted(Event):
    event_type: Literal["StockAdjusted"]
    movement_id: Id
    sku: Id
    location: Id
    delta: NonZeroDelta
    reason: Text


class StockCounted(Event):
    event_type: Literal["StockCounted"]
    movement_id: Id
    sku: Id
    location: Id
    quantity: NonNegativeQty


class CustomerUpserted(Event):
    event_type: Literal["CustomerUpserted"]
    customer_id: Id
    name: ShortText
    tier: Tier
    credit_limit: Money
    credit_used: Money


class PricingUpdate(Model):
    sku: Id
    customer_price: Money | None = None
    discount_percentage: Percentage | None = None

    @model_validator(mode="after")
    def _sets_something(self) -> PricingUpdate:
        if self.customer_price is None and self.discount_percentage is None:
            raise ValueError(f"pricing update for {self.sku} sets neither customer_price nor discount_percentage")
        return self


class CustomerPricingUpdated(Event):
    event_type: Literal["CustomerPricingUpdated"]
    customer_id: Id
    updates: Annotated[tuple[PricingUpdate, ...], Field(min_length=1, max_length=MAX_LINES)]


class OpportunityItem(Model):
    sku: Id
    quantity: PositiveQty
    location: Id
    unit_price: Money


class OpportunityUpserted(Event):
    event_type: Literal["OpportunityUpserted"]
    opportunity_id: Id
    customer_id: Id
    sales_rep_id: Id
    stage: Stage
    probability: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    expected_close_date: AwareDatetime | date
    items: Annotated[tuple[OpportunityItem, ...], Field(max_length=MAX_LINES)]


class OrderLine(Model):
    line_id: Id
    sku: Id
    quantity: Annotated[
        StrictInt, Field(le=MAX_QTY)
    ]  # > 0 is checked by the saga so that a bad quantity is INVALID_ORDER, not a DLQ
    location: Id


class OrderPlaced(Event):
    event_type: Literal["OrderPlaced"]
    order_id: Id
    order_number: ShortText
    customer_id: Id
    order_date: AwareDatetime
    lines: Annotated[tuple[OrderLine, ...], Field(max_length=MAX_LINES)]
    shipping_address: Address
    priority: Priority = "MEDIUM"
    backorder_policy: BackorderPolicy = "REJECT"
    opportunity_id: Id | None = None


class OrderCancelled(Event):
    event_type: Literal["OrderCancelled"]
    order_id: Id
    reason: Text


class SnapshotLine(Model):
    line_id: Id
    sku: Id
    quantity: NonNegativeQty
    location: Id


class OrderSnapshot(Event):
    event_type: Literal["OrderSnapshot"]
    order_id: Id
    customer_id: Id
    status: ShortText
    lines: Annotated[tuple[SnapshotLine, ...], Field(max_length=MAX_LINES)]


class FulfillmentItem(Model):
    sku: Id
    quantity: PositiveQty
    location: Id


class FulfillmentStarted(Event):
    event_type: Literal["FulfillmentStarted"]
    fulfillment_id: Id
    order_id: Id
    items: Annotated[tuple[FulfillmentItem, ...], Field(min_length=1, max_length=MAX_LINES)]
    shipping_method: ShortText
    tracking_number: ShortText


class FulfillmentCompleted(Event):
    event_type: Literal["FulfillmentCompleted"]
    fulfillment_id: Id
    order_id: Id


class ShipmentDispatched(Event):
    event_type: Literal["ShipmentDispatched"]
    fulfillment_id: Id
    order_id: Id
    carrier: ShortText
    tracking_number: ShortText
    estimated_delivery: AwareDatetime | date


class ShipmentDelivered(Event):
    event_type: Literal["ShipmentDelivered"]
    fulfillment_id: Id
    order_id: Id
    delivered_at: AwareDatetime


StockMovement = StockReceived | StockAdjusted | StockCounted
ProductInput = ProductUpserted
CustomerInput = CustomerUpserted
PricingInput = CustomerPricingUpdated
OpportunityInput = OpportunityUpserted
OrderInput = OrderPlaced | OrderCancelled | OrderSnapshot
ShipmentInput = FulfillmentStarted | FulfillmentCompleted | ShipmentDispatched | ShipmentDelivered

InputEvent = (
    ProductUpserted
    | StockReceived
    | StockAdjusted
    | StockCounted
    | CustomerUpserted
    | CustomerPricingUpdated
    | OpportunityUpserted
    | OrderPlaced
    | OrderCancelled
    | OrderSnapshot
    | FulfillmentStarted
    | FulfillmentCompleted
    | ShipmentDispatched
    | ShipmentDelivered
)

# Which input events each input topic carries (by topic id in topics.yaml).
INPUT_EVENTS_BY_TOPIC: dict[str, tuple[type[Event], ...]] = {
    "products": (ProductUpserted,),
    "stock_movements": (StockReceived, StockAdjusted, StockCounted),
    "customers": (CustomerUpserted,),
    "customer_pricing": (CustomerPricingUpdated,),
    "opportunities": (OpportunityUpserted,),
    "orders": (OrderPlaced, OrderCancelled, OrderSnapshot),
    "shipments": (FulfillmentStarted, FulfillmentCompleted, ShipmentDispatched, ShipmentDelivered),
}

_INPUT_ADAPTER: TypeAdapter[InputEvent] = TypeAdapter(Annotated[InputEvent, Field(discriminator="event_type")])


def load_input_json(body: str | bytes) -> InputEvent:
    """An input already accepted at intake, read back from an internal envelope."""
    return _INPUT_ADAPTER.validate_json(body)


class InvalidEvent(ValueError):
    """An input that cannot be accepted; `reason` says what to fix, for a person reading the DLQ."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


def parse_input(topic_id: str, payload: Any) -> InputEvent:
    """Validate a decoded message from input topic `topic_id`; raise InvalidEvent with a readable reason."""
    if not isinstance(payload, dict):
        raise InvalidEvent("SchemaViolation", f"expected a JSON object, got {type(payload).__name__}")
    allowed = INPUT_EVENTS_BY_TOPIC[topic_id]
    names = [e.model_fields["event_type"].annotation.__args__[0] for e in allowed]  # type: ignore[union-attr]
    event_type = payload.get("event_type")
    if event_type is None:
        raise InvalidEvent("SchemaViolation", "missing field 'event_type'")
    if event_type not in names:
        raise InvalidEvent(
            "UnknownEventType",
            f"event_type {event_type!r} is not accepted on this topic (expected one of {', '.join(names)})",
        )
    if not payload.get("tenant_id"):
        raise InvalidEvent("MissingTenant", "missing or empty 'tenant_id': every event must name its tenant")
    try:
        return _INPUT_ADAPTER.validate_python(payload)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise InvalidEvent("SchemaViolation", _describe_validation_error(event_type, exc)) from exc


def check_tenant_key(key: bytes | None, tenant_id: str) -> None:
    """Refuse a record whose key names another tenant than its body. Upstream keys are `tenant:entity`;
    a key with no tenant part (no `:`) claims nothing and is accepted, since intake re-keys every input."""
    if not key:
        return
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return  # bytes that name no tenant: nothing to disagree with
    claimed, colon, _ = text.partition(":")
    if colon and claimed != tenant_id:
        raise InvalidEvent(
            "TenantMismatch",
            f"the record key names tenant {claimed[:64]!r} but the body names tenant {tenant_id!r}: "
            "a producer may write only its own tenant's records",
        )


def _describe_validation_error(event_type: str, exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if errors is None:
        return f"{event_type}: {exc}"
    parts = []
    for err in errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"][1:]) or "(event)"
        parts.append(f"{loc}: {err['msg']}" + (f" (got {err['input']!r})" if err["type"] != "missing" else ""))
    return f"{event_type} is invalid: " + "; ".join(parts)


# ---- outputs ------------------------------------------------------------------------------------------


class Output(Model):
    event_id: str
    event_type: str
    tenant_id: str
    occurred_at: AwareDatetime
    causation_id: str


class LocationAvailability(Model):
    location: str
    on_hand: int
    reserved: int
    soft_allocated: int
    backordered: int
    available: int


class SkuAvailability(Output):
    event_type: Literal["SkuAvailability"] = "SkuAvailability"
    sku: str
    description: str | None = None
    unit_price: Decimal | None = None
    lead_time_days: int | None = None
    locations: tuple[LocationAvailability, ...]
    version: int
    as_of: AwareDatetime


class AllocatedLine(Model):
    line_id: str
    sku: str
    quantity: int
    location: str
    unit_price: Decimal
    customer_price: Decimal


class UnavailableItem(Model):
    sku: str
    location: str
    required: int
    available: int
    shortfall: int


class OrderOutput(Output):
    order_id: str
    customer_id: str
    opportunity_id: str | None = None


class OrderInventoryAllocated(OrderOutput):
    event_type: Literal["OrderInventoryAllocated"] = "OrderInventoryAllocated"
    lines: tuple[AllocatedLine, ...]
    order_value: Decimal
    reserved_until: AwareDatetime


RejectionReason = Literal["INSUFFICIENT_INVENTORY", "CREDIT_LIMIT_EXCEEDED", "INVALID_ORDER", "UNKNOWN_CUSTOMER"]


class OrderAllocationRejected(OrderOutput):
    event_type: Literal["OrderAllocationRejected"] = "OrderAllocationRejected"
    reason: RejectionReason
    message: str
    unavailable_items: tuple[UnavailableItem, ...] = ()


class ReleasedLine(Model):
    line_id: str
    sku: str
    quantity: int
    location: str


class OrderInventoryReleased(OrderOutput):
    event_type: Literal["OrderInventoryReleased"] = "OrderInventoryReleased"
    # STOCK_LOST: a physical count fell below what was reserved and this order's hold was dropped.
    reason: Literal["CANCELLED", "EXPIRED", "REJECTED", "STOCK_LOST"]
    message: str = ""
    lines: tuple[ReleasedLine, ...]


class SyncedLine(Model):
    line_id: str
    sku: str
    quantity: int
    location: str
    unit_cost: Decimal
    total_cost: Decimal


class OrderInventorySynced(OrderOutput):
    """The fleet's reservations after reconciling with the OMS's snapshot, and their inventory impact."""

    event_type: Literal["OrderInventorySynced"] = "OrderInventorySynced"
    status: str
    result: Literal[
        "IN_SYNC",  # the fleet already holds what the OMS says
        "UPDATED",  # reservations changed to match
        "PARTIAL",  # some SKUs could not change (unavailable_items); the rest did
        "CANCELLED",  # the OMS cancelled it: everything released
        "PENDING",  # allocation still in flight: retry later
        "NOT_ALLOCATED",  # the order is rejected, expired or cancelled here: nothing to reconcile
        "CREDIT_LIMIT_EXCEEDED",  # the OMS's lines would pass the credit limit: nothing changed
        "REJECTED",  # the OMS's lines could not be priced (e.g. unknown SKU): nothing changed
        "NOT_FOUND",  # the fleet never saw the order
    ]
    message: str = ""
    lines: tuple[SyncedLine, ...]
    total_value: Decimal
    unavailable_items: tuple[UnavailableItem, ...] = ()


class ShippedItem(Model):
    sku: str
    quantity: int
    location: str


class FulfillmentOutput(Output):
    fulfillment_id: str
    order_id: str
    status: FulfillmentStatus
    items: tuple[ShippedItem, ...] = ()
    shipping_method: str | None = None
    tracking_number: str | None = None
    carrier: str | None = None
    estimated_delivery: str | None = None
    reason: str | None = None


class FulfillmentAccepted(FulfillmentOutput):
    event_type: Literal["FulfillmentAccepted"] = "FulfillmentAccepted"


class FulfillmentRejected(FulfillmentOutput):
    event_type: Literal["FulfillmentRejected"] = "FulfillmentRejected"


class FulfillmentCompletedEvent(FulfillmentOutput):
    """Output twin of the WMS's FulfillmentCompleted: picking and packing are done."""

    event_type: Literal["FulfillmentCompleted"] = "FulfillmentCompleted"


class FulfillmentStatusChanged(FulfillmentOutput):
    event_type: Literal["FulfillmentStatusChanged"] = "FulfillmentStatusChanged"


class BackorderItem(Model):
    sku: str
    location: str
    quantity: int
    line_id: str = ""


class OrderBackordered(OrderOutput):
    event_type: Literal["OrderBackordered"] = "OrderBackordered"
    backorder_id: str
    priority: Priority
    items: tuple[BackorderItem, ...]


class BackorderOutput(Output):
    backorder_id: str
    order_id: str
    customer_id: str
    priority: Priority
    items: tuple[BackorderItem, ...]
    reason: str | None = None


class BackorderCreated(BackorderOutput):
    event_type: Literal["BackorderCreated"] = "BackorderCreated"


class BackorderFulfilled(BackorderOutput):
    event_type: Literal["BackorderFulfilled"] = "BackorderFulfilled"


class BackorderCancelled(BackorderOutput):
    event_type: Literal["BackorderCancelled"] = "BackorderCancelled"


# ---- opportunities (soft holds) --------------------------------------------------------------------------


class OpportunityLine(Model):
    """An opportunity item: a quantity of a SKU at a location, at the quoted unit price."""

    sku: str
    location: str
    quantity: int
    unit_price: Decimal


class OpportunityOutput(Output):
    opportunity_id: str
    customer_id: str
    stage: Stage
    probability: float
    items: tuple[OpportunityLine, ...]


class OpportunityInventoryAllocated(OpportunityOutput):
    """Every item of a likely opportunity is soft-held (counts against available-to-promise)."""

    event_type: Literal["OpportunityInventoryAllocated"] = "OpportunityInventoryAllocated"
    reserved_until: AwareDatetime  # the end of expected_close_date (UTC): the holds expire then


OpportunityReleaseReason = Literal["LOST", "BELOW_THRESHOLD", "EXPIRED", "CONVERTED", "CHANGED", "STOCK_LOST"]


class OpportunityInventoryReleased(OpportunityOutput):
    """Soft holds given back: `items` are the quantities released (for CONVERTED: taken over by `order_id`)."""

    event_type: Literal["OpportunityInventoryReleased"] = "OpportunityInventoryReleased"
    reason: OpportunityReleaseReason
    message: str = ""
    order_id: str | None = None


class OpportunityInventoryRejected(OpportunityOutput):
    """The opportunity holds nothing: too unlikely, lost, or not all of its items could be held."""

    event_type: Literal["OpportunityInventoryRejected"] = "OpportunityInventoryRejected"
    reason: Literal["LOW_PROBABILITY", "CLOSED_LOST", "INSUFFICIENT_INVENTORY"]
    message: str
    unavailable_items: tuple[UnavailableItem, ...] = ()


class OpportunityInventoryPreempted(OpportunityOutput):
    """A firm order that was short took these soft holds (`items`, whole holds per location)."""

    event_type: Literal["OpportunityInventoryPreempted"] = "OpportunityInventoryPreempted"
    order_id: str
    message: str = ""
