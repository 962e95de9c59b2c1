"""Deterministic identifiers: the same causation and outcome always give the same event id."""

from __future__ import annotations

import hashlib
import uuid

NAMESPACE = uuid.UUID("6f1c3d1e-4b7a-5b0e-9d5c-2b1f0e8a7c44")
_NAMESPACE_BYTES = NAMESPACE.bytes
SEPARATOR = "|"


def compose(*parts: str) -> str:
    """One string for a tuple of strings, injective for any unicode parts: each part is prefixed with its
    length (`3:abc1:/`), so no separator inside a part can make two tuples meet."""
    return "".join(f"{len(part)}:{part}" for part in parts)


def decompose(composed: str) -> tuple[str, ...]:
    """The parts `compose` joined; ValueError for a string it did not make."""
    parts: list[str] = []
    at = 0
    while at < len(composed):
        colon = composed.find(":", at)
        digits = composed[at:colon]
        if colon < 0 or not digits.isdigit() or colon + 1 + int(digits) > len(composed):
            raise ValueError(f"not a composed id: {composed!r}")
        length = int(digits)
        parts.append(composed[colon + 1 : colon + 1 + length])
        at = colon + 1 + length
    return tuple(parts)


def event_id(*parts: object) -> str:
    """The UUID version 5 of the parts (`uuid.uuid5(NAMESPACE, compose(...))`, computed without building
    UUID objects: it is made several times per order line)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + compose(*(str(p) for p in parts)).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def entity_key(tenant_id: str, entity_id: str) -> bytes:
    """The key of a stateful topic and table: `tenant|entity`, UTF-8 bytes."""
    return f"{tenant_id}{SEPARATOR}{entity_id}".encode()


def split_key(key: bytes) -> tuple[str, str]:
    tenant, _, entity = key.decode().partition(SEPARATOR)
    return tenant, entity
