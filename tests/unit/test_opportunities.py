"""Opportunity soft holds: the opportunity saga (agents/core/opportunity.py) and the SKU ledger's soft
holds, conversion and pre-emption (agents/core/ledger.py), driven through a small in-memory bus."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from agents.core import ledger as ledgers
from agents.core import opportunity as core
from agents.core.commands import (
    Command,
    ExpiryTick,
    OpportunityPreempted,
    ReserveStock,
    SoftLine,
    SoftRelease,
    SoftReserve,
    SoftReserved,
    StockReserved,
)
from agents.core.events import (
    OpportunityInventoryAllocated,
    OpportunityInventoryPreempted,
    OpportunityInventoryRejected,
    OpportunityInventoryReleased,
    OpportunityUpserted,
    Output,
)
from agents.core.ids import event_id
from agents.core.routing import output_topic, route_command
from tests.unit.factories import (
    T0,
    release_stock_factory,
    reserve_stock_factory,
    stock_counted_factory,
    stock_received_factory,
)

TENANT = "acme"
OPP = "OPP-1"
_n = iter(range(1, 10**9))


def upsert(
    items: list[tuple[str, int] | tuple[str, int, str]],
    probability: float = 0.6,
    stage: str = "PROPOSAL",
    expected_close_date: date | datetime = date(2026, 12, 31),
    opportunity_id: str = OPP,
    **overrides: Any,
) -> OpportunityUpserted:
    return OpportunityUpserted(
        event_id=overrides.pop("event_id", f"up-{next(_n)}"),
        event_type="OpportunityUpserted",
        tenant_id=TENANT,
        occurred_at=overrides.pop("occurred_at", T0),
        opportunity_id=opportunity_id,
        customer_id="CUST-1",
        sales_rep_id="REP-1",
        stage=stage,
        probability=probability,
        expected_close_date=expected_close_date,
        items=tuple(
            {"sku": it[0], "quantity": it[1], "location": it[2] if len(it) > 2 else "WH1", "unit_price": "10.00"}
            for it in items
        ),
        **overrides,
    )


@dataclass
class Bus:
    """Opportunity sagas and SKU ledgers; every command is delivered, in order, until nothing moves."""

    stock: dict[str, dict[str, int]]  # sku -> location -> on hand
    now: datetime = T0
    ledgers: dict[str, ledgers.SkuLedger] = field(default_factory=dict)
    sagas: dict[str, core.OpportunitySaga] = field(default_factory=dict)
    queue: deque[Command] = field(default_factory=deque)
    outputs: list[Output] = field(default_factory=list)
    order_replies: list[StockReserved] = field(default_factory=list)

    def __post_init__(self) -> None:
        for sku, locations in self.stock.items():
            ledger = ledgers.new_ledger(TENANT, sku)
            for loc, qty in locations.items():
                if qty:
                    ledger = ledgers.handle(
                        ledger, stock_received_factory(sku=sku, location=loc, quantity=qty), T0
                    ).ledger
            self.ledgers[sku] = ledger

    def saga(self, opportunity_id: str = OPP) -> core.OpportunitySaga:
        return self.sagas.get(opportunity_id) or core.new_opportunity(TENANT, opportunity_id)

    def to_saga(self, message: Any, opportunity_id: str = OPP) -> core.OpportunityResult:
        result = core.handle(self.saga(opportunity_id), message, self.now)
        self.sagas[opportunity_id] = result.saga
        self.outputs.extend(result.outputs)
        self.queue.extend(result.commands)
        return result

    def to_ledger(self, command: Any) -> ledgers.LedgerResult:
        ledger = self.ledgers.get(command.sku) or ledgers.new_ledger(TENANT, command.sku)
        result = ledgers.handle(ledger, command, self.now)
        self.ledgers[command.sku] = result.ledger
        self.queue.extend(result.replies)
        return result

    def run(self) -> None:
        while self.queue:
            command = self.queue.popleft()
            target = route_command(command)
            if target.topic_id == "sku_commands":
                self.to_ledger(command)
            elif isinstance(command, StockReserved):
                self.order_replies.append(command)
            elif target.topic_id == "order_commands":
                continue  # BackorderFilled, StockLost: no order saga on this bus
            else:
                assert target.topic_id == "opportunity_commands"
                self.to_saga(command, target.entity_id)

    def send(self, message: Any, opportunity_id: str = OPP) -> list[Output]:
        before = len(self.outputs)
        self.to_saga(message, opportunity_id)
        self.run()
        return self.outputs[before:]

    def order(self, order_id: str, sku: str, lines: list[tuple[str, int]], **fields: Any) -> StockReserved:
        command = reserve_stock_factory(
            order_id=order_id,
            sku=sku,
            lines=[
                {"line_id": f"L{i}", "sku": sku, "quantity": q, "location": loc} for i, (loc, q) in enumerate(lines)
            ],
            **fields,
        )
        before = len(self.order_replies)
        self.queue.append(command)
        self.run()
        (reply,) = self.order_replies[before:]
        return reply

    def soft(self, sku: str, location: str = "WH1") -> int:
        return self.ledgers[sku].committed(location, "OPPORTUNITY")

    def firm(self, sku: str, location: str = "WH1") -> int:
        return self.ledgers[sku].committed(location, "ORDER")

    def check_never_oversold(self) -> None:
        for ledger in self.ledgers.values():
            for loc in ledger.locations():
                committed = ledger.committed(loc, "ORDER") + ledger.committed(loc, "OPPORTUNITY")
                assert committed <= ledger.on_hand.get(loc, 0), f"{ledger.sku}@{loc} oversold"


def kinds(outputs: list[Output]) -> list[str]:
    return [o.event_type for o in outputs]


# ---- threshold and CLOSED_LOST -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probability", "stage", "reason"),
    [
        (0.29, "PROPOSAL", "LOW_PROBABILITY"),
        (0.0, "LEAD", "LOW_PROBABILITY"),
        (0.9, "CLOSED_LOST", "CLOSED_LOST"),
        (0.1, "CLOSED_LOST", "CLOSED_LOST"),
    ],
)
def test_an_unlikely_or_lost_opportunity_holds_nothing_and_says_why(
    probability: float, stage: str, reason: str
) -> None:
    bus = Bus({"SKU-1": {"WH1": 10}})
    result = core.handle(core.new_opportunity(TENANT, OPP), upsert([("SKU-1", 4)], probability, stage), T0)
    assert result.commands == []
    (out,) = result.outputs
    assert isinstance(out, OpportunityInventoryRejected)
    assert (out.reason, out.stage, out.probability) == (reason, stage, probability)
    assert [(i.sku, i.quantity, i.unit_price) for i in out.items] == [("SKU-1", 4, Decimal("10.00"))]
    assert bus.soft("SKU-1") == 0


@pytest.mark.parametrize("stage", ["LEAD", "QUALIFIED", "PROPOSAL", "NEGOTIATION", "CLOSED_WON"])
def test_at_the_threshold_any_stage_but_closed_lost_soft_holds_its_items(stage: str) -> None:
    bus = Bus({"SKU-1": {"WH1": 10, "WH2": 5}, "SKU-2": {"WH1": 3}})
    (out,) = bus.send(upsert([("SKU-1", 4), ("SKU-1", 2, "WH2"), ("SKU-2", 3), ("SKU-1", 1)], 0.3, stage))
    assert isinstance(out, OpportunityInventoryAllocated)
    assert out.reserved_until == datetime(2027, 1, 1, tzinfo=UTC)  # the end of 2026-12-31, UTC
    assert out.event_id == event_id("OpportunityInventoryAllocated", TENANT, OPP, out.causation_id)
    assert [(i.sku, i.location, i.quantity) for i in out.items] == [
        ("SKU-1", "WH1", 5),
        ("SKU-1", "WH2", 2),
        ("SKU-2", "WH1", 3),
    ]
    assert (bus.soft("SKU-1"), bus.soft("SKU-1", "WH2"), bus.soft("SKU-2")) == (5, 2, 3)
    assert bus.ledgers["SKU-1"].available("WH1") == 5
    assert bus.saga().status == "ALLOCATED"
    assert output_topic(out) == ("allocations", OPP)


def test_items_are_held_all_or_none_across_skus() -> None:
    bus = Bus({"SKU-1": {"WH1": 10}, "SKU-2": {"WH1": 2}, "SKU-3": {"WH1": 10}})
    outputs = bus.send(upsert([("SKU-1", 4), ("SKU-2", 5), ("SKU-3", 1)]))
    (out,) = outputs
    assert isinstance(out, OpportunityInventoryRejected)
    assert out.reason == "INSUFFICIENT_INVENTORY"
    assert [(u.sku, u.location, u.required, u.available, u.shortfall) for u in out.unavailable_items] == [
        ("SKU-2", "WH1", 5, 2, 3)
    ]
    assert "SKU-2@WH1 needs 5, 2 available" in out.message
    assert [bus.soft(s) for s in ("SKU-1", "SKU-2", "SKU-3")] == [0, 0, 0]
    assert bus.saga().status == "REJECTED" and bus.saga().holds == {}


def test_within_one_sku_every_location_must_fit() -> None:
    bus = Bus({"SKU-1": {"WH1": 10, "WH2": 1}})
    (out,) = bus.send(upsert([("SKU-1", 4), ("SKU-1", 2, "WH2")]))
    assert isinstance(out, OpportunityInventoryRejected)
    assert (bus.soft("SKU-1"), bus.soft("SKU-1", "WH2")) == (0, 0)


def test_queued_backorders_come_before_soft_holds() -> None:
    bus = Bus({"SKU-1": {"WH1": 0}})
    bus.order("ORD-BO", "SKU-1", [("WH1", 10)], backorder=True)
    bus.to_ledger(stock_received_factory(sku="SKU-1", quantity=6))  # all 6 go to the waiting backorder
    assert (bus.firm("SKU-1"), bus.ledgers["SKU-1"].backordered("WH1")) == (6, 4)
    (out,) = bus.send(upsert([("SKU-1", 1)]))
    assert isinstance(out, OpportunityInventoryRejected)
    # Even free stock (as between a receipt and the queue's fill) is not taken while backorders wait for it.
    ledger = bus.ledgers["SKU-1"]
    bus.ledgers["SKU-1"] = ledger.model_copy(update={"on_hand": {"WH1": 12}})  # 2 spare beyond the 4 waiting
    (out,) = bus.send(upsert([("SKU-1", 3)]))
    assert isinstance(out, OpportunityInventoryRejected)
    assert out.unavailable_items[0].available == 2
    (out,) = bus.send(upsert([("SKU-1", 2)]))
    assert isinstance(out, OpportunityInventoryAllocated)


# ---- releases ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"stage": "CLOSED_LOST"}, "LOST"), ({"probability": 0.2}, "BELOW_THRESHOLD")],
)
def test_losing_the_opportunity_or_falling_below_the_threshold_releases_every_hold(
    change: dict[str, Any], reason: str
) -> None:
    bus = Bus({"SKU-1": {"WH1": 10}, "SKU-2": {"WH1": 10}})
    bus.send(upsert([("SKU-1", 4), ("SKU-2", 1)]))
    assert (bus.soft("SKU-1"), bus.soft("SKU-2")) == (4, 1)
    (out,) = bus.send(upsert([("SKU-1", 4), ("SKU-2", 1)], **{"probability": 0.6, "stage": "PROPOSAL", **change}))
    assert isinstance(out, OpportunityInventoryReleased)
    assert out.reason == reason
    assert [(i.sku, i.quantity) for i in out.items] == [("SKU-1", 4), ("SKU-2", 1)]
    assert (bus.soft("SKU-1"), bus.soft("SKU-2")) == (0, 0)
    assert bus.saga().status == "RELEASED"
    # Nothing held any more: a second such upsert is a rejection, not a release.
    (again,) = bus.send(upsert([("SKU-1", 4)], **{"probability": 0.6, "stage": "PROPOSAL", **change}))
    assert isinstance(again, OpportunityInventoryRejected)


def test_a_changed_opportunity_asks_only_for_what_changed_and_drops_a_removed_sku() -> None:
    bus = Bus({"SKU-1": {"WH1": 10}, "SKU-2": {"WH1": 10}, "SKU-3": {"WH1": 10}})
    bus.send(upsert([("SKU-1", 4), ("SKU-2", 1)]))
    result = bus.to_saga(upsert([("SKU-1", 4), ("SKU-3", 2)]))
    assert sorted((c.sku, len(c.lines)) for c in result.commands if isinstance(c, SoftReserve)) == [
        ("SKU-2", 0),
        ("SKU-3", 1),
    ]
    bus.run()
    assert [bus.soft(s) for s in ("SKU-1", "SKU-2", "SKU-3")] == [4, 0, 2]
    # A probability change re-sends every SKU, so the ledgers pre-empt by the current probability.
    result = bus.to_saga(upsert([("SKU-1", 4), ("SKU-3", 2)], probability=0.9))
    assert sorted(c.sku for c in result.commands if isinstance(c, SoftReserve)) == ["SKU-1", "SKU-3"]
    bus.run()
    assert {r.probability for r in bus.ledgers["SKU-1"].reservations.values()} == {0.9}


def test_a_change_that_no_longer_fits_gives_back_what_was_held() -> None:
    bus = Bus({"SKU-1": {"WH1": 10}, "SKU-2": {"WH1": 3}})
    bus.send(upsert([("SKU-1", 4), ("SKU-2", 1)]))
    outputs = bus.send(upsert([("SKU-1", 4), ("SKU-2", 5)]))
    assert kinds(outputs) == ["OpportunityInventoryReleased", "OpportunityInventoryRejected"]
    released = outputs[0]
    assert isinstance(released, OpportunityInventoryReleased) and released.reason == "CHANGED"
    assert [(i.sku, i.quantity) for i in released.items] == [("SKU-1", 4), ("SKU-2", 1)]
    assert (bus.soft("SKU-1"), bus.soft("SKU-2")) == (0, 0)


def test_an_upsert_during_a_round_waits_for_it_and_an_older_one_is_ignored() -> None:
    bus = Bus({"SKU-1": {"WH1": 10}})
    first = upsert([("SKU-1", 4)], occurred_at=T0)
    bus.to_saga(first)
    later = upsert([("SKU-1", 6)], occurred_at=T0 + timedelta(minutes=5))
    assert bus.to_saga(later).commands == []
    stale = upsert([("SKU-1", 1)], occurred_at=T0 + timedelta(minutes=1))
    assert "ignored" in bus.to_saga(stale).note
    bus.run()
    assert kinds(bus.outputs) == ["OpportunityInventoryAllocated", "OpportunityInventoryAllocated"]
    assert bus.outputs[-1].causation_id == later.event_id
    assert bus.soft("SKU-1") == 6


def test_a_redelivered_upsert_changes_nothing_and_re_emits_the_same_event() -> None:
    bus = Bus({"SKU-1": {"WH1": 10}})
    event = upsert([("SKU-1", 4)])
    (first,) = bus.send(event)
    saga = bus.saga()
    result = core.handle(saga, event, T0 + timedelta(hours=1))
    assert result.duplicate and result.saga == saga
    assert [o.event_id for o in result.outputs] == [first.event_id]
    # A redelivered SoftReserve is answered as the ledger stands, without a second hold.
    reserve = SoftReserve(
        command_id=event_id("SoftReserve", TENANT, OPP, "SKU-1", event.event_id),
        tenant_id=TENANT,
        issued_at=T0,
        opportunity_id=OPP,
        sku="SKU-1",
        lines=(SoftLine(location="WH1", quantity=4),),
        probability=0.6,
    )
    again = bus.to_ledger(reserve)
    assert again.duplicate and bus.soft("SKU-1") == 4
    (reply,) = again.replies
    assert isinstance(reply, SoftReserved) and reply.accepted


# ---- expiry ------------------------------------------------------------------------------------------------


def test_holds_expire_after_the_end_of_the_expected_close_date() -> None:
    bus = Bus({"SKU-1": {"WH1": 10}})
    bus.send(upsert([("SKU-1", 4)], expected_close_date=date(2026, 11, 1)))
    end_of_day = datetime(2026, 11, 2, tzinfo=UTC)
    assert core.expire(bus.saga(), end_of_day - timedelta(seconds=1), "tick-0").note == "not due"
    tick = ExpiryTick(command_id="tick-1", tenant_id="-", issued_at=end_of_day)
    (out,) = bus.send(tick)
    assert isinstance(out, OpportunityInventoryReleased) and out.reason == "EXPIRED"
    assert out.causation_id == "tick-1"
    assert bus.soft("SKU-1") == 0 and bus.saga().status == "EXPIRED"
    assert core.expire(bus.saga(), end_of_day + timedelta(days=1), "tick-2").note == "not due"
    # A later upsert with a new close date holds again.
    (again,) = bus.send(upsert([("SKU-1", 4)], expected_close_date=date(2026, 12, 1)))
    assert isinstance(again, OpportunityInventoryAllocated) and bus.soft("SKU-1") == 4


def test_a_close_timestamp_is_taken_as_given_and_an_in_flight_round_is_answered_before_it_expires() -> None:
    close = datetime(2026, 11, 1, 15, 30, tzinfo=UTC)
    assert core.close_deadline(close) == close
    assert core.close_deadline(date(2026, 11, 1)) == datetime(2026, 11, 2, tzinfo=UTC)
    bus = Bus({"SKU-1": {"WH1": 10}})
    bus.to_saga(upsert([("SKU-1", 4)], expected_close_date=close))  # SoftReserve not delivered yet
    late = close + timedelta(days=1)
    assert bus.to_saga(ExpiryTick(command_id="tick-1", tenant_id="-", issued_at=late)).outputs == []
    bus.run()
    assert kinds(bus.outputs) == ["OpportunityInventoryAllocated"]
    (out,) = bus.send(ExpiryTick(command_id="tick-2", tenant_id="-", issued_at=late))
    assert isinstance(out, OpportunityInventoryReleased) and out.reason == "EXPIRED"
    assert bus.soft("SKU-1") == 0 and bus.saga().status == "EXPIRED"


# ---- conversion --------------------------------------------------------------------------------------------


def test_an_order_naming_the_opportunity_converts_its_hold_without_counting_twice() -> None:
    bus = Bus({"SKU-1": {"WH1": 10}})
    bus.send(upsert([("SKU-1", 6)]))
    bus.order("ORD-X", "SKU-1", [("WH1", 4)])  # another order takes what is free
    assert bus.ledgers["SKU-1"].available("WH1") == 0
    reply = bus.order("ORD-1", "SKU-1", [("WH1", 5)], opportunity_id=OPP)
    assert reply.accepted
    assert (bus.firm("SKU-1"), bus.soft("SKU-1")) == (9, 1)  # 5 converted of 6; 1 still held softly
    converted = [o for o in bus.outputs if isinstance(o, OpportunityInventoryReleased)]
    assert [(o.reason, o.order_id, [(i.sku, i.quantity) for i in o.items]) for o in converted] == [
        ("CONVERTED", "ORD-1", [("SKU-1", 5)])
    ]
    assert bus.saga().holds == {"SKU-1": (SoftLine(location="WH1", quantity=1),)}
    assert bus.saga().served() == {"SKU-1|WH1": 5}
    # The CRM marks it won with the same items: what was converted is never held again.
    bus.send(upsert([("SKU-1", 6)], probability=1.0, stage="CLOSED_WON"))
    assert (bus.firm("SKU-1"), bus.soft("SKU-1")) == (9, 1)
    # A second order converts the rest and takes no more than that from the hold.
    bus.to_ledger(stock_received_factory(sku="SKU-1", quantity=5))
    assert bus.order("ORD-2", "SKU-1", [("WH1", 3)], opportunity_id=OPP).accepted
    assert (bus.firm("SKU-1"), bus.soft("SKU-1")) == (12, 0)
    assert bus.saga().status == "CONVERTED"
    bus.check_never_oversold()


def test_a_conversion_the_opportunity_has_not_heard_of_is_not_held_again() -> None:
    """The ledger converts while a re-sent SoftReserve (asked before the saga knew) is on its way."""
    bus = Bus({"SKU-1": {"WH1": 10}})
    bus.send(upsert([("SKU-1", 6)]))
    bus.to_saga(upsert([("SKU-1", 6)], probability=0.8))  # SoftReserve(6) queued, not delivered yet
    order = reserve_stock_factory(
        order_id="ORD-1",
        lines=[{"line_id": "L1", "sku": "SKU-1", "quantity": 4, "location": "WH1"}],
        opportunity_id=OPP,
    )
    bus.queue.appendleft(order)  # the order reaches the ledger first
    bus.run()
    assert (bus.firm("SKU-1"), bus.soft("SKU-1")) == (4, 2)
    assert bus.saga().holds == {"SKU-1": (SoftLine(location="WH1", quantity=2),)}


# ---- pre-emption -------------------------------------------------------------------------------------------


def seed_holds(bus: Bus, holds: list[tuple[str, int, float]]) -> None:
    """Opportunities holding SKU-1@WH1, oldest first: (id, quantity, probability)."""
    for i, (opp, qty, probability) in enumerate(holds):
        bus.now = T0 + timedelta(minutes=i)
        bus.send(upsert([("SKU-1", qty)], probability, opportunity_id=opp), opportunity_id=opp)
    bus.now = T0 + timedelta(hours=1)


def test_a_short_firm_order_pre_empts_the_least_likely_holds_first_newest_first_among_equals() -> None:
    bus = Bus({"SKU-1": {"WH1": 12}})
    seed_holds(bus, [("OPP-a", 3, 0.5), ("OPP-b", 3, 0.4), ("OPP-c", 2, 0.4), ("OPP-d", 2, 0.9)])
    assert bus.ledgers["SKU-1"].available("WH1") == 2
    reply = bus.order("ORD-1", "SKU-1", [("WH1", 5)])  # 3 short: OPP-c (0.4, newer) then OPP-b (0.4)
    assert reply.accepted
    preempted = [o for o in bus.outputs if isinstance(o, OpportunityInventoryPreempted)]
    assert [(o.opportunity_id, o.order_id, [(i.sku, i.location, i.quantity) for i in o.items]) for o in preempted] == [
        ("OPP-b", "ORD-1", [("SKU-1", "WH1", 3)]),
        ("OPP-c", "ORD-1", [("SKU-1", "WH1", 2)]),
    ]
    assert bus.firm("SKU-1") == 5 and bus.soft("SKU-1") == 5  # OPP-a and OPP-d keep theirs
    assert bus.sagas["OPP-b"].status == "PREEMPTED" and bus.sagas["OPP-b"].holds == {}
    assert bus.sagas["OPP-a"].holds == {"SKU-1": (SoftLine(location="WH1", quantity=3),)}
    bus.check_never_oversold()


def test_an_order_that_all_soft_holds_would_not_satisfy_is_refused_and_drops_nothing() -> None:
    bus = Bus({"SKU-1": {"WH1": 10}})
    seed_holds(bus, [("OPP-a", 3, 0.5), ("OPP-b", 3, 0.4)])
    reply = bus.order("ORD-1", "SKU-1", [("WH1", 11)])
    assert not reply.accepted
    assert (reply.shortages[0].available, reply.shortages[0].shortfall) == (4, 7)
    assert bus.soft("SKU-1") == 6
    assert not [o for o in bus.outputs if isinstance(o, OpportunityInventoryPreempted)]


def test_a_backorder_never_pre_empts_and_a_redelivered_order_tells_the_opportunity_again() -> None:
    bus = Bus({"SKU-1": {"WH1": 5}})
    seed_holds(bus, [("OPP-a", 4, 0.5)])
    bus.order("ORD-BO", "SKU-1", [("WH1", 3)], backorder=True)
    assert (bus.firm("SKU-1"), bus.soft("SKU-1"), bus.ledgers["SKU-1"].backordered("WH1")) == (1, 4, 2)
    bus.to_ledger(stock_received_factory(sku="SKU-1", quantity=2))  # fills the queue: 3 firm, 4 soft, 0 free
    order = reserve_stock_factory(
        order_id="ORD-1", lines=[{"line_id": "L1", "sku": "SKU-1", "quantity": 2, "location": "WH1"}]
    )
    first = bus.to_ledger(order)
    (notice,) = [c for c in first.replies if isinstance(c, OpportunityPreempted)]
    again = bus.to_ledger(order)
    assert again.duplicate
    assert [c for c in again.replies if isinstance(c, OpportunityPreempted)] == [notice]
    bus.run()
    preempted = {o.event_id: o for o in bus.outputs if isinstance(o, OpportunityInventoryPreempted)}
    assert [o.opportunity_id for o in preempted.values()] == ["OPP-a"]  # told twice, the same event both times
    assert bus.sagas["OPP-a"].holds == {} and bus.soft("SKU-1") == 0


def test_a_count_below_what_is_committed_drops_soft_holds_and_tells_the_opportunity() -> None:
    bus = Bus({"SKU-1": {"WH1": 10}})
    seed_holds(bus, [("OPP-a", 4, 0.5)])
    bus.order("ORD-1", "SKU-1", [("WH1", 5)])
    result = bus.to_ledger(stock_counted_factory(sku="SKU-1", quantity=6))
    bus.run()
    assert [type(c).__name__ for c in result.replies] == ["OpportunityPreempted"]
    released = [o for o in bus.outputs if isinstance(o, OpportunityInventoryReleased)]
    assert [(o.reason, o.opportunity_id) for o in released] == [("STOCK_LOST", "OPP-a")]
    assert (bus.firm("SKU-1"), bus.soft("SKU-1")) == (5, 0)


# ---- properties --------------------------------------------------------------------------------------------

LOCATIONS = ("WH1", "WH2")
order_step = st.tuples(
    st.just("order"),
    st.booleans(),  # names the opportunity
    st.lists(st.tuples(st.sampled_from(LOCATIONS), st.integers(1, 6)), min_size=1, max_size=3),
)
steps = st.lists(
    st.one_of(
        order_step,
        order_step,
        st.tuples(st.just("release"), st.integers(0, 20)),
        st.tuples(st.just("receive"), st.sampled_from(LOCATIONS), st.integers(1, 10)),
        st.tuples(st.just("resend"), st.integers(0, 20)),
        st.tuples(st.just("rehold"), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries({loc: st.integers(0, 20) for loc in LOCATIONS}),
    st.fixed_dictionaries({loc: st.integers(0, 8) for loc in LOCATIONS}),
    st.dictionaries(
        st.sampled_from(("OPP-x", "OPP-y")),
        st.tuples(st.sampled_from(LOCATIONS), st.integers(1, 6), st.floats(0.3, 1)),
        max_size=2,
    ),
    steps,
)
def test_conversion_never_counts_twice_and_nothing_is_ever_oversold(
    on_hand: dict[str, int],
    asked: dict[str, int],
    others: dict[str, tuple[str, int, float]],
    seq: list[tuple[Any, ...]],
) -> None:
    """For random stock, soft holds (the opportunity's and others') and orders, some naming the opportunity:
    reserved + soft <= on_hand everywhere, and per location what the opportunity holds softly plus what its
    live orders hold never exceeds the larger of what it asked and what they asked."""
    bus = Bus({"SKU-1": on_hand})
    items = [("SKU-1", q, loc) for loc, q in asked.items() if q]
    for opp, (loc, qty, probability) in sorted(others.items()):
        bus.send(upsert([("SKU-1", qty, loc)], probability, opportunity_id=opp), opportunity_id=opp)
    bus.send(upsert(items))
    live: dict[str, dict[str, int]] = {}  # order naming OPP -> location -> quantity it holds
    sent: list[ReserveStock] = []
    for n, step in enumerate(seq):
        match step:
            case ("order", naming, lines):
                command = reserve_stock_factory(
                    order_id=f"ORD-{n}",
                    lines=[
                        {"line_id": f"L{i}", "sku": "SKU-1", "quantity": q, "location": loc}
                        for i, (loc, q) in enumerate(lines)
                    ],
                    opportunity_id=OPP if naming else None,
                )
                sent.append(command)
                bus.queue.append(command)
                bus.run()
                if bus.order_replies[-1].accepted and naming:
                    live[command.order_id] = {}
                    for loc, q in lines:
                        live[command.order_id][loc] = live[command.order_id].get(loc, 0) + q
            case ("release", k) if sent:
                command = sent[k % len(sent)]
                bus.queue.append(release_stock_factory(order_id=command.order_id))
                bus.run()
                live.pop(command.order_id, None)
            case ("receive", loc, qty):
                bus.to_ledger(stock_received_factory(sku="SKU-1", location=loc, quantity=qty))
                bus.run()
            case ("resend", k) if sent:
                bus.queue.append(sent[k % len(sent)])
                bus.run()
            case ("rehold", _):
                bus.send(upsert(items, probability=0.3 + (n % 7) / 10))
            case _:
                continue
        note(f"{step} -> {bus.ledgers['SKU-1'].reservations}")
        bus.check_never_oversold()
        ledger = bus.ledgers["SKU-1"]
        for loc in LOCATIONS:
            soft = sum(r.quantity for r in ledgers.opportunity_reservations(ledger, OPP).values() if r.location == loc)
            firm = sum(
                r.quantity
                for order_id in live
                for r in ledgers.order_reservations(ledger, order_id).values()
                if r.location == loc
            )
            orders_asked = sum(lines.get(loc, 0) for lines in live.values())
            assert soft + firm <= max(asked[loc], orders_asked), f"{loc}: soft {soft} + firm {firm}"
        # The saga's view of its holds is the ledger's.
        held = {r.location: r.quantity for r in ledgers.opportunity_reservations(ledger, OPP).values()}
        assert {ln.location: ln.quantity for ln in bus.saga().holds.get("SKU-1", ())} == held


def test_a_soft_release_is_applied_once() -> None:
    bus = Bus({"SKU-1": {"WH1": 10}})
    bus.send(upsert([("SKU-1", 4)]))
    release = SoftRelease(
        command_id="rel-1", tenant_id=TENANT, issued_at=T0, opportunity_id=OPP, sku="SKU-1", reason="test"
    )
    assert not bus.to_ledger(release).duplicate
    assert bus.soft("SKU-1") == 0
    assert bus.to_ledger(release).duplicate


def test_the_saga_and_the_ledger_survive_their_table_encoding() -> None:
    """The agents keep both as JSON in RocksDB: a queued upsert with a plain date, notices to re-send."""
    bus = Bus({"SKU-1": {"WH1": 10}})
    bus.to_saga(upsert([("SKU-1", 4)]))
    bus.to_saga(upsert([("SKU-1", 5)], expected_close_date=date(2027, 3, 1)))  # waits for the round
    saga = bus.saga()
    assert saga.queued is not None and saga.round is not None
    assert core.OpportunitySaga.model_validate_json(saga.model_dump_json()) == saga
    bus.run()
    bus.order("ORD-1", "SKU-1", [("WH1", 2)], opportunity_id=OPP)
    ledger = bus.ledgers["SKU-1"]
    assert ledger.recent_soft and ledger.soft_converted
    assert ledgers.SkuLedger.model_validate_json(ledger.model_dump_json()) == ledger
    assert bus.saga().expires_at == datetime(2027, 3, 2, tzinfo=UTC)


def test_a_hold_taken_after_the_opportunity_gave_it_up_is_not_reported_as_its_loss() -> None:
    """Seen in tests/faults: SKU-1 held, SKU-2 refused, so the opportunity is rejected and releases SKU-1; a
    firm order had meanwhile pre-empted the SKU-1 hold on the ledger, and that notice arrived after the
    rejection. Publishing it said the opportunity lost 3 units after it said it held nothing."""
    bus = Bus({"SKU-1": {"WH1": 5}, "SKU-2": {"WH1": 0}})
    bus.to_saga(upsert([("SKU-1", 3), ("SKU-2", 2)], probability=0.5))
    bus.to_ledger(bus.queue.popleft())  # SKU-1 holds 3 and answers
    bus.to_ledger(bus.queue.popleft())  # SKU-2 refuses
    order = reserve_stock_factory(
        order_id="ORD-1", lines=[{"line_id": "L1", "sku": "SKU-1", "quantity": 4, "location": "WH1"}]
    )
    taken = bus.to_ledger(order)  # short by 2: takes the whole soft hold; the notice follows both answers
    (notice,) = [c for c in taken.replies if isinstance(c, OpportunityPreempted)]
    bus.run()
    mine = [o for o in bus.outputs if o.opportunity_id == OPP]
    assert kinds(mine) == ["OpportunityInventoryRejected"]
    assert bus.sagas[OPP].holds == {} and bus.soft("SKU-1") == 0 and bus.firm("SKU-1") == 4
    assert core.handle(bus.sagas[OPP], notice, bus.now).outputs == []  # redelivered: still nothing to say


def test_a_redelivered_pre_emption_re_publishes_the_very_same_event() -> None:
    bus = Bus({"SKU-1": {"WH1": 5}})
    bus.send(upsert([("SKU-1", 3)], probability=0.5))
    order = reserve_stock_factory(
        order_id="ORD-1", lines=[{"line_id": "L1", "sku": "SKU-1", "quantity": 4, "location": "WH1"}]
    )
    (notice,) = [c for c in bus.to_ledger(order).replies if isinstance(c, OpportunityPreempted)]
    bus.run()
    (first,) = [o for o in bus.outputs if isinstance(o, OpportunityInventoryPreempted)]
    assert [(i.sku, i.quantity) for i in first.items] == [("SKU-1", 3)]
    again = core.handle(bus.sagas[OPP], notice, bus.now)
    assert again.duplicate and again.outputs == [first]
