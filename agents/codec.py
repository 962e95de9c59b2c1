"""Serialisation at the edge: JSON (validated by the core's pydantic models) and Avro in the Confluent
wire format (magic byte 0, 4-byte big-endian schema id, Avro binary body), told apart per message."""

from __future__ import annotations

import io
import json
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
import yaml
from pydantic import BaseModel

MAGIC_BYTE = 0
AVRO_NAMESPACE = "erp.inventory"
_HEADER = struct.Struct(">bI")


class DecodeError(ValueError):
    """Bytes that are not a message we can read; `error` is a class name, `reason` is for a person."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


class LocalSchemaRegistry:
    """Schema ids for the schemas in schemas/, as pinned in schemas/local-registry.yaml.

    Used when no Confluent schema registry is configured: producers that speak the Confluent wire format
    use these ids (`python -m agents topics check` verifies the file).
    """

    def __init__(self, schemas_dir: Path) -> None:
        self.schemas_dir = schemas_dir
        ids = yaml.safe_load((schemas_dir / "local-registry.yaml").read_text())["schemas"]
        self._ids: dict[str, int] = {str(k): int(v) for k, v in ids.items()}
        self._by_id: dict[int, Any] = {}

    def id_for(self, schema_file: str) -> int:
        return self._ids[schema_file]

    def files(self) -> list[str]:
        return sorted(self._ids)

    def schema(self, schema_file: str) -> Any:
        return parse_schema_file(self.schemas_dir / schema_file)

    def by_id(self, schema_id: int) -> Any:
        if schema_id not in self._by_id:
            for name, sid in self._ids.items():
                if sid == schema_id:
                    self._by_id[schema_id] = self.schema(name)
                    break
            else:
                raise DecodeError("UnknownSchemaId", f"Avro message names schema id {schema_id}, unknown here")
        return self._by_id[schema_id]


@lru_cache(maxsize=64)
def parse_schema_file(path: Path) -> Any:
    return fastavro.parse_schema(json.loads(path.read_text()))


class Codec:
    def __init__(self, registry: LocalSchemaRegistry) -> None:
        self.registry = registry

    def decode(self, data: bytes | None) -> Any:
        """bytes -> a JSON-like value; raise DecodeError saying what is wrong with the bytes."""
        if not data:
            raise DecodeError("EmptyMessage", "the message has no value (null or empty bytes)")
        if data[0] == MAGIC_BYTE:
            return self._decode_avro(data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(
                "UndecodableBytes",
                f"neither JSON (not UTF-8 at byte {exc.start}) nor Confluent Avro (first byte is not 0)",
            ) from exc
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DecodeError(
                "InvalidJson", f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from exc

    def _decode_avro(self, data: bytes) -> Any:
        if len(data) < _HEADER.size:
            raise DecodeError("UndecodableBytes", "starts with the Avro magic byte but is shorter than its header")
        _, schema_id = _HEADER.unpack_from(data)
        schema = self.registry.by_id(schema_id)
        try:
            return from_avro_datum(fastavro.schemaless_reader(io.BytesIO(data[_HEADER.size :]), schema))
        except Exception as exc:  # fastavro raises many types for corrupt input
            raise DecodeError(
                "InvalidAvro", f"Avro body does not match schema id {schema_id}: {type(exc).__name__}: {exc}"
            ) from exc

    def encode_avro(self, record: dict[str, Any], schema_file: str) -> bytes:
        """Encode a JSON-shaped record (`model.model_dump(mode="json")`) with a topic's schema."""
        schema = self.registry.schema(schema_file)
        buf = io.BytesIO()
        buf.write(_HEADER.pack(MAGIC_BYTE, self.registry.id_for(schema_file)))
        fastavro.schemaless_writer(buf, schema, to_avro_datum(record, schema))
        return buf.getvalue()


def to_avro_datum(record: dict[str, Any], schema: Any) -> Any:
    """A JSON-shaped record (`model.model_dump(mode="json")`) as the datum fastavro writes with the parsed
    topic schema `schema`: a topic's schema is a union of records named after event_type."""
    if isinstance(schema, list):
        return (f"{AVRO_NAMESPACE}.{record['event_type']}", record)
    return record


def from_avro_datum(datum: Any) -> Any:
    """A datum fastavro read back as the JSON-shaped value the core's pydantic models accept."""
    return datum


def encode_json(model: BaseModel) -> bytes:
    return model.model_dump_json(exclude_none=False).encode()
