"""Serialisation at the edge: JSON (validated by the core's pydantic models) and Avro in the Confluent
wire format (magic byte 0, 4-byte big-endian schema id, Avro binary body), told apart per message."""

from __future__ import annotations

import io
import json
import struct
from decimal import Decimal, localcontext
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

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


class RegistryUnavailable(RuntimeError):
    """The schema registry did not answer (agents/registry.py retries first): not the record's fault, so
    the record is neither dead-lettered nor skipped."""


class LocalSchemaRegistry:
    """Schema ids for the schemas in schemas/, as pinned in schemas/local-registry.yaml: the OFFLINE
    FALLBACK, used only when no schema registry is configured (INVENTORY_SCHEMA_REGISTRY_URL unset).

    Producers that speak the Confluent wire format without a registry use these ids; a record with any other
    id is dead-lettered as UnknownSchemaId. With a registry, ids are the registry's (agents/registry.py) and
    this file is not read for decoding. `python -m agents topics check` verifies it.
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


class AvroDecoder(Protocol):
    """A schema registry's reader (agents/registry.py): Confluent-framed Avro of a topic -> a JSON-like value."""

    def decode(self, topic_id: str, data: bytes) -> Any: ...


class Codec:
    """Decodes what upstream sends: JSON, or Avro in the Confluent wire format. With a schema registry
    (`avro`), Avro is read by the registry's id of its writer's schema and resolved against the fleet's
    schema of the topic; without one, with the ids of schemas/local-registry.yaml (the offline fallback)."""

    def __init__(self, registry: LocalSchemaRegistry, avro: AvroDecoder | None = None) -> None:
        self.registry = registry
        self.avro = avro

    def decode(self, data: bytes | None, topic_id: str | None = None) -> Any:
        """bytes of topic `topic_id` -> a JSON-like value; raise DecodeError saying what is wrong with them."""
        if not data:
            raise DecodeError("EmptyMessage", "the message has no value (null or empty bytes)")
        if data[0] == MAGIC_BYTE:
            if self.avro is not None and topic_id is not None:
                return self.avro.decode(topic_id, data)
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
    """A JSON-shaped record (`model.model_dump(mode="json")`) as the datum fastavro writes with the topic
    schema `schema` (parsed by fastavro, or the .avsc's JSON): a topic's schema is a union of records named
    after event_type, picked here by the record's event_type.

    Guided by the schema, a decimal field's value (a decimal string, an int or a Decimal) becomes a Decimal
    for Avro's `decimal` logical type. A value with more decimal places than the field's scale, or more
    digits than its precision, raises ValueError naming the field: it is never rounded here (the core
    quantizes what it computes, and its input models refuse more than 6 decimal places). Timestamps stay
    ISO-8601 strings (docs/ARCHITECTURE.md, "Wire format"). Fields the schema does not know are not written:
    tests/integration/test_avro_contract.py checks that no record the fleet emits has one."""
    names = _named_types(schema)
    if isinstance(schema, list):
        event_type = record.get("event_type") if isinstance(record, dict) else None
        branch = _union_record(schema, event_type, names)
        if branch is None and event_type is None and len(schema) == 1:  # a view record: no event_type
            branch = _resolve(schema[0], names)
        if branch is None:
            raise ValueError(
                f"event_type {event_type!r} is not one of the records of this topic's schema "
                f"({', '.join(_short(_type_name(b)) for b in schema if isinstance(b, dict))})"
            )
        return (_type_name(branch), _to_avro(record, branch, names, str(event_type)))
    return _to_avro(record, schema, names, "")


def from_avro_datum(datum: Any) -> Any:
    """A datum fastavro read back as the JSON-shaped value the core's pydantic models accept: decimals
    become decimal strings ("12.5", "250000", "0.000001": the value, without the scale's trailing zeros);
    everything else is already JSON-shaped."""
    if isinstance(datum, Decimal):
        return decimal_text(datum)
    if isinstance(datum, dict):
        return {k: from_avro_datum(v) for k, v in datum.items()}
    if isinstance(datum, list | tuple):
        return [from_avro_datum(v) for v in datum]
    return datum


