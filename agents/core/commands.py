"""Commands and replies the fleet sends itself between partitions (order saga, customers, SKU ledgers,
opportunities).

Each carries a deterministic `command_id`, so a re-sent command is recognised where it lands.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, TypeAdapter

from agents.core.events import Model, OrderPlaced, Priority, Tier


class Command(Model):
    command_id: str
    tenant_id: str
    issued_at: AwareDatetime


class LineRequest(Model):
    line_id: str
    sku: str
    quantity: int
    location: str


class PricedLine(LineRequest):
    unit_price: Decimal
    customer_price: Decimal
    discount_percentage: Decimal


class LineShortage(Model):
    line_id: str
    sku: str
    location: str
    required: int
    available: int
    shortfall: int


class PriceOrder(Command):
    """Order saga -> customer: price these lines and hold their value against the credit limit
    (replacing whatever this order held before)."""

    kind: Literal["PriceOrder"] = "PriceOrder"
    order_id: str
    customer_id: str
    lines: tuple[LineRequest, ...]


class ReleaseCredit(Command):
    """Order saga -> customer: drop the order's exposure for good."""

    kind: Literal["ReleaseCredit"] = "ReleaseCredit"
    order_id: str
    customer_id: str
    reason: str


class OrderPriced(Command):
    """Customer -> order saga: the priced lines and the exposure held, or why not."""

    kind: Literal["OrderPriced"] = "OrderPriced"
    order_id: str
    customer_id: str
    accepted: bool
    reason: Literal["CREDIT_LIMIT_EXCEEDED", "UNKNOWN_CUSTOMER", "INVALID_ORDER", "RELEASED"] | None = None
    message: str = ""
    tier: Tier | None = None
    lines: tuple[PricedLine, ...] = ()
    order_value: Decimal = Decimal(0)


class OpenOrder(Command):
    """Customer -> order saga: an order from upstream, priced and its credit held (or why not). Intake sends
    OrderPlaced to the customer's partition first, so the saga opens with its price and credit decided and
    goes straight to the SKU ledgers (one hop fewer than asking the customer). `priced` is None when the
    customer did not price it: the order is invalid, or it already holds or released credit; the saga then
    decides as for a bare OrderPlaced."""

    kind: Literal["OpenOrder"] = "OpenOrder"
    order_id: str
    order: OrderPlaced
    priced: OrderPriced | None = None


class ReserveStock(Command):
    """Order saga -> SKU ledger: make the order's reservations on this SKU exactly these lines (all or
    none of them; an empty tuple releases). Replaces what the order held on this SKU before."""

    kind: Literal["ReserveStock"] = "ReserveStock"
    order_id: str
    sku: str
    lines: tuple[LineRequest, ...]
    expires_at: datetime | None = None
    priority: Priority = "MEDIUM"
    customer_id: str = ""
    # Backorder policy: reserve what is free line by line and queue the rest, instead of all or none.
    backorder: bool = False
    tier: Tier = "BRONZE"
    ordered_at: datetime | None = None
    # The opportunity the order converts: its soft holds on this SKU count as free for the order and become
    # the order's reservation as it takes them.
    opportunity_id: str | None = None


class ReleaseStock(Command):
    """Order saga -> SKU ledger: release every reservation of the order on this SKU, for good."""

    kind: Literal["ReleaseStock"] = "ReleaseStock"
    order_id: str
    sku: str
    reason: str


class StockReserved(Command):
    """SKU ledger -> order saga: whether the lines were reserved; the shortages when not."""

    kind: Literal["StockReserved"] = "StockReserved"
    order_id: str
    sku: str
    request_id: str
    accepted: bool
    shortages: tuple[LineShortage, ...] = ()
    backordered: tuple[LineRequest, ...] = ()  # what was queued, per line (backorder policy)
    unit_cost: Decimal | None = None
    message: str = ""


class BackorderFilled(Command):
    """SKU ledger -> order saga: a queued backorder line is now fully reserved."""

    kind: Literal["BackorderFilled"] = "BackorderFilled"
    order_id: str
    sku: str
    line_id: str
    location: str
    quantity: int


class ConsumeStock(Command):
    """Order saga -> SKU ledger: fulfillment issues reserved stock: the order's reservations and on-hand
    both drop by these quantities (an issue movement referencing the order)."""

    kind: Literal["ConsumeStock"] = "ConsumeStock"
    order_id: str
    fulfillment_id: str
    sku: str
    lines: tuple[LineRequest, ...]


class StockLost(Command):
    """SKU ledger -> order saga: a physical count fell below what was reserved; the order's reservation on
    this SKU was dropped (lowest priority, newest first) to keep reserved <= on_hand."""

    kind: Literal["StockLost"] = "StockLost"
    order_id: str
    sku: str
    location: str
    quantity: int
    movement_id: str = ""  # the count that caused it
    message: str = ""


class SoftLine(Model):
    """A quantity of one SKU at one location, held (or asked for) by an opportunity."""

    location: str
    quantity: int


