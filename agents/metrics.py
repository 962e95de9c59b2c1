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
