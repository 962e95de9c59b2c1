"""An independent checker of DESIGN.md section 4 that reads only the output topics (and the inputs the
test produced): never oversold, one placement outcome per order, reservations reconcile with orders.

`check` judges one tenant's orders; `audit` judges a whole run of the fault suite from the records it
produced (tests/support/load.py): it also reconciles soft holds with opportunities and on-hand stock with
movements and shipments, and accounts for every input record in an output or the DLQ."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

PLACEMENT = {"OrderInventoryAllocated", "OrderAllocationRejected", "OrderInventoryReleased", "OrderBackordered"}


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)  # order id -> placement outcome type

    def assert_ok(self) -> None:
        assert not self.problems, "\n".join(self.problems[:20])


def placement_outcomes(allocations: list[dict[str, Any]], tenant: str) -> dict[str, list[dict[str, Any]]]:
    """Distinct placement outcomes per order (a re-emitted duplicate has the same event_id)."""
    by_order: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for record in allocations:
        if record["tenant_id"] != tenant or record["event_type"] not in PLACEMENT:
            continue
        # A release after an allocation is the order's later life, not its placement outcome.
        by_order[record["order_id"]][record["event_id"]] = record
    result = {}
    for order_id, records in by_order.items():
        first, *later = sorted(records.values(), key=lambda r: (r["_partition"], r["_offset"]))
        # After the placement outcome an order may still be released (cancel, expiry, lost stock) or, once
        # backordered, allocated; anything else is a second placement outcome.
        allowed = {"OrderInventoryReleased"} | (
            {"OrderInventoryAllocated"} if first["event_type"] == "OrderBackordered" else set()
        )
        if first["event_type"] == "OrderInventoryReleased":
            allowed = set()
        result[order_id] = [first] + [r for r in later if r["event_type"] not in allowed]
    return result


def check(
    tenant: str,
    order_ids: set[str],
    allocations: list[dict[str, Any]],
    availability: list[dict[str, Any]],
    fulfillments: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> Verdict:
    verdict = Verdict()
    outcomes = placement_outcomes(allocations, tenant)
    for order_id in sorted(order_ids):
        got = outcomes.get(order_id, [])
        if len(got) != 1:
            verdict.problems.append(f"order {order_id}: {len(got)} placement outcomes {[r['event_type'] for r in got]}")
        else:
            verdict.outcomes[order_id] = got[0]["event_type"]
    unknown = set(outcomes) - order_ids
    if unknown:
        verdict.problems.append(f"outcomes for orders never placed: {sorted(unknown)[:5]}")
    latest: dict[str, dict[str, Any]] = {}
    for record in availability:
        if record["tenant_id"] != tenant:
            continue
        for loc in record["locations"]:
            if loc["reserved"] + loc["soft_allocated"] > loc["on_hand"]:
                verdict.problems.append(
                    f"oversold {record['sku']}@{loc['location']} at version {record['version']}: {loc}"
                )
        if record["version"] >= latest.get(record["sku"], {}).get("version", -1):
            latest[record["sku"]] = record
    # Reconcile: what the ledgers hold = the lines of orders allocated and not released since.
    released = {
        r["order_id"] for r in allocations if r["tenant_id"] == tenant and r["event_type"] == "OrderInventoryReleased"
    }
    expected: dict[tuple[str, str], int] = defaultdict(int)
    allocated = {
        r["order_id"]: r
        for r in allocations
        if r["tenant_id"] == tenant and r["event_type"] == "OrderInventoryAllocated"
    }
    for order_id, record in allocated.items():
        if order_id not in released:
            for line in record["lines"]:
                expected[(line["sku"], line["location"])] += line["quantity"]
    issued = {
        r["event_id"]: r
        for r in fulfillments
        if r["tenant_id"] == tenant and r["event_type"] == "FulfillmentAccepted" and r["order_id"] not in released
    }
    for record in issued.values():  # fulfillment issued these units: the reservation became a shipment
        for item in record["items"]:
            expected[(item["sku"], item["location"])] -= item["quantity"]
    held = {
        (sku, loc["location"]): loc["reserved"]
        for sku, record in latest.items()
        for loc in record["locations"]
        if loc["reserved"]
    }
    if held != {k: v for k, v in expected.items() if v}:
        verdict.problems.append(
            f"reservations do not reconcile: ledgers hold {held}, open orders need {dict(expected)}"
        )
    return verdict


FULFILLMENT_OUTCOMES = {"FulfillmentAccepted", "FulfillmentRejected"}


def _distinct(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per event_id (outputs re-emitted after a crash carry the same id), in log order."""
    seen: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: (r["_topic"], r["_partition"], r["_offset"])):
        seen.setdefault(record["event_id"], record)
    return list(seen.values())


