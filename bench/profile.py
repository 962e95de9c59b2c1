"""Optional: where a worker's CPU goes while it drains the saturation backlog, sampled with py-spy
(`pip install py-spy`; it is not a project dependency). The raw collapsed stacks are kept next to the JSON."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# The first match, leaf frame upwards, names where a sample's time is spent.
AREAS = (
    ("selectors.py", "waiting in epoll (idle event loop)"),
    ("agents/http.py", "HTTP API (customer views)"),
    ("aiohttp/", "HTTP API (customer views)"),
    ("pydantic/", "pydantic (JSON validate / dump)"),
    ("json/", "json module"),
    ("orjson", "orjson (state and view encoding)"),
    ("quixstreams/state", "Quix state (RocksDB transactions, changelog)"),
    ("rocksdict", "Quix state (RocksDB transactions, changelog)"),
    ("confluent_kafka", "confluent-kafka (poll, produce)"),
    ("quixstreams/kafka", "confluent-kafka (poll, produce)"),
    ("asyncio/", "asyncio scheduling (HTTP thread)"),
    ("agents/core/", "domain core (agents/core)"),
    ("agents/readmodels", "read models thread (confluent-kafka)"),
    ("agents/lag", "lag monitor thread"),
    ("prometheus_client", "Prometheus metrics"),
    ("agents/runtime/store", "state layout (agents/runtime/store.py)"),
    ("agents/", "processors (envelopes, routing)"),
    ("quixstreams/", "Quix Streams (dataframe, checkpoints, row producer)"),
)


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Recorder:
    def __init__(self, pid: int, output: Path, rate: int = 50) -> None:
        binary = py_spy()
        if binary is None:
            raise FileNotFoundError("py-spy is not installed: .venv/bin/pip install py-spy")
        self.output = output
        self.process = subprocess.Popen(
            [binary, "record", "-p", str(pid), "-r", str(rate), "--format", "raw", "-o", str(output), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> dict[str, Any]:
        self.process.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            _, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return {"error": "py-spy did not stop"}
        if not self.output.exists():
            return {"error": err.decode(errors="replace").strip()[-500:]}
        return summarize(self.output)


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Share of samples by area (leaf frame upwards) and the functions with the most self time."""
    areas: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        leaves[frames[-1]] += n
        for frame in reversed(frames):
            area = next((name for marker, name in AREAS if marker in frame), None)
            if area:
                areas[area] += n
                break
        else:
            areas["other"] += n
    share = {k: round(100 * v / total, 1) for k, v in areas.most_common()} if total else {}
    self_time = [{"function": f, "percent": round(100 * v / total, 1)} for f, v in leaves.most_common(top)]
    return {"samples": total, "raw": str(path), "percent_by_area": share, "top_self": self_time}