def decimal_text(value: Decimal) -> str:
    """A Decimal as a plain decimal string without trailing zeros (never an exponent)."""
    with localcontext() as ctx:
        ctx.prec = max(len(value.as_tuple().digits), 1)  # normalize() rounds to the context's precision
        text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _type_name(node: dict[str, Any]) -> str:
    name = str(node["name"])
    if "." in name:
        return name
    return f"{node.get('namespace', AVRO_NAMESPACE)}.{name}"


def _named_types(schema: Any) -> dict[str, Any]:
    """Full name -> definition of every named type of a schema (fastavro's parsed `__named_schemas`, or
    found by walking an unparsed schema)."""
    first = schema[0] if isinstance(schema, list) and schema else schema
    if isinstance(first, dict) and "__named_schemas" in first:
        return dict(first["__named_schemas"])
    found: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for n in node:
                walk(n)
        elif isinstance(node, dict):
            if node.get("type") in ("record", "enum", "fixed"):
                found[_type_name(node)] = node
            for fld in node.get("fields", ()):
                walk(fld["type"])
            for key in ("items", "values"):
                if key in node:
                    walk(node[key])
            if isinstance(node.get("type"), dict | list):
                walk(node["type"])

    walk(schema)
    return found


def _resolve(node: Any, names: dict[str, Any]) -> Any:
    if isinstance(node, str):
        if node in names:
            return names[node]
        if f"{AVRO_NAMESPACE}.{node}" in names:
            return names[f"{AVRO_NAMESPACE}.{node}"]
    if isinstance(node, dict) and isinstance(node.get("type"), dict | list) and "logicalType" not in node:
        return _resolve(node["type"], names)  # {"type": {...}} wrapping a complex type
    return node


def _union_record(branches: list[Any], event_type: Any, names: dict[str, Any]) -> dict[str, Any] | None:
    for branch in branches:
        resolved = _resolve(branch, names)
        if (
            isinstance(resolved, dict)
            and resolved.get("type") == "record"
            and _short(_type_name(resolved)) == event_type
        ):
            return resolved
    return None


def _to_avro(value: Any, node: Any, names: dict[str, Any], path: str) -> Any:
    node = _resolve(node, names)
    if isinstance(node, list):  # a union: null, or its one non-null branch (the schemas have no other)
        if value is None:
            return None
        others = [b for b in node if b != "null"]
        return _to_avro(value, others[0], names, path) if len(others) == 1 else value
    if not isinstance(node, dict):
        return value
    if node.get("logicalType") == "decimal":
        return _to_decimal(value, int(node["precision"]), int(node.get("scale", 0)), path)
    kind = node.get("type")
    if kind == "record" and isinstance(value, dict):
        out = dict(value)
        for fld in node["fields"]:
            name = fld["name"]
            if name in value:
                out[name] = _to_avro(value[name], fld["type"], names, f"{path}.{name}" if path else name)
        return out
    if kind == "array" and isinstance(value, list | tuple):
        return [_to_avro(v, node["items"], names, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "map" and isinstance(value, dict):
        return {k: _to_avro(v, node["values"], names, f"{path}.{k}") for k, v in value.items()}
    return value


def _to_decimal(value: Any, precision: int, scale: int, path: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        return value  # not a decimal at all: fastavro says what is wrong with it
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except ArithmeticError as exc:
        raise ValueError(f"{path}: {value!r} is not a decimal number") from exc
    if not number.is_finite():
        raise ValueError(f"{path}: {value!r} is not a finite decimal number")
    too_long = ValueError(f"{path}: {value} has more than {precision} digits, the precision of its Avro decimal")
    try:
        with localcontext() as ctx:
            ctx.prec = precision + 1  # quantize to the scale exactly, or fail: never round to the context
            scaled = number.quantize(Decimal(1).scaleb(-scale))
    except ArithmeticError:
        raise too_long from None
    if scaled != number:
        raise ValueError(
            f"{path}: {value} has more than {scale} decimal places, the scale of its Avro "
            f"decimal({precision},{scale}); it is not rounded: quantize it first"
        )
    if len(scaled.as_tuple().digits) > precision:
        raise too_long
    return scaled


def encode_json(model: BaseModel) -> bytes:
    return model.model_dump_json(exclude_none=False).encode()
