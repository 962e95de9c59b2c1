"""Worker settings, from the environment (prefix INVENTORY_) or a .env file."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def shipped(name: str) -> Path:
    """topics.yaml or schemas/: the checkout's own (at the top of the repository) when run from a checkout,
    else the copy the installed package carries as package data (agents/topics.yaml, agents/schemas)."""
    if (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / name).exists():
        return PROJECT_ROOT / name
    # A wheel installs as plain files, so the resource is a real path the worker can open.
    return Path(str(files("agents").joinpath(name)))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INVENTORY_", env_file=".env", extra="ignore", frozen=True)

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated")
    app_id: str = Field("inventory-fleet", description="the consumer group of the fleet (and its changelogs' names)")
    topics_file: Path = Field(shipped("topics.yaml"), description="the topic contract")
    schemas_dir: Path = Field(shipped("schemas"), description="Avro schemas (.avsc)")
    replication_factor: int | None = Field(None, description="overrides every topic's replication factor")
    data_dir: Path = Field(Path("data/worker-1"), description="where this worker keeps its RocksDB files")
    web_host: str = Field("127.0.0.1", description="interface of the HTTP server (views, /metrics)")
    web_port: int = Field(6066, description="port of the HTTP server")
    member_id: str | None = Field(
        None, description="static group member id (e.g. the pod name): a restarted worker rejoins without a rebalance"
    )
    session_timeout_s: float = Field(
        30.0, description="consumer session timeout: how soon a dead worker's partitions move"
    )
    lag_interval_s: float = Field(5.0, description="how often each worker measures the group's consumer lag")
    log_level: str = Field("info", description="worker log level")
    rocksdb_block_cache_mb: int = Field(
        64, description="RocksDB block cache of the whole worker (one cache shared by every state partition)"
    )
    rocksdb_write_buffer_mb: int = Field(8, description="RocksDB write buffer size per state partition")
    rocksdb_max_write_buffers: int = Field(2, description="RocksDB write buffers per state partition")
    rocksdb_fsync: bool = Field(False, description="fsync RocksDB at every checkpoint (the changelog is durable)")
    dedup_window: int = Field(512, description="command ids remembered per SKU ledger for idempotency")
    state_cache_entries: int = Field(
        20_000, description="decoded entities kept in memory per processor (LRU; each checked against its state)"
    )
    processing_guarantee: Literal["at-least-once", "exactly-once"] = Field(
        "at-least-once", description="at-least-once (idempotent handlers) or exactly-once (Kafka transactions)"
    )
    commit_interval_s: float = Field(
        1.0, description="checkpoint interval: state, changelogs and offsets (with exactly-once, output visibility)"
    )
    producer_linger_ms: float = Field(1.0, description="producer linger: how long a record waits for a batch")
    fetch_wait_max_ms: int = Field(10, description="how long the broker holds an empty fetch")
    http_max_concurrent: int = Field(64, description="HTTP requests handled at once; more get 503 + Retry-After")
    http_timeout_s: float = Field(5.0, description="an HTTP request taking longer gets 503 + Retry-After")
    log_json: bool = Field(False, description="log one JSON object per line instead of text")
    schema_registry_url: str | None = Field(
        None, description="Confluent-compatible schema registry: Avro in by registry id, and Avro outputs"
    )
    schema_registry_auth: SecretStr | None = Field(None, description="user:password for the registry")
    schema_registry_auto_register: bool = Field(
        False, description="register output schemas as they are produced (off: `python -m agents schemas register`)"
    )
    reservation_hold_s: int = Field(900, description="how long an order's reservation holds after its order_date")
    expiry_tick_s: float = Field(1.0, description="how often each worker checks its partitions for due expiries")
    api_tokens: SecretStr | None = Field(
        None, description="bearer tokens of the HTTP API and the tenant each may read: tokA=tenant-a,tokB=tenant-b"
    )
    api_tokens_file: Path | None = Field(None, description="a file of token=tenant lines, instead of api_tokens")
    tier_discounts: dict[str, dict[str, Decimal]] = Field(
        default_factory=dict,
        description='per-tenant tier discounts in percent, JSON: {"acme": {"GOLD": 7}} (defaults: agents/core/customer.py)',
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


# INVENTORY_* variables read by something other than Settings: the CLI's token, and the test suites'.
OTHER_VARIABLES = frozenset({"INVENTORY_API_TOKEN"})
OTHER_PREFIXES = ("INVENTORY_TEST_", "INVENTORY_FAULTS_")


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One warning per INVENTORY_* variable that names no setting (a misspelt one is otherwise ignored
    silently), with the closest setting when there is one."""
    known = {f"INVENTORY_{name.upper()}" for name in Settings.model_fields}
    warnings = []
    for name in sorted(environ):
        if not name.startswith("INVENTORY_") or name in known or name in OTHER_VARIABLES:
            continue
        if name.startswith(OTHER_PREFIXES):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"warning: {name} is not a setting and is ignored{hint}")
    return warnings


def token_tenants(settings: Settings) -> dict[str, str]:
    """Bearer token -> the one tenant it may read."""
    text = settings.api_tokens.get_secret_value().replace(",", "\n") if settings.api_tokens else ""
    if settings.api_tokens_file is not None:
        text += "\n" + settings.api_tokens_file.read_text()
    pairs = {}
    for entry in text.splitlines():
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        token, sep, tenant = entry.partition("=")
        if not sep or not token.strip() or not tenant.strip():
            raise ValueError("INVENTORY_API_TOKENS entries look like token=tenant")
        pairs[token.strip()] = tenant.strip()
    return pairs
