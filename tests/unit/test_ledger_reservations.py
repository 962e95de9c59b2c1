"""Reservations on the SKU ledger, checked against an independent model of what each command must do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import example, given, note, settings
from hypothesis import strategies as st

from agents.core import ledger as core
from agents.core.commands import OpportunityPreempted, ReserveStock, StockReserved
from agents.core.ids import event_id
from tests.unit.factories import (
    T0,
    release_stock_factory,
    reserve_stock_factory,
    stock_adjusted_factory,
    stock_counted_factory,
    stock_received_factory,
)

LOCATIONS = ("WH1", "WH2", "WH3")
ORDERS = ("ORD-A", "ORD-B", "ORD-C")
LINE_IDS = ("L1", "L2", "L3", "L4")
OPPORTUNITIES = ("OPP-a", "OPP-b")

Lines = dict[str, tuple[str, int]]  # line id -> (location, quantity)
Shortage = tuple[str, str, int, int, int]  # line ids, location, required, available, shortfall
Preempted = dict[str, list[tuple[str, int]]]  # opportunity -> [(location, quantity)] of the holds it lost


@dataclass(frozen=True)
class Seed:
    """Stock on hand and opportunity soft holds (which only the opportunity flow creates) to start from."""

    on_hand: dict[str, int]
    soft: dict[str, dict[str, int]]  # opportunity -> location -> quantity held
    probability: dict[str, float]


# ---- the model -----------------------------------------------------------------------------------------


@dataclass
class LedgerModel:
    """What the ledger should hold, in the plainest terms."""

    on_hand: dict[str, int]
    soft: dict[str, dict[str, int]]
    probability: dict[str, float]
    holds: dict[str, Lines] = field(default_factory=dict)  # order -> its reserved lines
    released: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, seed: Seed) -> LedgerModel:
        return cls(dict(seed.on_hand), {o: dict(h) for o, h in seed.soft.items()}, dict(seed.probability))

    def committed(self, location: str) -> int:
        firm = sum(q for lines in self.holds.values() for loc, q in lines.values() if loc == location)
        return firm + sum(held.get(location, 0) for held in self.soft.values())

    def free_for(self, order: str, location: str) -> int:
        mine = sum(q for loc, q in self.holds.get(order, {}).values() if loc == location)
        return self.on_hand.get(location, 0) - self.committed(location) + mine

    def shortages(self, order: str, lines: Lines) -> set[Shortage]:
        """Every location the request does not fit, counting what the order holds there as free for it."""
        required: dict[str, int] = {}
        ids: dict[str, list[str]] = {}
        for line_id, (loc, qty) in lines.items():
            required[loc] = required.get(loc, 0) + qty
            ids.setdefault(loc, []).append(line_id)
        out = set()
        for loc, need in required.items():
            free = self.free_for(order, loc)
            if need > free:
                out.add((",".join(ids[loc]), loc, need, free, need - free))
        return out

    def preemption(self, short: set[Shortage]) -> Preempted | None:
        """The whole soft holds a firm order short at these locations takes: lowest probability first (ties
        by reservation id), until it fits; None when even all of them at some location would not do."""
        lost: Preempted = {}
        for _, loc, _, _, shortfall in sorted(short, key=lambda s: s[1]):
            holders = sorted(
                (o for o, held in self.soft.items() if held.get(loc)), key=lambda o: (self.probability[o], o)
            )
            freed = 0
            for owner in holders:
                if freed >= shortfall:
                    break
                freed += self.soft[owner][loc]
                lost.setdefault(owner, []).append((loc, self.soft[owner][loc]))
            if freed < shortfall:
                return None
        return {o: sorted(items) for o, items in sorted(lost.items())}

    def reserve(self, order: str, lines: Lines) -> tuple[bool, set[Shortage], Preempted]:
        """Apply a new ReserveStock: (accepted, the shortages it reports, the soft holds it pre-empted)."""
        if order in self.released:
            return False, set(), {}
        short = self.shortages(order, lines)
        lost = self.preemption(short) if short else {}
        if lost is None:
            return False, short, {}
        for owner, items in lost.items():
            for loc, _ in items:
                del self.soft[owner][loc]
        self.holds[order] = dict(lines)
        return True, set(), lost

    def reservations(self) -> dict[str, tuple[str, str, int, str]]:
        """reservation id -> (kind, owner, quantity, location), order reservations only."""
        return {
            core.reservation_id(order, line_id): ("ORDER", order, qty, loc)
            for order, lines in self.holds.items()
            for line_id, (loc, qty) in lines.items()
        }


def order_reservations(ledger: core.SkuLedger) -> dict[str, tuple[str, str, int, str]]:
    return {
        rid: (r.kind, r.owner_id, r.quantity, r.location) for rid, r in ledger.reservations.items() if r.kind == "ORDER"
    }


def soft_holds(ledger: core.SkuLedger) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in ledger.reservations.values():
        if r.kind == "OPPORTUNITY":
            out.setdefault(r.owner_id, {})[r.location] = out.get(r.owner_id, {}).get(r.location, 0) + r.quantity
    return out


def reserve(order: str, lines: Lines, **overrides: Any) -> ReserveStock:
    return reserve_stock_factory(
        order_id=order,
        lines=[
            {"line_id": line_id, "sku": "SKU-1", "quantity": qty, "location": loc}
            for line_id, (loc, qty) in lines.items()
        ],
        **overrides,
    )


def as_lines(command: ReserveStock) -> Lines:
    return {ln.line_id: (ln.location, ln.quantity) for ln in command.lines}


def the_reply(result: core.LedgerResult) -> StockReserved:
    (reply,) = [r for r in result.replies if isinstance(r, StockReserved)]
    return reply


def preemptions(result: core.LedgerResult) -> list[OpportunityPreempted]:
    notices = [r for r in result.replies if not isinstance(r, StockReserved)]
    assert all(isinstance(n, OpportunityPreempted) for n in notices), notices
    return notices  # type: ignore[return-value]


def preempted(result: core.LedgerResult) -> Preempted:
    return {n.opportunity_id: sorted((i.location, i.quantity) for i in n.items) for n in preemptions(result)}


def reply_shortages(reply: StockReserved) -> set[Shortage]:
    return {(s.line_id, s.location, s.required, s.available, s.shortfall) for s in reply.shortages}


def seeded_ledger(seed: Seed) -> core.SkuLedger:
    reservations = {
        f"{owner}/{loc}": core.Reservation(
            reservation_id=f"{owner}/{loc}",
            kind="OPPORTUNITY",
            owner_id=owner,
            quantity=qty,
            location=loc,
            probability=seed.probability[owner],
        )
        for owner, held in seed.soft.items()
        for loc, qty in held.items()
        if qty > 0
    }
    return core.SkuLedger(tenant_id="acme", sku="SKU-1", on_hand=dict(seed.on_hand), reservations=reservations)


# ---- strategies ----------------------------------------------------------------------------------------


@st.composite
def seeds(draw: st.DrawFn, soft: bool = True) -> Seed:
    on_hand = {loc: draw(st.integers(0, 20)) for loc in LOCATIONS}
    held: dict[str, dict[str, int]] = {o: {} for o in OPPORTUNITIES}
    for loc in LOCATIONS:
        room = on_hand[loc]
        for owner in OPPORTUNITIES:
            qty = draw(st.integers(0, room)) if soft and draw(st.booleans()) else 0
            if qty:
                held[owner][loc] = qty
                room -= qty
    probability = {o: draw(st.sampled_from((0.3, 0.5, 0.9))) for o in OPPORTUNITIES}
    return Seed(on_hand, {o: h for o, h in held.items() if h}, probability)


location = st.sampled_from(LOCATIONS)
# Random line sets; with three locations, two lines of one order often share a location.
line_sets = st.dictionaries(st.sampled_from(LINE_IDS), st.tuples(location, st.integers(1, 12)), max_size=4)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.sampled_from(ORDERS), line_sets),
        st.tuples(st.just("reserve"), st.sampled_from(ORDERS), line_sets),
        st.tuples(st.just("release"), st.sampled_from(ORDERS)),
        st.tuples(st.just("resend"), st.integers(0, 50)),
        st.tuples(st.just("receive"), location, st.integers(1, 15)),
        st.tuples(st.just("count"), location, st.integers(0, 10)),  # on_hand := committed + extra
        st.tuples(st.just("adjust"), location, st.integers(-15, 15).filter(bool)),
    ),
    max_size=40,
)


# ---- properties ----------------------------------------------------------------------------------------


def check_against_model(ledger: core.SkuLedger, model: LedgerModel) -> None:
    assert order_reservations(ledger) == model.reservations()
    assert {loc: q for loc, q in ledger.on_hand.items() if q or loc in model.on_hand} == {
        loc: q for loc, q in model.on_hand.items() if q or loc in ledger.on_hand
    }
    assert soft_holds(ledger) == {o: h for o, h in model.soft.items() if h}
    for loc in LOCATIONS:
        firm = ledger.committed(loc, "ORDER")
        soft = ledger.committed(loc, "OPPORTUNITY")
        assert firm + soft <= ledger.on_hand.get(loc, 0), f"oversold at {loc}"
        assert firm + soft == model.committed(loc)


@settings(max_examples=150, deadline=None)
@given(seeds(), steps)
def test_every_reservation_is_accepted_exactly_when_it_fits_and_nothing_is_ever_oversold(
    seed: Seed, seq: list[tuple[Any, ...]]
) -> None:
    # "Fits" counts what the order already holds as free for it, and the soft holds a firm order may pre-empt.
    ledger = seeded_ledger(seed)
    model = LedgerModel.of(seed)
    sent: list[ReserveStock] = []
    told: dict[str, list[OpportunityPreempted]] = {}  # command id -> the pre-emptions it announced
    for step in seq:
        before = ledger
        match step:
            case ("reserve", order, lines):
                command = reserve(order, lines)
                sent.append(command)
                result = core.handle(ledger, command, T0)
                reply = the_reply(result)
                released = order in model.released
                accepted, expected_short, lost = model.reserve(order, lines)
                note(f"reserve {order} {lines} -> {reply.accepted} {reply.shortages} {reply.message}")
                assert not result.duplicate
                assert reply.accepted is accepted
                assert reply.request_id == command.command_id
                assert reply_shortages(reply) == expected_short
                assert preempted(result) == lost
                assert all(n.order_id == order for n in preemptions(result))
                told[command.command_id] = preemptions(result)
                if released:
                    assert "released" in reply.message
                if not accepted:
                    assert result.ledger.reservations == before.reservations, "a refusal drops no soft hold either"
                    assert result.ledger.on_hand == before.on_hand
            case ("release", order):
                result = core.handle(ledger, release_stock_factory(order_id=order), T0)
                assert result.replies == []
                model.holds.pop(order, None)
                model.released.add(order)
            case ("resend", k):
                if not sent:
                    continue
                command = sent[k % len(sent)]
                result = core.handle(ledger, command, T0)
                reply = the_reply(result)
                # Answered as the ledger stands: accepted iff the order holds exactly these lines, and never
                # once the order was released.
                expected = command.order_id not in model.released and (
                    model.holds.get(command.order_id, {}) == as_lines(command)
                )
                assert result.duplicate
                assert result.ledger == before
                assert reply.accepted is expected
                assert reply.command_id == event_id("StockReserved", command.command_id, expected)
                if command.order_id in model.released:
                    assert "released" in reply.message
                else:
                    assert preemptions(result) == told[command.command_id], "pre-emptions are told again"
            case ("receive", loc, qty):
                result = core.handle(ledger, stock_received_factory(location=loc, quantity=qty), T0)
                model.on_hand[loc] = model.on_hand.get(loc, 0) + qty
            case ("count", loc, extra):
                counted = model.committed(loc) + extra
                result = core.handle(ledger, stock_counted_factory(location=loc, quantity=counted), T0)
                assert result.replies == [], "a count at or above what is committed drops nothing"
                model.on_hand[loc] = counted
            case ("adjust", loc, delta):
                movement = stock_adjusted_factory(location=loc, delta=delta)
                if model.on_hand.get(loc, 0) + delta < model.committed(loc):
                    with pytest.raises(core.BusinessRuleViolation):
                        core.handle(ledger, movement, T0)
                    continue
                result = core.handle(ledger, movement, T0)
                model.on_hand[loc] = model.on_hand.get(loc, 0) + delta
            case _:  # pragma: no cover
                raise AssertionError(step)
        ledger = result.ledger
        check_against_model(ledger, model)
        for availability in result.outputs:
            for row in availability.locations:  # type: ignore[attr-defined]
                assert row.reserved + row.soft_allocated <= row.on_hand
                assert row.available == row.on_hand - row.reserved - row.soft_allocated


@st.composite
def state_then_fresh_order(draw: st.DrawFn) -> tuple[core.SkuLedger, Lines]:
    """A ledger after random traffic, and lines for a new order that fit what is free."""
    ledger = seeded_ledger(draw(seeds()))
    for step in draw(steps):
        match step:
            case ("reserve", order, lines):
                command = reserve(order, lines)
            case ("release", order):
                command = release_stock_factory(order_id=order)
            case ("receive", loc, qty):
                command = stock_received_factory(location=loc, quantity=qty)
            case ("adjust", loc, delta):
                command = stock_adjusted_factory(location=loc, delta=delta)
            case _:
                continue
        try:
            ledger = core.handle(ledger, command, T0).ledger
        except core.BusinessRuleViolation:
            pass
    free = {loc: ledger.available(loc) for loc in LOCATIONS}
    lines: Lines = {}
    for line_id in draw(st.lists(st.sampled_from(LINE_IDS), unique=True, min_size=1)):
        loc = draw(location)
        if free[loc] > 0:
            qty = draw(st.integers(1, free[loc]))
            free[loc] -= qty
            lines[line_id] = (loc, qty)
    return ledger, lines


@settings(max_examples=100, deadline=None)
@given(state_then_fresh_order())
def test_reserving_then_releasing_an_order_restores_reservations_and_availability_exactly(
    case: tuple[core.SkuLedger, Lines],
) -> None:
    ledger, lines = case
    reserved = core.handle(ledger, reserve("ORD-NEW", lines), T0)
    assert the_reply(reserved).accepted
    for loc, qty in {loc: sum(q for lc, q in lines.values() if lc == loc) for loc, _ in lines.values()}.items():
        assert reserved.ledger.available(loc) == ledger.available(loc) - qty
    released = core.handle(reserved.ledger, release_stock_factory(order_id="ORD-NEW"), T0)
    assert released.ledger.reservations == ledger.reservations
    assert released.ledger.on_hand == ledger.on_hand
    for loc in LOCATIONS:
        assert released.ledger.available(loc) == ledger.available(loc)
    assert core.availability(released.ledger).locations == core.availability(ledger).locations


# ---- examples ------------------------------------------------------------------------------------------


def stocked(**on_hand: int) -> core.SkuLedger:
    return seeded_ledger(Seed(on_hand, {}, {}))


def test_a_resent_accepted_reservation_is_a_duplicate_that_answers_accepted_again_and_changes_nothing() -> None:
    command = reserve("ORD-1", {"L1": ("WH1", 3), "L2": ("WH1", 2)})
    first = core.handle(stocked(WH1=5), command, T0)
    again = core.handle(first.ledger, command, T0)
    assert the_reply(first).accepted and not first.duplicate
    assert again.duplicate
    assert the_reply(again).accepted
    assert the_reply(again).command_id == the_reply(first).command_id
    assert again.ledger == first.ledger


def test_a_resent_refused_reservation_is_a_duplicate_that_answers_refused_again_and_changes_nothing() -> None:
    command = reserve("ORD-1", {"L1": ("WH1", 3), "L2": ("WH1", 3)})
    first = core.handle(stocked(WH1=5), command, T0)
    again = core.handle(first.ledger, command, T0)
    assert not the_reply(first).accepted
    assert reply_shortages(the_reply(first)) == {("L1,L2", "WH1", 6, 5, 1)}
    assert again.duplicate
    assert not the_reply(again).accepted
    assert the_reply(again).command_id == the_reply(first).command_id
    assert again.ledger == first.ledger


NO_STOCK = Seed({loc: 0 for loc in LOCATIONS}, {}, {})


@settings(max_examples=100, deadline=None)
@given(seeds(), steps, st.sampled_from(ORDERS), line_sets)
# An empty line set refused because the order was released was once answered accepted when re-sent.
@example(seed=NO_STOCK, seq=[("release", "ORD-A")], order="ORD-A", lines={})
def test_a_reservation_resent_at_once_answers_as_it_did_the_first_time(
    seed: Seed, seq: list[tuple[Any, ...]], order: str, lines: Lines
) -> None:
    ledger = seeded_ledger(seed)
    for step in seq:
        match step:
            case ("reserve", o, ls):
                command: Any = reserve(o, ls)
            case ("release", o):
                command = release_stock_factory(order_id=o)
            case ("receive", loc, qty):
                command = stock_received_factory(location=loc, quantity=qty)
            case _:
                continue
        ledger = core.handle(ledger, command, T0).ledger
    request = reserve(order, lines)
    first = core.handle(ledger, request, T0)
    again = core.handle(first.ledger, request, T0)
    note(f"first: {the_reply(first)!r}")
    assert again.duplicate
    assert again.ledger == first.ledger
    assert the_reply(again).accepted is the_reply(first).accepted
    assert the_reply(again).command_id == the_reply(first).command_id
    assert preemptions(again) == preemptions(first)


def test_a_resent_reservation_after_a_release_stays_refused() -> None:
    command = reserve("ORD-1", {"L1": ("WH1", 2)})
    held = core.handle(stocked(WH1=5), command, T0).ledger
    released = core.handle(held, release_stock_factory(order_id="ORD-1"), T0).ledger
    again = core.handle(released, command, T0)
    assert again.duplicate
    assert not the_reply(again).accepted
    assert again.ledger == released
    assert released.available("WH1") == 5


def test_a_release_before_any_reservation_makes_a_later_reservation_of_that_order_refused() -> None:
    ledger = stocked(WH1=10)
    released = core.handle(ledger, release_stock_factory(order_id="ORD-1"), T0)
    assert released.ledger.has_processed(core.released_marker("ORD-1"))
    late = core.handle(released.ledger, reserve("ORD-1", {"L1": ("WH1", 1)}), T0)
    assert not the_reply(late).accepted
    assert "released" in the_reply(late).message
    assert late.ledger.reservations == {}
    other = core.handle(late.ledger, reserve("ORD-2", {"L1": ("WH1", 10)}), T0)
    assert the_reply(other).accepted, "the release marks only its own order"


def test_a_repeated_release_is_a_duplicate() -> None:
    held = core.handle(stocked(WH1=10), reserve("ORD-1", {"L1": ("WH1", 4)}), T0).ledger
    once = core.handle(held, release_stock_factory(order_id="ORD-1"), T0)
    twice = core.handle(once.ledger, release_stock_factory(order_id="ORD-1"), T0)
    assert once.ledger.reservations == {}
    assert twice.duplicate
    assert twice.ledger == once.ledger


def test_a_reservation_with_another_line_set_replaces_what_the_order_held() -> None:
    ledger = stocked(WH1=10, WH2=4)
    first = core.handle(ledger, reserve("ORD-1", {"L1": ("WH1", 6), "L2": ("WH2", 4)}), T0).ledger
    # 6 + 4 more at WH1 only fits because the order's own 6 count as free for it; WH2 is given back.
    second = core.handle(first, reserve("ORD-1", {"L1": ("WH1", 6), "L3": ("WH1", 4)}), T0)
    assert the_reply(second).accepted
    assert order_reservations(second.ledger) == {
        core.reservation_id("ORD-1", "L1"): ("ORDER", "ORD-1", 6, "WH1"),
        core.reservation_id("ORD-1", "L3"): ("ORDER", "ORD-1", 4, "WH1"),
    }
    assert (second.ledger.available("WH1"), second.ledger.available("WH2")) == (0, 4)


def test_a_replacement_that_does_not_fit_keeps_what_the_order_held() -> None:
    ledger = stocked(WH1=10)
    first = core.handle(ledger, reserve("ORD-1", {"L1": ("WH1", 6)}), T0).ledger
    second = core.handle(first, reserve("ORD-1", {"L1": ("WH1", 11)}), T0)
    assert not the_reply(second).accepted
    assert reply_shortages(the_reply(second)) == {("L1", "WH1", 11, 10, 1)}
    assert second.ledger.reservations == first.reservations


def test_an_empty_line_set_gives_back_everything_the_order_held_on_the_sku() -> None:
    ledger = stocked(WH1=10)
    held = core.handle(ledger, reserve("ORD-1", {"L1": ("WH1", 6)}), T0).ledger
    emptied = core.handle(held, reserve("ORD-1", {}), T0)
    assert the_reply(emptied).accepted
    assert emptied.ledger.reservations == {}
    assert emptied.ledger.available("WH1") == 10


def soft_seed(on_hand: int, **held: tuple[int, float]) -> Seed:
    """WH1 with `on_hand` units and soft holds: opportunity -> (quantity, probability)."""
    return Seed({"WH1": on_hand}, {o: {"WH1": q} for o, (q, _) in held.items()}, {o: p for o, (_, p) in held.items()})


def test_soft_holds_count_against_what_is_available_to_promise() -> None:
    ledger = seeded_ledger(soft_seed(10, **{"OPP-1": (7, 0.5)}))
    assert ledger.available("WH1") == 3
    (row,) = core.availability(ledger).locations
    assert (row.on_hand, row.reserved, row.soft_allocated, row.available) == (10, 0, 7, 3)


def test_a_firm_order_short_of_stock_pre_empts_whole_soft_holds_lowest_probability_first_and_says_so() -> None:
    ledger = seeded_ledger(soft_seed(10, **{"OPP-likely": (3, 0.9), "OPP-maybe": (3, 0.3), "OPP-fair": (3, 0.5)}))
    result = core.handle(ledger, reserve("ORD-1", {"L1": ("WH1", 5)}), T0)  # 1 free: 4 short
    assert the_reply(result).accepted
    assert preempted(result) == {"OPP-maybe": [("WH1", 3)], "OPP-fair": [("WH1", 3)]}
    assert soft_holds(result.ledger) == {"OPP-likely": {"WH1": 3}}
    assert result.ledger.available("WH1") == 2, "whole holds go: 6 freed for a shortfall of 4"


def test_an_order_that_would_not_fit_even_without_the_soft_holds_is_refused_and_drops_none() -> None:
    ledger = seeded_ledger(soft_seed(10, **{"OPP-1": (4, 0.3)}))
    result = core.handle(ledger, reserve("ORD-1", {"L1": ("WH1", 11)}), T0)
    assert not the_reply(result).accepted
    assert reply_shortages(the_reply(result)) == {("L1", "WH1", 11, 6, 5)}
    assert preemptions(result) == []
    assert result.ledger.reservations == ledger.reservations
