"""The core imports nothing that does I/O: no stream runtime, Kafka, RocksDB, Avro, HTTP or Prometheus."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {
    "quixstreams",
    "faust",
    "aiokafka",
    "confluent_kafka",
    "aiohttp",
    "orjson",
    "rocksdict",
    "fastavro",
    "prometheus_client",
    "agents.runtime",
    "agents.processors",
}
CORE = Path(__file__).resolve().parents[2] / "agents" / "core"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_modules_import_no_io_library() -> None:
    files = sorted(CORE.glob("*.py"))
    assert files, "the core package is missing"
    offenders = {
        f"{path.name}: {name}"
        for path in files
        for name in imported_modules(path)
        if name in FORBIDDEN or name.split(".")[0] in FORBIDDEN
    }
    assert offenders == set()


def test_core_imports_only_the_core_from_this_project() -> None:
    for path in CORE.glob("*.py"):
        for name in imported_modules(path):
            if name.startswith("agents"):
                assert name.startswith("agents.core"), f"{path.name} imports {name}"
