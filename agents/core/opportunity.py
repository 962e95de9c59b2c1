"""The opportunity saga (one per `tenant|opportunity`): soft holds on stock for likely sales opportunities.

An OpportunityUpserted with probability >= 0.3 and a stage other than CLOSED_LOST soft-holds its items on
the SKU ledgers, all or none: one SoftReserve per SKU (all locations of that SKU or none), and if any SKU
refuses, every SKU is released again and OpportunityInventoryRejected names the shortfall. Otherwise the
opportunity holds nothing and is rejected (LOW_PROBABILITY, CLOSED_LOST), or, if it held something, its
holds are released (BELOW_THRESHOLD, LOST). A later upsert re-evaluates: only the SKUs whose holds must
change are asked again (all of them when the probability or the close date changed, so that the ledgers
pre-empt by the current probability).

Holds expire at the end of expected_close_date (a date is the end of that day, UTC; a timestamp is taken as
is), decided by timer ticks on event time (`expire`). Orders naming the opportunity convert its holds
(OpportunityConverted from the ledger: the order took them over, released as CONVERTED; what such orders
hold is demand served, never held softly again by this opportunity); short firm orders pre-empt them (OpportunityPreempted: the whole hold at that
location is gone, reported as OpportunityInventoryPreempted; the other holds stay, and the next upsert tries
again).

`handle(saga, message, now)` returns the next saga, the outputs to publish and the commands to send.
Upserts arriving while a round of SoftReserves is in flight wait (`queued`) and are applied when it settles;
an upsert older (occurred_at) than the one applied is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field

from agents.core.commands import (
    Command,
    ExpiryTick,
    LineShortage,
    OpportunityConverted,
    OpportunityPreempted,
    SoftLine,
    SoftRelease,
    SoftReserve,
    SoftReserved,
)
from agents.core.events import (
    Model,
    OpportunityInventoryAllocated,
    OpportunityInventoryPreempted,
    OpportunityInventoryRejected,
    OpportunityInventoryReleased,
    OpportunityItem,
    OpportunityLine,
    OpportunityReleaseReason,
    OpportunityUpserted,
    Output,
    Stage,
    UnavailableItem,
)
from agents.core.ids import event_id

THRESHOLD = 0.3
DEFAULT_DEDUP_WINDOW = 128
NOTICES_KEPT = 32

OpportunityStatus = Literal[
    "NEW",  # never upserted
    "PENDING",  # SoftReserves in flight
    "ALLOCATED",  # every item held (some may since have been converted or pre-empted: see holds)
    "REJECTED",  # holds nothing: too unlikely, lost, or short
    "RELEASED",  # held, then released because it became lost or unlikely
    "EXPIRED",  # held until the end of its expected close date
    "CONVERTED",  # orders took over every hold
    "PREEMPTED",  # firm orders or stock counts took every hold
]
OpportunityOutcome = Annotated[
    OpportunityInventoryAllocated
    | OpportunityInventoryReleased
    | OpportunityInventoryRejected
    | OpportunityInventoryPreempted,
    Field(discriminator="event_type"),
]
OpportunityMessage = OpportunityUpserted | SoftReserved | OpportunityConverted | OpportunityPreempted | ExpiryTick
Holds = dict[str, tuple[SoftLine, ...]]  # sku -> one line per location


class SoftReply(Model):
    accepted: bool
    held: tuple[SoftLine, ...] = ()
    shortages: tuple[LineShortage, ...] = ()


class Round(Model):
    """One round of SoftReserves, for the upsert `causation_id`."""

    causation_id: str
    requests: dict[str, str]  # sku -> SoftReserve command id
    lines: Holds  # sku -> what was asked (to re-send it)
    replies: dict[str, SoftReply] = Field(default_factory=dict)
    before: Holds = Field(default_factory=dict)  # what was held when the round began


class OpportunitySaga(Model):
    tenant_id: str
    opportunity_id: str
    known: bool = False
    event_id: str = ""  # the upsert applied last
    occurred_at: datetime | None = None
    customer_id: str = ""
    sales_rep_id: str = ""
    stage: Stage = "LEAD"
    probability: float = 0.0
    expires_at: datetime | None = None  # the end of expected_close_date
    items: tuple[OpportunityItem, ...] = ()
    status: OpportunityStatus = "NEW"
    holds: Holds = Field(default_factory=dict)  # what the ledgers hold for it, as they last said
    # order id -> "sku|location" -> units that order (naming this opportunity) holds: demand it serves.
    ordered: dict[str, dict[str, int]] = Field(default_factory=dict)
    round: Round | None = None
    queued: OpportunityUpserted | None = None  # the latest upsert that arrived during a round
    released: tuple[str, ...] = ()  # SKUs the latest release decision released (re-sent on redelivery)
    release_cause: str = ""
    last_events: tuple[OpportunityOutcome, ...] = ()  # the outputs of the latest decision
    told: tuple[OpportunityOutcome, ...] = ()  # what recent ledger notices led to (re-sent on redelivery)
    processed: tuple[str, ...] = ()
    version: int = 0

    def held_quantity(self) -> int:
        return sum(ln.quantity for lines in self.holds.values() for ln in lines)

    def served(self) -> dict[str, int]:
        """ "sku|location" -> units that orders naming the opportunity hold there."""
        out: dict[str, int] = {}
        for lines in self.ordered.values():
            for key, quantity in lines.items():
                out[key] = out.get(key, 0) + quantity
        return out


@dataclass(frozen=True)
class OpportunityResult:
    saga: OpportunitySaga
    outputs: list[Output] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    duplicate: bool = False
    note: str = ""


def new_opportunity(tenant_id: str, opportunity_id: str) -> OpportunitySaga:
    return OpportunitySaga(tenant_id=tenant_id, opportunity_id=opportunity_id)


def close_deadline(expected_close: datetime | date) -> datetime:
    """When holds expire: a timestamp as given, a date at the end of that day (UTC)."""
    if isinstance(expected_close, datetime):
        return expected_close.astimezone(UTC)
    return datetime.combine(expected_close + timedelta(days=1), time.min, tzinfo=UTC)


def eligible(stage: str, probability: float) -> bool:
    return stage != "CLOSED_LOST" and probability >= THRESHOLD


def _bump(saga: OpportunitySaga, seen: str | None = None, **changes: object) -> OpportunitySaga:
    processed = (*saga.processed, seen)[-DEFAULT_DEDUP_WINDOW:] if seen else saga.processed
    return saga.model_copy(update={**changes, "processed": processed, "version": saga.version + 1})


def handle(saga: OpportunitySaga, message: OpportunityMessage, now: datetime) -> OpportunityResult:
    match message:
        case OpportunityUpserted():
            return _upsert(saga, message, now)
        case SoftReserved():
            return _reserved(saga, message, now)
        case OpportunityConverted():
            return _converted(saga, message, now)
        case OpportunityPreempted():
            return _preempted(saga, message, now)
        case ExpiryTick():
            return expire(saga, message.issued_at, message.command_id)
    raise TypeError(f"unexpected message {type(message).__name__}")  # pragma: no cover


# ---- what to hold --------------------------------------------------------------------------------------


def wanted(saga: OpportunitySaga) -> Holds:
    """Per SKU, what the opportunity should hold at each location: its items, less what orders naming it
    hold there."""
    totals: dict[tuple[str, str], int] = {}
    for item in saga.items:
        totals[(item.sku, item.location)] = totals.get((item.sku, item.location), 0) + item.quantity
    served = saga.served()
    out: dict[str, list[SoftLine]] = {}
    for (sku, location), quantity in sorted(totals.items()):
        left = quantity - served.get(f"{sku}|{location}", 0)
        if left > 0:
            out.setdefault(sku, []).append(SoftLine(location=location, quantity=left))
    return {sku: tuple(lines) for sku, lines in out.items()}


def _known_converted(saga: OpportunitySaga, sku: str) -> tuple[SoftLine, ...]:
    return tuple(
        SoftLine(location=key.split("|", 1)[1], quantity=q)
        for key, q in sorted(saga.served().items())
        if key.split("|", 1)[0] == sku
    )


def _soft_reserve(
    saga: OpportunitySaga, sku: str, lines: tuple[SoftLine, ...], causation: str, now: datetime
) -> SoftReserve:
    return SoftReserve(
        command_id=event_id("SoftReserve", saga.tenant_id, saga.opportunity_id, sku, causation),
        tenant_id=saga.tenant_id,
        issued_at=now,
        opportunity_id=saga.opportunity_id,
        sku=sku,
        lines=lines,
        converted=_known_converted(saga, sku),
        probability=saga.probability,
        expires_at=saga.expires_at,
        customer_id=saga.customer_id,
    )


def _releases(saga: OpportunitySaga, skus: set[str], causation: str, now: datetime) -> list[Command]:
    return [
        SoftRelease(
            command_id=event_id("SoftRelease", saga.tenant_id, saga.opportunity_id, sku, causation),
            tenant_id=saga.tenant_id,
            issued_at=now,
            opportunity_id=saga.opportunity_id,
            sku=sku,
            reason=causation,
        )
        for sku in sorted(skus)
    ]


# ---- outputs -------------------------------------------------------------------------------------------


def _unit_price(saga: OpportunitySaga, sku: str, location: str) -> Decimal:
    return next((i.unit_price for i in saga.items if i.sku == sku and i.location == location), Decimal(0))


def _lines(saga: OpportunitySaga, holds: Holds) -> tuple[OpportunityLine, ...]:
    return tuple(
        OpportunityLine(
            sku=sku, location=ln.location, quantity=ln.quantity, unit_price=_unit_price(saga, sku, ln.location)
        )
        for sku in sorted(holds)
        for ln in holds[sku]
    )


def _asked(saga: OpportunitySaga) -> tuple[OpportunityLine, ...]:
    return tuple(
        OpportunityLine(sku=i.sku, location=i.location, quantity=i.quantity, unit_price=i.unit_price)
        for i in saga.items
    )


def _common(saga: OpportunitySaga, now: datetime, causation: str) -> dict[str, object]:
    return {
        "tenant_id": saga.tenant_id,
        "occurred_at": now,
        "causation_id": causation,
        "opportunity_id": saga.opportunity_id,
        "customer_id": saga.customer_id,
        "stage": saga.stage,
        "probability": saga.probability,
    }


def _allocated(saga: OpportunitySaga, now: datetime) -> OpportunityInventoryAllocated:
    assert saga.expires_at is not None
    return OpportunityInventoryAllocated(
        event_id=event_id("OpportunityInventoryAllocated", saga.tenant_id, saga.opportunity_id, saga.event_id),
        **_common(saga, now, saga.event_id),
        items=_lines(saga, saga.holds),
        reserved_until=saga.expires_at,
    )


def _released(
    saga: OpportunitySaga,
    now: datetime,
    reason: OpportunityReleaseReason,
    causation: str,
    items: tuple[OpportunityLine, ...],
    message: str = "",
    order_id: str | None = None,
) -> OpportunityInventoryReleased:
    return OpportunityInventoryReleased(
        event_id=event_id("OpportunityInventoryReleased", saga.tenant_id, saga.opportunity_id, reason, causation),
        **_common(saga, now, causation),
        items=items,
        reason=reason,
        message=message,
        order_id=order_id,
    )


def _rejected(
    saga: OpportunitySaga,
    now: datetime,
    reason: Literal["LOW_PROBABILITY", "CLOSED_LOST", "INSUFFICIENT_INVENTORY"],
    message: str,
    unavailable: tuple[UnavailableItem, ...] = (),
) -> OpportunityInventoryRejected:
    return OpportunityInventoryRejected(
        event_id=event_id("OpportunityInventoryRejected", saga.tenant_id, saga.opportunity_id, saga.event_id),
        **_common(saga, now, saga.event_id),
        items=_asked(saga),
        reason=reason,
        message=message,
        unavailable_items=unavailable,
    )


# ---- redelivery ----------------------------------------------------------------------------------------


def resend(saga: OpportunitySaga, now: datetime, note: str) -> OpportunityResult:
    """A redelivered or stale message: change nothing, but publish again the latest decision's events and
    send again what the state implies (the first attempt's sends may have been lost in a crash), with
    their original ids."""
    commands: list[Command] = []
    if saga.round is not None:
        waiting = set(saga.round.requests) - set(saga.round.replies)
        commands.extend(
            _soft_reserve(saga, sku, saga.round.lines.get(sku, ()), saga.round.causation_id, now)
            for sku in sorted(waiting)
        )
    elif saga.status in ("REJECTED", "RELEASED", "EXPIRED") and saga.released:
        commands.extend(_releases(saga, set(saga.released), saga.release_cause, now))
    return OpportunityResult(saga, list(saga.last_events), commands, duplicate=True, note=note)


# ---- upserts -------------------------------------------------------------------------------------------


def _upsert(saga: OpportunitySaga, upsert: OpportunityUpserted, now: datetime) -> OpportunityResult:
    seen = f"event:{upsert.event_id}"
    if seen in saga.processed:
        return resend(saga, now, "duplicate OpportunityUpserted")
    latest = saga.queued.occurred_at if saga.queued is not None else saga.occurred_at
    if latest is not None and upsert.occurred_at < latest:
        note = f"upsert {upsert.event_id} is older than the one applied or waiting: ignored"
        return OpportunityResult(_bump(saga, seen), note=note)
    if saga.round is not None:
        return OpportunityResult(_bump(saga, seen, queued=upsert), note="SoftReserves in flight: upsert queued")
    return _apply(_bump(saga, seen), upsert, now)


def _apply(saga: OpportunitySaga, upsert: OpportunityUpserted, now: datetime) -> OpportunityResult:
    nxt = saga.model_copy(
        update={
            "known": True,
            "event_id": upsert.event_id,
            "occurred_at": upsert.occurred_at,
            "customer_id": upsert.customer_id,
            "sales_rep_id": upsert.sales_rep_id,
            "stage": upsert.stage,
            "probability": upsert.probability,
            "expires_at": close_deadline(upsert.expected_close_date),
            "items": upsert.items,
            "queued": None,
        }
    )
    return _evaluate(nxt, saga, now)


def _evaluate(saga: OpportunitySaga, previous: OpportunitySaga, now: datetime) -> OpportunityResult:
    causation = saga.event_id
    if not eligible(saga.stage, saga.probability):
        lost = saga.stage == "CLOSED_LOST"
        out: Output
        if saga.holds:
            why = "the opportunity is CLOSED_LOST" if lost else f"probability {saga.probability} is below {THRESHOLD}"
            out = _released(saga, now, "LOST" if lost else "BELOW_THRESHOLD", causation, _lines(saga, saga.holds), why)
            status: OpportunityStatus = "RELEASED"
        else:
            why = (
                "the opportunity is CLOSED_LOST"
                if lost
                else f"probability {saga.probability} is below the soft-hold threshold {THRESHOLD}"
            )
            out = _rejected(saga, now, "CLOSED_LOST" if lost else "LOW_PROBABILITY", why)
            status = "REJECTED"
        skus = set(saga.holds)
        done = _bump(
            saga,
            status=status,
            holds={},
            released=tuple(sorted(skus)),
            release_cause=causation,
            last_events=(out,),
        )
        return OpportunityResult(done, [out], _releases(saga, skus, causation, now))
    target = wanted(saga)
    refresh = previous.known and (previous.probability != saga.probability or previous.expires_at != saga.expires_at)
    changed = sorted(
        sku
        for sku in set(target) | set(saga.holds)
        if target.get(sku, ()) != saga.holds.get(sku, ()) or (refresh and sku in target)
    )
    if not changed:
        return _settle(_bump(saga, released=()), None, now)
    requests = [_soft_reserve(saga, sku, target.get(sku, ()), causation, now) for sku in changed]
    round_ = Round(
        causation_id=causation,
        requests={r.sku: r.command_id for r in requests},
        lines={sku: target.get(sku, ()) for sku in changed},
        before=dict(saga.holds),
    )
    return OpportunityResult(_bump(saga, status="PENDING", round=round_, released=()), [], list(requests))


# ---- replies from the ledgers --------------------------------------------------------------------------


def _reserved(saga: OpportunitySaga, reply: SoftReserved, now: datetime) -> OpportunityResult:
    round_ = saga.round
    if round_ is None or round_.requests.get(reply.sku) != reply.request_id or reply.sku in round_.replies:
        return resend(saga, now, "stale or repeated SoftReserved")
    replies = {
        **round_.replies,
        reply.sku: SoftReply(accepted=reply.accepted, held=reply.held, shortages=reply.shortages),
    }
    holds = dict(saga.holds)
    if reply.accepted:
        holds.pop(reply.sku, None)
        if reply.held:
            holds[reply.sku] = reply.held
    round_ = round_.model_copy(update={"replies": replies})
    if set(replies) != set(round_.requests):
        return OpportunityResult(_bump(saga, holds=holds, round=round_))
    return _settle(_bump(saga, holds=holds, round=None), round_, now)


def _settle(saga: OpportunitySaga, round_: Round | None, now: datetime) -> OpportunityResult:
    """Every SKU answered (or none needed asking): allocated, or all-or-none undone."""
    refused = {sku: r for sku, r in (round_.replies if round_ else {}).items() if not r.accepted}
    if not refused:
        out = _allocated(saga, now)
        return _then_queued(OpportunityResult(_bump(saga, status="ALLOCATED", last_events=(out,)), [out]), now)
    assert round_ is not None
    skus = set(saga.holds) | set(round_.requests)
    unavailable = tuple(
        UnavailableItem(
            sku=s.sku, location=s.location, required=s.required, available=s.available, shortfall=s.shortfall
        )
        for sku in sorted(refused)
        for s in refused[sku].shortages
    )
    message = f"{len(unavailable)} item(s) short: " + ", ".join(
        f"{i.sku}@{i.location} needs {i.required}, {i.available} available" for i in unavailable
    )
    outputs: list[Output] = []
    if round_.before:  # it held something before this upsert: that is given back too (all or none)
        why = "the opportunity changed and its items could not all be held: " + message
        outputs.append(_released(saga, now, "CHANGED", round_.causation_id, _lines(saga, round_.before), why))
    outputs.append(_rejected(saga, now, "INSUFFICIENT_INVENTORY", message, unavailable))
    done = _bump(
        saga,
        status="REJECTED",
        holds={},
        released=tuple(sorted(skus)),
        release_cause=round_.causation_id,
        last_events=tuple(outputs),
    )
    return _then_queued(OpportunityResult(done, outputs, _releases(saga, skus, round_.causation_id, now)), now)


def _then_queued(result: OpportunityResult, now: datetime) -> OpportunityResult:
    """Apply the upsert that waited for the round, if one did."""
    queued = result.saga.queued
    if queued is None or result.saga.round is not None:
        return result
    nxt = _apply(result.saga, queued, now)
    return OpportunityResult(
        nxt.saga, [*result.outputs, *nxt.outputs], [*result.commands, *nxt.commands], note=nxt.note
    )


# ---- conversion and pre-emption ------------------------------------------------------------------------


def _without(holds: Holds, sku: str, taken: dict[str, int], whole: bool) -> Holds:
    """`holds` less `taken` (location -> units) on `sku`; `whole` drops those locations entirely."""
    left = tuple(
        ln.model_copy(update={"quantity": ln.quantity - taken.get(ln.location, 0)})
        for ln in holds.get(sku, ())
        if not (whole and ln.location in taken) and ln.quantity - taken.get(ln.location, 0) > 0
    )
    out = {k: v for k, v in holds.items() if k != sku}
    if left:
        out[sku] = left
    return out


def _notice_lines(saga: OpportunitySaga, sku: str, items: tuple[SoftLine, ...]) -> tuple[OpportunityLine, ...]:
    return _lines(saga, {sku: items})


def _converted(saga: OpportunitySaga, notice: OpportunityConverted, now: datetime) -> OpportunityResult:
    """An order naming the opportunity reserved on a SKU: what it holds is served demand, and what it took
    over from the soft holds is released as CONVERTED."""
    seen = f"cmd:{notice.command_id}"
    if seen in saga.processed:
        return OpportunityResult(saga, _told(saga, notice), duplicate=True, note="repeated OpportunityConverted")
    taken_from_holds = _held_part(saga, notice.sku, notice.items)
    out = _released(
        saga,
        now,
        "CONVERTED",
        notice.command_id,
        _notice_lines(saga, notice.sku, taken_from_holds),
        f"order {notice.order_id} took over the soft hold",
        order_id=notice.order_id,
    )
    outputs: list[Output] = [out] if taken_from_holds else []
    mine = {k: v for k, v in saga.ordered.get(notice.order_id, {}).items() if k.split("|", 1)[0] != notice.sku}
    mine.update({f"{notice.sku}|{ln.location}": ln.quantity for ln in notice.ordered})
    ordered = {**saga.ordered, notice.order_id: mine}
    taken = {ln.location: ln.quantity for ln in notice.items}
    holds = _without(saga.holds, notice.sku, taken, whole=False)
    status = "CONVERTED" if notice.items and not holds and saga.status == "ALLOCATED" else saga.status
    nxt = _bump(saga, seen, holds=holds, ordered=ordered, status=status, told=_keep_told(saga, outputs))
    return OpportunityResult(nxt, outputs)


def _preempted(saga: OpportunitySaga, notice: OpportunityPreempted, now: datetime) -> OpportunityResult:
    """A short firm order (or a physical count) dropped whole soft holds of the opportunity on a SKU."""
    seen = f"cmd:{notice.command_id}"
    if seen in saga.processed:
        return OpportunityResult(saga, _told(saga, notice), duplicate=True, note="repeated OpportunityPreempted")
    lost = _held_part(saga, notice.sku, notice.items)
    lines = _notice_lines(saga, notice.sku, lost)
    out: Output
    if notice.order_id:
        out = OpportunityInventoryPreempted(
            event_id=event_id("OpportunityInventoryPreempted", saga.tenant_id, saga.opportunity_id, notice.command_id),
            **_common(saga, now, notice.command_id),
            items=lines,
            order_id=notice.order_id,
            message=notice.message,
        )
    else:
        out = _released(saga, now, "STOCK_LOST", notice.command_id, lines, notice.message)
    outputs: list[Output] = [out] if lost else []
    taken = {ln.location: ln.quantity for ln in notice.items}
    holds = _without(saga.holds, notice.sku, taken, whole=True)
    status = "PREEMPTED" if not holds and saga.status == "ALLOCATED" else saga.status
    return OpportunityResult(_bump(saga, seen, holds=holds, status=status, told=_keep_told(saga, outputs)), outputs)


def _held_part(saga: OpportunitySaga, sku: str, items: tuple[SoftLine, ...]) -> tuple[SoftLine, ...]:
    """What of `items` (taken from the opportunity's holds on `sku` by a ledger) the opportunity still held.
    A ledger may take a hold that the opportunity has already given up (its round was refused on another
    SKU and the SoftRelease is on its way): that loss is not the opportunity's, and telling it would take
    the same units away twice from anyone adding up its events."""
    held = {ln.location: ln.quantity for ln in saga.holds.get(sku, ())}
    return tuple(
        SoftLine(location=ln.location, quantity=min(ln.quantity, held[ln.location]))
        for ln in items
        if held.get(ln.location, 0) > 0 and ln.quantity > 0
    )


def _keep_told(saga: OpportunitySaga, outputs: list[Output]) -> tuple[OpportunityOutcome, ...]:
    told = [o for o in outputs if isinstance(o, OpportunityInventoryReleased | OpportunityInventoryPreempted)]
    return (*saga.told, *told)[-NOTICES_KEPT:]


def _told(saga: OpportunitySaga, notice: OpportunityConverted | OpportunityPreempted) -> list[Output]:
    """What a ledger's notice led to, published again when the notice is redelivered."""
    return [o for o in saga.told if o.causation_id == notice.command_id]


# ---- expiry --------------------------------------------------------------------------------------------


def expire(saga: OpportunitySaga, now: datetime, causation: str) -> OpportunityResult:
    """Release the opportunity's holds if its expected close date has passed by `now` (event time of the
    tick). While SoftReserves are in flight it waits for them (the upsert gets its answer first); the
    expiry index keeps it for the next tick."""
    if saga.round is not None:
        return OpportunityResult(saga, duplicate=True, note="not due: SoftReserves in flight")
    if saga.expires_at is None or saga.expires_at > now or not saga.holds:
        return OpportunityResult(saga, duplicate=True, note="not due")
    deadline = saga.expires_at.isoformat()
    out = _released(saga, now, "EXPIRED", causation, _lines(saga, saga.holds), f"expected close {deadline} passed")
    done = _bump(
        saga,
        status="EXPIRED",
        holds={},
        released=tuple(sorted(saga.holds)),
        release_cause=causation,
        last_events=(out,),
    )
    return OpportunityResult(done, [out], _releases(saga, set(saga.holds), causation, now))
