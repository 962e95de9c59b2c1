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
