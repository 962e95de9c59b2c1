"""A worker fleet for a test: its own topics (names suffixed), consumer group and data folders, workers
as subprocesses (`python -m agents worker`), producers and an output reader on the real broker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from tests.support.broker import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy, or fail saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def isolated_topics_file(directory: Path, suffix: str) -> Path:
    raw = yaml.safe_load((ROOT / "topics.yaml").read_text())
    for body in raw["topics"].values():
        body["name"] = f"{body['name']}.{suffix}"
    path = directory / "topics.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@dataclass
class Worker:
    name: str
    env: dict[str, str]
    log_path: Path
    web_port: int
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agents", "worker"],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.url(path))
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                body = response.read()
                return response.status, _maybe_json(body)
        except urllib.error.HTTPError as exc:
            return exc.code, _maybe_json(exc.read())

    def ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"worker {self.name} exited; log:\n{self.tail_log()}")
        try:
            status, _ = self.get("/readyz")
        except (urllib.error.URLError, ConnectionError, OSError):
            return False
        return status == 200

    def wait_ready(self, timeout: float = 90) -> None:
        wait_until(self.ready, timeout, f"worker {self.name} to be ready", interval=0.25)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include `labels`, from this worker's /metrics."""
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def tail_log(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _maybe_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")


@dataclass
class Fleet:
    bootstrap: str
    directory: Path
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    workers: list[Worker] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.topics_file = isolated_topics_file(self.directory, self.suffix)
        raw = yaml.safe_load(self.topics_file.read_text())
        self.names: dict[str, str] = {tid: body["name"] for tid, body in raw["topics"].items()}
        self.app_id = f"inventory-test-{self.suffix}"
        self._producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 1})

    def env(self, index: int, web_port: int, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "INVENTORY_KAFKA_BOOTSTRAP": self.bootstrap,
            "INVENTORY_TOPICS_FILE": str(self.topics_file),
            "INVENTORY_APP_ID": self.app_id,
            "INVENTORY_DATA_DIR": str(self.directory / f"worker-{index}"),
            "INVENTORY_WEB_PORT": str(web_port),
            "INVENTORY_COMMIT_INTERVAL_S": "0.5",
            "INVENTORY_SESSION_TIMEOUT_S": "10",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    def add_worker(self, **extra: str) -> Worker:
        index = len(self.workers) + 1
        port = free_port()
        worker = Worker(f"w{index}", self.env(index, port, **extra), self.directory / f"worker-{index}.log", port)
        self.workers.append(worker)
        return worker.start()

    def produce(self, topic_id: str, value: bytes | dict[str, Any], key: bytes | str | None = None) -> None:
        """Produce like an upstream system: librdkafka's default partitioner, which we never trust."""
        data = json.dumps(value).encode() if isinstance(value, dict) else value
        self._producer.produce(self.names[topic_id], value=data, key=key)
        self._producer.poll(0)

    def flush(self) -> None:
        assert self._producer.flush(30) == 0

    def reader(self, *topic_ids: str) -> OutputReader:
        return OutputReader(self.bootstrap, [self.names[t] for t in topic_ids])

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self._producer.flush(10)


class OutputReader:
    """Reads output topics from the beginning; tests poll it until what they expect has arrived."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 50,
            }
        )
        metadata = self.consumer.list_topics(timeout=10)
        self.partitions = [TopicPartition(t, p) for t in topics for p in metadata.topics[t].partitions]
        self.consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in self.partitions])
        self.records: list[dict[str, Any]] = []

    def _poll(self) -> int:
        msgs = self.consumer.consume(500, timeout=0.2)
        for msg in msgs:
            if msg.error():
                continue
            value = json.loads(msg.value())
            value["_topic"] = msg.topic()
            value["_partition"] = msg.partition()
            value["_offset"] = msg.offset()
            value["_key"] = msg.key().decode() if msg.key() else None
            self.records.append(value)
        return len(msgs)

    def drain(self, timeout: float = 30) -> list[dict[str, Any]]:
        """Everything published so far: reads until every partition's position reaches its end offset."""
        ends = {
            (tp.topic, tp.partition): self.consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self.partitions
        }

        def caught_up() -> bool:
            self._poll()
            positions = self.consumer.position(self.partitions)
            return all(
                ends[(tp.topic, tp.partition)] == 0 or tp.offset >= ends[(tp.topic, tp.partition)] for tp in positions
            )

        wait_until(caught_up, timeout, "the output reader to reach the end of its topics", interval=0)
        return self.records

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30, count: int = 1, what: str = ""
    ) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]] | None:
            self._poll()
            matches = [r for r in self.records if predicate(r)]
            return matches if len(matches) >= count else None

        return wait_until(found, timeout, what or f"{count} matching output record(s)")  # type: ignore[no-any-return]

    def close(self) -> None:
        self.consumer.close()
