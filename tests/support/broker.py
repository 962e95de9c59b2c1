"""Where the tests' Kafka broker comes from: INVENTORY_TEST_BOOTSTRAP (make test starts one), else a
testcontainers Kafka when a Docker engine answers, else the project's local KRaft broker on a test port."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_PORT = int(os.environ.get("INVENTORY_TEST_KAFKA_PORT", "19192"))


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextmanager
def kafka_bootstrap() -> Iterator[str]:
    given = os.environ.get("INVENTORY_TEST_BOOTSTRAP")
    if given:
        yield given
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    env = {**os.environ, "KAFKA_PORT": str(TEST_PORT), "KAFKA_DATA": str(ROOT / ".kafka" / "pytest")}
    script = ROOT / "deploy" / "kafka" / "kafka.sh"
    subprocess.run([str(script), "up"], env=env, check=True)
    try:
        yield f"127.0.0.1:{TEST_PORT}"
    finally:
        subprocess.run([str(script), "down"], env=env, check=False)


SCRIPT = ROOT / "deploy" / "kafka" / "kafka.sh"


@contextmanager
def kafka_cluster(port: int, data: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A throwaway three-node KRaft cluster from kafka.sh (NODES=3; replication 3, min.insync.replicas 2):
    yields its bootstrap servers and the environment that addresses it (for `kafka.sh stop-node N`)."""
    env = {**os.environ, "NODES": "3", "KAFKA_PORT": str(port), "KAFKA_DATA": str(data), "KAFKA_HEAP": "384m"}
    subprocess.run([str(SCRIPT), "up"], env=env, check=True, timeout=180)
    try:
        bootstrap = subprocess.run(
            [str(SCRIPT), "bootstrap"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        yield bootstrap, env
    finally:
        # Kill the nodes first: a clean stop of the last two brokers waits ~20 s for a controller quorum
        # that is gone with a node a test killed, then kills them anyway.
        for node in range(1, 4):
            subprocess.run([str(SCRIPT), "stop-node", str(node)], env=env, check=False, capture_output=True)
        subprocess.run([str(SCRIPT), "down"], env=env, check=False, timeout=120)
