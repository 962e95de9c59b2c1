"""Consumer lag of the fleet's group, per topic-partition (end offset minus committed offset), measured
from the broker by every worker in a background thread (Quix Streams exports no lag metric).

Every worker reports the whole group's lag (not only its own partitions), so a stopped worker's partitions
still show their lag growing; dashboards take `max by (topic, partition)`.
"""

from __future__ import annotations

import logging
import threading
import uuid

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from agents.metrics import CONSUMER_LAG

log = logging.getLogger("agents.lag")


class LagMonitor(threading.Thread):
    def __init__(self, bootstrap: str, group_id: str, topics: list[str], interval_s: float = 5.0) -> None:
        super().__init__(name="lag-monitor", daemon=True)
        self.group_id = group_id
        self.topics = topics
        self.interval_s = interval_s
        self.stopping = threading.Event()
        self.admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"lag-monitor-{uuid.uuid4().hex}", "enable.auto.commit": False}
        )

    def measure(self) -> dict[tuple[str, int], int]:
        metadata = self.consumer.list_topics(timeout=10)
        partitions = [
            TopicPartition(topic, p)
            for topic in self.topics
            if topic in metadata.topics
            for p in metadata.topics[topic].partitions
        ]
        request = [ConsumerGroupTopicPartitions(self.group_id, partitions)]
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in self.admin.list_consumer_group_offsets(request)[self.group_id].result(timeout=10).topic_partitions
        }
        lags = {}
        for tp in partitions:
            low, high = self.consumer.get_watermark_offsets(tp, timeout=10)
            offset = committed.get((tp.topic, tp.partition), -1)
            lags[(tp.topic, tp.partition)] = high - (offset if offset >= 0 else low)
        return lags

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            try:
                for (topic, partition), lag in self.measure().items():
                    CONSUMER_LAG.labels(topic, str(partition)).set(max(lag, 0))
            except Exception:  # the broker may be briefly unreachable; the next round tries again
                log.warning("could not measure consumer lag", exc_info=True)

    def stop(self) -> None:
        self.stopping.set()
