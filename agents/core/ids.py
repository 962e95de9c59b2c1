"""Deterministic identifiers: the same causation and outcome always give the same event id."""

from __future__ import annotations

import uuid

NAMESPACE = uuid.UUID("6f1c3d1e-4b7a-5b0e-9d5c-2b1f0e8a7c44")
SEPARATOR = "|"


def event_id(*parts: object) -> str:
    return str(uuid.uuid5(NAMESPACE, SEPARATOR.join(str(p) for p in parts)))


def entity_key(tenant_id: str, entity_id: str) -> bytes:
    """The key of a stateful topic and table: `tenant|entity`, UTF-8 bytes."""
    return f"{tenant_id}{SEPARATOR}{entity_id}".encode()


def split_key(key: bytes) -> tuple[str, str]:
    tenant, _, entity = key.decode().partition(SEPARATOR)
    return tenant, entity
