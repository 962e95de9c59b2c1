"""Every worker's read model of inventory.availability.v1 (compacted): the latest availability of every
SKU, for views that span many SKUs (a customer's inventory view). It knows how far behind the log it is."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

log = logging.getLogger("agents.availability")


class AvailabilityCache(threading.Thread):
    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(name="availability-cache", daemon=True)
        self.topic = topic
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"availability-cache-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        self.lock = threading.Lock()
        self.by_tenant: dict[str, dict[str, dict[str, Any]]] = {}
        self.positions: dict[int, int] = {}
        self.stopping = threading.Event()
        self.last_message_at: float | None = None
        self._behind = 0

    def skus(self, tenant: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            return dict(self.by_tenant.get(tenant, {}))

    def behind(self) -> int:
        """Messages of the topic this cache had not read yet when it last looked (about once a second).
        Read by the event loop; only the cache's own thread touches the consumer."""
        return self._behind

    def _measure(self) -> None:
        total = 0
        for partition, position in self.positions.items():
            _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, partition), cached=True)
            total += max(high - position, 0)
        self._behind = total

    def run(self) -> None:
        metadata = self.consumer.list_topics(self.topic, timeout=30)
        partitions = list(metadata.topics[self.topic].partitions)
        self.positions = dict.fromkeys(partitions, 0)
        self.consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        measured = 0.0
        while not self.stopping.is_set():
            if time.monotonic() - measured > 1.0:
                self._measure()
                measured = time.monotonic()
            # A short wait: consume() waits out its timeout unless the batch fills, and views should be fresh.
            for message in self.consumer.consume(500, timeout=0.05):
                if message.error() or message.value() is None:
                    continue
                try:
                    record = json.loads(message.value() or b"")
                    tenant, sku = record["tenant_id"], record["sku"]
                except (ValueError, KeyError, TypeError):
                    continue
                with self.lock:
                    known = self.by_tenant.setdefault(tenant, {}).get(sku)
                    if known is None or record.get("version", 0) >= known.get("version", 0):
                        self.by_tenant[tenant][sku] = record
                self.positions[message.partition() or 0] = (message.offset() or 0) + 1
                self.last_message_at = time.time()