def _latest_availability(availability: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for record in availability:
        key = (record["tenant_id"], record["sku"])
        if record["version"] >= latest.get(key, {}).get("version", -1):
            latest[key] = record
    return latest


def audit(
    tenants: set[str],
    sent: list[Any],
    outputs: dict[str, list[dict[str, Any]]],
) -> Verdict:
    """Everything DESIGN.md section 4 promises, for a run whose inputs are `sent` (tests/support/load.Sent)
    and whose output topics were read into `outputs` (allocations, availability, fulfillments, dlq)."""
    verdict = Verdict()
    allocations = _distinct(outputs["allocations"])
    availability = outputs["availability"]
    fulfillments = _distinct(outputs["fulfillments"])
    dead = outputs["dlq"]

    # Tenants are isolated: every output names one of the run's tenants, and its key says the same.
    for topic in ("allocations", "availability", "fulfillments"):
        for record in outputs[topic]:
            if record["tenant_id"] not in tenants or not (record["_key"] or "").startswith(record["tenant_id"] + ":"):
                verdict.problems.append(f"{topic} record crosses tenants: key {record['_key']} {record['tenant_id']}")

    # Every input record is accounted for: dead-lettered where it was produced, or accepted and answered.
    dead_at = {(r["source_topic"], r["source_partition"], r["source_offset"]) for r in dead}
    accepted = []
    for s in sent:
        if s.offset < 0:
            verdict.problems.append(f"input never delivered to the broker: {s.topic_id} {s.value[:60]!r}")
        elif (s.topic_name, s.partition, s.offset) in dead_at:
            continue
        elif s.event is None:
            verdict.problems.append(f"garbage accepted without a dead letter: {s.topic_id}@{s.offset} {s.value[:60]!r}")
        else:
            accepted.append(s)  # a mutation that is still a valid event counts as an input like any other
    valid = accepted
    causes = {r["causation_id"] for r in allocations + fulfillments + availability}
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in valid:
        by_type[s.event["event_type"]].append(s.event)

    # One placement outcome per order placed (a duplicate re-emits the same event id).
    orders = {(e["tenant_id"], e["order_id"]) for e in by_type["OrderPlaced"]}
    for tenant in tenants:
        mine = {oid for t, oid in orders if t == tenant}
        for order_id, got in placement_outcomes(allocations, tenant).items():
            if order_id not in mine:
                verdict.problems.append(f"{tenant}: outcome for an order never placed: {order_id}")
            elif len(got) != 1:
                kinds = [r["event_type"] for r in got]
                verdict.problems.append(f"{tenant} order {order_id}: {len(got)} placement outcomes {kinds}")
            else:
                verdict.outcomes[f"{tenant}/{order_id}"] = got[0]["event_type"]
    for tenant, order_id in sorted(orders):
        if f"{tenant}/{order_id}" not in verdict.outcomes and not any(
            p.startswith(f"{tenant} order {order_id}:") for p in verdict.problems
        ):
            verdict.problems.append(f"{tenant} order {order_id}: no placement outcome")
    released = {(r["tenant_id"], r["order_id"]) for r in allocations if r["event_type"] == "OrderInventoryReleased"}
    rejected = {(r["tenant_id"], r["order_id"]) for r in allocations if r["event_type"] == "OrderAllocationRejected"}
    # A cancel ends the order, unless a fulfillment had already issued its stock (README: a cancel of an
    # order in fulfillment is too late and changes nothing). Never both: stock issued for a cancelled order.
    shipping = {(r["tenant_id"], r["order_id"]) for r in fulfillments if r["event_type"] == "FulfillmentAccepted"}
    cancelled_released = {
        (r["tenant_id"], r["order_id"])
        for r in allocations
        if r["event_type"] == "OrderInventoryReleased" and r.get("reason") == "CANCELLED"
    }
    for key in sorted({(e["tenant_id"], e["order_id"]) for e in by_type["OrderCancelled"]}):
        if key not in orders:
            continue
        if key in shipping and key in cancelled_released:
            verdict.problems.append(f"{key}: released as CANCELLED, yet a fulfillment issued its stock")
        elif key not in shipping and key not in released and key not in rejected:
            verdict.problems.append(f"{key}: cancelled, yet neither released nor rejected")

    # Each product and each movement changed a ledger version (its availability names it as the cause). A
    # movement is applied once per movement id on its SKU (README): of the accepted events with one movement
    # id (a duplicate, or a copy with another event id), the first one applied names it.
    for e in by_type["ProductUpserted"]:
        if e["event_id"] not in causes:
            verdict.problems.append(f"ProductUpserted {e['event_id']} accepted but no availability names it")
    movements: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for kind in ("StockReceived", "StockAdjusted", "StockCounted"):
        for e in by_type[kind]:
            movements[(e["tenant_id"], e["sku"], e["movement_id"])].append(e)
    for key, same in movements.items():
        if not any(e["event_id"] in causes for e in same):
            verdict.problems.append(f"movement {key} accepted but no availability names it")
    # Each fulfillment started was accepted or rejected; each opportunity got an answer.
    answered = {(r["tenant_id"], r["fulfillment_id"]) for r in fulfillments if r["event_type"] in FULFILLMENT_OUTCOMES}
    for e in by_type["FulfillmentStarted"]:
        if (e["tenant_id"], e["fulfillment_id"]) not in answered:
            verdict.problems.append(f"fulfillment {e['fulfillment_id']}: neither accepted nor rejected")
    answered_opportunities = {
        (r["tenant_id"], r["opportunity_id"]) for r in allocations if r["event_type"].startswith("Opportunity")
    }
    for e in by_type["OpportunityUpserted"]:
        if (e["tenant_id"], e["opportunity_id"]) not in answered_opportunities:
            verdict.problems.append(f"opportunity {e['opportunity_id']}: no answer at all")

    # Never oversold, in any availability record ever published.
    for record in availability:
        for loc in record["locations"]:
            if loc["reserved"] + loc["soft_allocated"] > loc["on_hand"]:
                verdict.problems.append(
                    f"oversold {record['tenant_id']}/{record['sku']}@{loc['location']} v{record['version']}: {loc}"
                )

    # Sums reconcile, per tenant, SKU and location, against the latest availability of each SKU.
    issued: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in fulfillments:
        if r["event_type"] == "FulfillmentAccepted":
            for item in r["items"]:
                issued[(r["tenant_id"], item["sku"], item["location"])] += item["quantity"]
    # Orders: reserved + backordered = the lines of orders allocated or backordered and not released since,
    # less what fulfillment issued from them.
    holding: dict[tuple[str, str], dict[str, Any]] = {}
    for r in allocations:
        key = (r["tenant_id"], r["order_id"]) if r.get("order_id") else None
        if key and r["event_type"] in ("OrderInventoryAllocated", "OrderBackordered") and key not in released:
            holding.setdefault(key, r)
    open_lines: dict[tuple[str, str, str], int] = defaultdict(int)
    ordered: dict[tuple[str, str], dict[str, Any]] = {}
    for e in by_type["OrderPlaced"]:  # the order id is the identity: the first accepted one is the order
        ordered.setdefault((e["tenant_id"], e["order_id"]), e)
    for key in holding:
        for line in ordered[key]["lines"] if key in ordered else ():
            open_lines[(key[0], line["sku"], line["location"])] += line["quantity"]
    for r in fulfillments:
        if r["event_type"] == "FulfillmentAccepted" and (r["tenant_id"], r["order_id"]) in holding:
            for item in r["items"]:
                open_lines[(r["tenant_id"], item["sku"], item["location"])] -= item["quantity"]
    # Opportunities: what each holds, from its events in log order (one key, one partition). Allocated
    # states every hold it has (README: each upsert re-evaluates and the answer names what is held);
    # Rejected holds nothing; a release for LOST, BELOW_THRESHOLD, EXPIRED or CHANGED gives back every hold;
    # CONVERTED and STOCK_LOST releases and pre-emptions take away the items they name.
    soft: dict[tuple[str, str, str], int] = defaultdict(int)
    holds: dict[tuple[str, str], dict[tuple[str, str], int]] = {}
    for r in allocations:
        kind = r["event_type"]
        if not kind.startswith("Opportunity"):
            continue
        key = (r["tenant_id"], r["opportunity_id"])
        items = {(i["sku"], i["location"]): i["quantity"] for i in r.get("items", [])}
        if kind == "OpportunityInventoryAllocated":
            holds[key] = items
        elif kind == "OpportunityInventoryRejected" or (
            kind == "OpportunityInventoryReleased" and r["reason"] not in ("CONVERTED", "STOCK_LOST")
        ):
            holds[key] = {}
        elif kind in ("OpportunityInventoryReleased", "OpportunityInventoryPreempted"):
            mine = holds.setdefault(key, {})
            for where, quantity in items.items():
                mine[where] = mine.get(where, 0) - quantity
    for (tenant, _), held in holds.items():
        for (sku, location), quantity in held.items():
            soft[(tenant, sku, location)] += quantity
    # On hand = receipts + accepted adjustments (counts set it) - issued; a movement id counts once per SKU.
    on_hand: dict[tuple[str, str, str], int] = defaultdict(int)
    for same in movements.values():
        e = same[0]
        if e["event_type"] != "StockCounted":
            on_hand[(e["tenant_id"], e["sku"], e["location"])] += e.get("quantity", 0) + e.get("delta", 0)
    counted = bool(by_type["StockCounted"])
    for (tenant, sku), record in _latest_availability(availability).items():
        for loc in record["locations"]:
            where = (tenant, sku, loc["location"])
            if loc["reserved"] + loc["backordered"] != open_lines.get(where, 0):
                verdict.problems.append(
                    f"{where}: reserved {loc['reserved']} + backordered {loc['backordered']}, "
                    f"open orders need {open_lines.get(where, 0)}"
                )
            if loc["soft_allocated"] != soft.get(where, 0):
                verdict.problems.append(
                    f"{where}: soft_allocated {loc['soft_allocated']}, opportunities hold {soft.get(where, 0)}"
                )
            if not counted and loc["on_hand"] != on_hand.get(where, 0) - issued.get(where, 0):
                verdict.problems.append(
                    f"{where}: on_hand {loc['on_hand']}, movements give {on_hand.get(where, 0)} "
                    f"less {issued.get(where, 0)} issued"
                )
    return verdict
