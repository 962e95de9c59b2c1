"""The order saga and opportunity processors: one saga per `tenant|order` (topic order_commands) and per
`tenant|opportunity` (topic opportunity_commands), stored whole (EntityStore: their inputs bound their
size). A saga that holds stock asks its partition's expiry index (the partition key's state) to wake it;
the index's ExpireDue is decided here, against the saga's own state."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from agents.core import opportunity as opportunity_core
from agents.core import saga as saga_core
from agents.core.commands import (
    BackorderFilled,
    ExpireDue,
    ExpiryTick,
    OpenOrder,
    OpportunityConverted,
    OpportunityPreempted,
    OrderPriced,
    SoftReserved,
    StockLost,
    StockReserved,
    WatchExpiry,
)
from agents.core.events import (
    FulfillmentCompleted,
    FulfillmentStarted,
    OpportunityUpserted,
    OrderCancelled,
    OrderPlaced,
    OrderSnapshot,
    ShipmentDelivered,
    ShipmentDispatched,
)
from agents.core.ids import split_key
from agents.envelope import Envelope, SourceRef
from agents.metrics import EVENTS_PROCESSED, ORDER_ALLOCATION_SECONDS
from agents.processors import indexes
from agents.processors.base import (
    Out,
    Where,
    checked,
    count_handled,
    log,
    observe_hop,
    outs_of,
    read,
    refused,
    utcnow,
)
from agents.runtime.partitions import is_partition_key, partition_keys
from agents.runtime.store import EntityStore
from agents.views import View, opportunity_view, order_view

S = TypeVar("S", bound=BaseModel)

PLACEMENT_OUTCOMES = frozenset(
    {"OrderInventoryAllocated", "OrderAllocationRejected", "OrderBackordered", "OrderInventoryReleased"}
)
ORDER_MESSAGES = (
    OrderPlaced,
    OpenOrder,
    OrderCancelled,
    OrderSnapshot,
    OrderPriced,
    StockReserved,
    StockLost,
    BackorderFilled,
    FulfillmentStarted,
    FulfillmentCompleted,
    ShipmentDispatched,
    ShipmentDelivered,
)
OPPORTUNITY_MESSAGES = (OpportunityUpserted, SoftReserved, OpportunityConverted, OpportunityPreempted)


class SagaProcessor(Generic[S]):
    """What the two saga processors share; subclasses say how their core is called."""

    topic_id: str
    name: str
    messages: tuple[type, ...]

    def __init__(self, model: type[S], partitions: int, cache_entries: int) -> None:
        self.store: EntityStore[S] = EntityStore(model, cache_entries)
        self.partitions = partitions

    # ---- what a subclass says --------------------------------------------------------------------

    def new(self, tenant_id: str, entity_id: str) -> S:
        raise NotImplementedError

    def handle(self, saga: S, message: Any, now: datetime) -> Any:
        raise NotImplementedError

    def expire(self, saga: S, now: datetime, causation: str) -> Any:
        raise NotImplementedError

    def due(self, saga: S) -> datetime | None:
        raise NotImplementedError

    def view(self, saga: S) -> View:
        raise NotImplementedError

    def entity_id(self, saga: S) -> str:
        raise NotImplementedError

    # ---- the processor ----------------------------------------------------------------------------

    def __call__(self, value: bytes, key: bytes, timestamp: int, state: Any, where: Where) -> list[Out]:
        started = time.perf_counter()
        observe_hop(self.topic_id, timestamp)
        envelope: Envelope | None = None
        try:
            envelope, command = read(value)
            if is_partition_key(key):
                return self._index(state, command, envelope.source)
            saga = self.store.get(state, key)
            if saga is None:
                saga = self.new(*split_key(key))
            now = utcnow()
            if isinstance(command, ExpireDue):
                result = self.expire(saga, command.issued_at, command.tick_id)
            elif isinstance(command, self.messages):
                result = self.handle(saga, command, now)
            else:
                raise TypeError(f"{type(command).__name__} does not belong on {self.topic_id}")
            out = outs_of(result.outputs, result.commands, envelope.source)
            nxt = result.saga
            if nxt is not saga:
                view = self.view(nxt)
                out.append(Out(*view))
            due = self.due(nxt)
            if due is not None and (due != self.due(saga) or isinstance(command, ExpireDue)):
                pk = partition_keys(self.partitions)[where.partition]
                out.append(indexes.expire_later(self.topic_id, pk, split_key(key)[0], self.entity_id(nxt), due, now))
            checked(out)
            if nxt is not saga:
                self.store.put(state, key, nxt)
        except Exception as exc:  # a refusal or a bug: dead-lettered, the partition moves on
            return refused(self.topic_id, self.name, where, key, value, envelope, exc)
        self.observe(result, envelope.source)
        if result.note:
            log.info("%s %s: %s", self.name, key.decode(errors="replace")[:300], result.note)
        count_handled(self.topic_id, self.name, result.duplicate, started)
        return out

    def observe(self, result: Any, source: SourceRef | None) -> None:
        pass

    def _index(self, state: Any, command: Any, source: SourceRef | None) -> list[Out]:
        if isinstance(command, WatchExpiry):
            indexes.watch_expiry(state, command)
            EVENTS_PROCESSED.labels(self.topic_id, "indexed").inc()
            return []
        if isinstance(command, ExpiryTick):
            out = indexes.walk_expiry(state, command, self.topic_id, source)
            EVENTS_PROCESSED.labels(self.topic_id, "tick").inc()
            if out:
                log.info("expiry tick on %s: %d saga(s) due", self.topic_id, len(out))
            return out
        raise TypeError(f"{type(command).__name__} does not belong on a partition key of {self.topic_id}")


class OrderSagas(SagaProcessor[saga_core.OrderSaga]):
    topic_id = "order_commands"
    name = "order_sagas"
    messages = ORDER_MESSAGES

    def __init__(self, partitions: int, cache_entries: int, hold: timedelta) -> None:
        super().__init__(saga_core.OrderSaga, partitions, cache_entries)
        self.hold = hold

    def new(self, tenant_id: str, entity_id: str) -> saga_core.OrderSaga:
        return saga_core.new_saga(tenant_id, entity_id)

    def handle(self, saga: saga_core.OrderSaga, message: Any, now: datetime) -> Any:
        return saga_core.handle(saga, message, now, self.hold)

    def expire(self, saga: saga_core.OrderSaga, now: datetime, causation: str) -> Any:
        return saga_core.expire(saga, now, causation)

    def due(self, saga: saga_core.OrderSaga) -> datetime | None:
        return saga.reserved_until if saga.status == "INVENTORY_ALLOCATED" else None

    def view(self, saga: saga_core.OrderSaga) -> View:
        return order_view(saga)

    def entity_id(self, saga: saga_core.OrderSaga) -> str:
        return saga.order_id

    def observe(self, result: Any, source: SourceRef | None) -> None:
        if source is None or not source.timestamp or result.duplicate:
            return
        for output in result.outputs:
            if output.event_type in PLACEMENT_OUTCOMES:
                ORDER_ALLOCATION_SECONDS.labels(output.event_type).observe(max(time.time() - source.timestamp, 0.0))


class Opportunities(SagaProcessor[opportunity_core.OpportunitySaga]):
    topic_id = "opportunity_commands"
    name = "opportunities"
    messages = OPPORTUNITY_MESSAGES

    def __init__(self, partitions: int, cache_entries: int) -> None:
        super().__init__(opportunity_core.OpportunitySaga, partitions, cache_entries)

    def new(self, tenant_id: str, entity_id: str) -> opportunity_core.OpportunitySaga:
        return opportunity_core.new_opportunity(tenant_id, entity_id)

    def handle(self, saga: opportunity_core.OpportunitySaga, message: Any, now: datetime) -> Any:
        return opportunity_core.handle(saga, message, now)

    def expire(self, saga: opportunity_core.OpportunitySaga, now: datetime, causation: str) -> Any:
        return opportunity_core.expire(saga, now, causation)

    def due(self, saga: opportunity_core.OpportunitySaga) -> datetime | None:
        holding = bool(saga.holds) or saga.round is not None
        return saga.expires_at if holding else None

    def view(self, saga: opportunity_core.OpportunitySaga) -> View:
        return opportunity_view(saga)

    def entity_id(self, saga: opportunity_core.OpportunitySaga) -> str:
        return saga.opportunity_id
