"""Every Prometheus metric of the fleet. Labels are bounded: topic ids, outcomes, reasons; never a SKU,
an order or a customer id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

EVENTS_PROCESSED = Counter(
    "inventory_events_processed",
    "Events handled by the fleet, by topic id and outcome",
    ["topic", "outcome"],
)
PROCESSING_SECONDS = Histogram(
    "inventory_processing_seconds",
    "Time to handle one event inside an agent",
    ["agent"],
    buckets=LATENCY_BUCKETS,
)
DLQ_MESSAGES = Counter(
    "inventory_dlq_messages",
    "Messages sent to the dead-letter queue, by source topic id and error class",
    ["topic", "error"],
)
DUPLICATES = Counter(
    "inventory_duplicate_commands",
    "Commands recognised as already applied (redelivery or upstream duplicate)",
    ["agent"],
)
CONSUMER_LAG = Gauge(
    "inventory_consumer_lag_messages",
    "End offset minus committed offset of the fleet's consumer group, per topic-partition",
    ["topic", "partition"],
)
ORDER_ALLOCATION_SECONDS = Histogram(
    "inventory_order_allocation_seconds",
    "End to end: upstream OrderPlaced timestamp (Kafka record time) to the placement outcome being published",
    ["outcome"],
    buckets=LATENCY_BUCKETS,
)
REBALANCES = Counter("inventory_rebalances", "Consumer group rebalances seen by this worker")
ASSIGNED_PARTITIONS = Gauge("inventory_assigned_partitions", "Partitions of the fleet's topics assigned to this worker")
RESERVATIONS = Gauge(
    "inventory_reservations_units",
    "Units held, fleet-wide (from the read models), by kind (ORDER, OPPORTUNITY)",
    ["kind"],
)
BACKORDER_QUEUE_DEPTH = Gauge(
    "inventory_backorder_queue_depth", "Orders waiting as backorders, fleet-wide (from the read models)"
)
BACKORDER_OLDEST_AGE = Gauge(
    "inventory_backorder_oldest_age_seconds", "Age of the oldest waiting backorder, fleet-wide (from the read models)"
)
HTTP_REQUESTS = Counter("inventory_http_requests", "HTTP API requests, by route and status", ["route", "status"])
HTTP_SECONDS = Histogram("inventory_http_seconds", "HTTP API latency by route", ["route"], buckets=LATENCY_BUCKETS)
HOP_SECONDS = Histogram(
    "inventory_hop_seconds",
    "Per hop: the time from an internal record being produced by the fleet to a processor taking it, by topic id",
    ["topic"],
    buckets=LATENCY_BUCKETS,
)


def initialize(internal_topic_ids: list[str], outcomes: frozenset[str] | set[str]) -> None:
    """Create the labelled series that exist from the start, so that every worker exposes them (at zero)
    before its first event: dashboards and `promtool check metrics` see the same names on every worker."""
    for outcome in sorted(outcomes):
        ORDER_ALLOCATION_SECONDS.labels(outcome)
    for topic_id in internal_topic_ids:
        HOP_SECONDS.labels(topic_id)