class SoftReserve(Command):
    """Opportunity -> SKU ledger: make the opportunity's soft holds on this SKU exactly these lines (one per
    location; all of them or none; an empty tuple releases). Replaces what it held on this SKU before.

    `converted` is what the opportunity knows orders naming it hold here (per location); what such orders hold
    that the opportunity had not heard of yet is taken off `lines`, so the same demand is never held twice
    (once by the order, once softly)."""

    kind: Literal["SoftReserve"] = "SoftReserve"
    opportunity_id: str
    sku: str
    lines: tuple[SoftLine, ...]
    converted: tuple[SoftLine, ...] = ()
    probability: float
    expires_at: datetime | None = None
    customer_id: str = ""


class SoftRelease(Command):
    """Opportunity -> SKU ledger: drop every soft hold of the opportunity on this SKU."""

    kind: Literal["SoftRelease"] = "SoftRelease"
    opportunity_id: str
    sku: str
    reason: str


class SoftReserved(Command):
    """SKU ledger -> opportunity: whether the soft holds were placed; what the opportunity holds on this SKU
    now (when accepted), or the shortages (when not)."""

    kind: Literal["SoftReserved"] = "SoftReserved"
    opportunity_id: str
    sku: str
    request_id: str
    accepted: bool
    held: tuple[SoftLine, ...] = ()
    shortages: tuple[LineShortage, ...] = ()


class OpportunityConverted(Command):
    """SKU ledger -> opportunity: an order naming the opportunity reserved on this SKU. `ordered` is what the
    order now holds here per location (that much of the opportunity's demand is an order now: never held
    softly again); `items` is what of that it took over from the opportunity's soft holds (may be empty,
    e.g. when the holds had been pre-empted)."""

    kind: Literal["OpportunityConverted"] = "OpportunityConverted"
    opportunity_id: str
    sku: str
    order_id: str
    items: tuple[SoftLine, ...]
    ordered: tuple[SoftLine, ...] = ()
    cause_id: str  # the ledger command that converted (to re-send this notice when it is redelivered)


class OpportunityPreempted(Command):
    """SKU ledger -> opportunity: whole soft holds of the opportunity on this SKU were dropped, because a firm
    order was short (`order_id`) or a physical count fell below what was committed (`movement_id`)."""

    kind: Literal["OpportunityPreempted"] = "OpportunityPreempted"
    opportunity_id: str
    sku: str
    order_id: str = ""
    movement_id: str = ""
    items: tuple[SoftLine, ...]
    cause_id: str
    message: str = ""


class ProcessBackorders(Command):
    """Operator -> every SKU partition: give free stock to the tenant's backorder queues again now."""

    kind: Literal["ProcessBackorders"] = "ProcessBackorders"


class ExpiryTick(Command):
    """Timer -> one order or opportunity partition (its partition key): what is due by `issued_at` expires."""

    kind: Literal["ExpiryTick"] = "ExpiryTick"


class WatchExpiry(Command):
    """Saga -> its partition's expiry index: wake `entity_id` of `tenant_id` at `due`."""

    kind: Literal["WatchExpiry"] = "WatchExpiry"
    entity_id: str
    due: AwareDatetime


class ExpireDue(Command):
    """Expiry index -> one saga: expire what is due by `issued_at` (the tick's time); a saga not due yet
    asks to be woken again."""

    kind: Literal["ExpireDue"] = "ExpireDue"
    tick_id: str


class WatchBackorders(Command):
    """SKU ledger -> its partition's backorder index: `sku` has (or no longer has) a waiting queue."""

    kind: Literal["WatchBackorders"] = "WatchBackorders"
    sku: str
    waiting: bool


class FillBackorders(Command):
    """Backorder index -> one SKU ledger: give free stock to its queue now (ProcessBackorders fans out)."""

    kind: Literal["FillBackorders"] = "FillBackorders"
    sku: str


InternalCommand = (
    PriceOrder
    | ReleaseCredit
    | OrderPriced
    | OpenOrder
    | ReserveStock
    | ReleaseStock
    | ConsumeStock
    | StockReserved
    | StockLost
    | BackorderFilled
    | SoftReserve
    | SoftRelease
    | SoftReserved
    | OpportunityConverted
    | OpportunityPreempted
    | ExpiryTick
    | ProcessBackorders
    | WatchExpiry
    | ExpireDue
    | WatchBackorders
    | FillBackorders
)
INTERNAL_KINDS = frozenset(
    (
        "PriceOrder",
        "ReleaseCredit",
        "OrderPriced",
        "OpenOrder",
        "ReserveStock",
        "ReleaseStock",
        "ConsumeStock",
        "StockReserved",
        "StockLost",
        "BackorderFilled",
        "SoftReserve",
        "SoftRelease",
        "SoftReserved",
        "OpportunityConverted",
        "OpportunityPreempted",
        "ExpiryTick",
        "ProcessBackorders",
        "WatchExpiry",
        "ExpireDue",
        "WatchBackorders",
        "FillBackorders",
    )
)

_COMMAND_ADAPTER: TypeAdapter[InternalCommand] = TypeAdapter(Annotated[InternalCommand, Field(discriminator="kind")])


def load_command_json(body: str | bytes) -> InternalCommand:
    return _COMMAND_ADAPTER.validate_json(body)
