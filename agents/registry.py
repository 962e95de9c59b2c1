"""A Confluent-compatible schema registry (INVENTORY_SCHEMA_REGISTRY_URL), through confluent-kafka's client.

- Input: an Avro record names its writer's schema by registry id; `AvroDeserializer` fetches that schema
  (cached) and resolves it against the fleet's reader schema, the topic's file in schemas/. A writer schema
  that evolved BACKWARD-compatibly (a field added with a default, one removed) is read the fleet's way.
- Output: with a registry configured, every record of an output or view topic is produced as Avro under the
  subject `<topic>-value` (TopicNameStrategy). The fleet does not register schemas as it produces
  (`auto.register.schemas` off; INVENTORY_SCHEMA_REGISTRY_AUTO_REGISTER turns it on):
  `python -m agents schemas register` registers them, and a worker checks at start that every subject it
  will write to has its schema, instead of failing on its first record.
- Without a registry, Avro input is read with the ids pinned in schemas/local-registry.yaml, an offline
  fallback (agents/codec.py), and outputs are JSON.

A registry that does not answer is retried for `RETRY_SECONDS`, then `RegistryUnavailable` stops the
worker's stream application (which starts again on the same state): a record is never dead-lettered
because the registry was down, and never skipped.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

# authlib, which the client imports, warns about its own httpx module on import (and sets its warning to
# "always" as it loads): loaded first, then silenced for the client's import.
import authlib.deprecate  # noqa: F401
import httpx
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

from agents.codec import DecodeError, RegistryUnavailable, from_avro_datum, parse_schema_file, to_avro_datum
from agents.settings import Settings
from agents.topology import Topology

log = logging.getLogger("agents.registry")

# Topics whose records the fleet produces as Avro when a registry is configured: what other systems read.
# Internal command topics stay JSON envelopes (only the fleet reads them).
AVRO_ROLES = ("output", "view")
RETRY_SECONDS = 30.0
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Subject:
    topic_id: str
    name: str  # <topic>-value
    schema_file: str


def client_config(settings: Settings) -> dict[str, Any]:
    assert settings.schema_registry_url is not None
    conf: dict[str, Any] = {"url": settings.schema_registry_url}
    if settings.schema_registry_auth is not None:
        conf["basic.auth.user.info"] = settings.schema_registry_auth.get_secret_value()
    return conf


class RegistrySerde:
    """Avro in and out against one registry, per topic of the topology."""

    def __init__(self, settings: Settings, topology: Topology, client: SchemaRegistryClient | None = None) -> None:
        self.url = settings.schema_registry_url
        self.client = client or SchemaRegistryClient(client_config(settings))
        self.schemas_dir = settings.schemas_dir
        self.auto_register = settings.schema_registry_auto_register
        self.topology = topology
        self._topic_id = {spec.name: tid for tid, spec in topology.topics.items()}
        self._serializers: dict[str, AvroSerializer] = {}
        self._deserializers: dict[str, AvroDeserializer] = {}
        self._contexts: dict[str, SerializationContext] = {}

    # ---- the subjects ----------------------------------------------------------------------------------

    def subjects(self, roles: tuple[str, ...] | None = None) -> list[Subject]:
        """Every topic's value subject (TopicNameStrategy); `roles` narrows them to topics of those roles."""
        return [
            Subject(tid, f"{spec.name}-value", spec.schema_file)
            for tid, spec in self.topology.topics.items()
            if roles is None or spec.role in roles
        ]

    def produced_as_avro(self, topic_id: str) -> bool:
        return self.topology[topic_id].role in AVRO_ROLES

    def schema(self, schema_file: str) -> Schema:
        """The schema file as the serializers send it (stripped), so a lookup by content finds it."""
        return Schema(self._text(schema_file), "AVRO")

    def _text(self, schema_file: str) -> str:
        return (self.schemas_dir / schema_file).read_text().strip()

    def register(self, subject: Subject) -> int:
        """Register `subject`'s schema file under it (the registry keeps the id if it already has it)."""
        return int(self._call(lambda: self.client.register_schema(subject.name, self.schema(subject.schema_file))))

    def missing(self, subjects: list[Subject]) -> list[str]:
        """The subjects among `subjects` that do not hold their schema file's schema (lookup by content)."""
        absent = []
        for subject in subjects:
            schema = self.schema(subject.schema_file)
            try:
                self._call(partial(self.client.lookup_schema, subject.name, schema))
            except SchemaRegistryError as exc:
                if exc.http_status_code != 404:
                    raise
                absent.append(subject.name)
        return absent

    # ---- the serdes ------------------------------------------------------------------------------------

    def _context(self, topic_name: str) -> SerializationContext:
        ctx = self._contexts.get(topic_name)
        if ctx is None:
            ctx = self._contexts[topic_name] = SerializationContext(topic_name, MessageField.VALUE)
        return ctx

    def deserializer(self, topic_id: str) -> AvroDeserializer:
        deserializer = self._deserializers.get(topic_id)
        if deserializer is None:
            deserializer = AvroDeserializer(
                self.client,
                self._text(self.topology[topic_id].schema_file),
                from_dict=lambda datum, ctx: from_avro_datum(datum),
            )
            self._deserializers[topic_id] = deserializer
        return deserializer

    def serializer(self, topic_id: str) -> AvroSerializer:
        serializer = self._serializers.get(topic_id)
        if serializer is None:
            schema_file = self.topology[topic_id].schema_file
            parsed = parse_schema_file(self.schemas_dir / schema_file)
            serializer = AvroSerializer(
                self.client,
                self._text(schema_file),
                to_dict=lambda record, ctx: to_avro_datum(record, parsed),
                conf={"auto.register.schemas": self.auto_register, "use.latest.version": False},
            )
            self._serializers[topic_id] = serializer
        return serializer

    def decode(self, topic_id: str, data: bytes) -> Any:
        """Confluent-framed Avro of topic `topic_id` -> its JSON-shaped value, read with the fleet's schema.
        DecodeError when the bytes are at fault; RegistryUnavailable when the registry is."""
        deserializer = self.deserializer(topic_id)
        ctx = self._context(self.topology[topic_id].name)
        try:
            return self._call(lambda: deserializer(data, ctx))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                schema_id = int.from_bytes(data[1:5], "big") if len(data) >= 5 else -1
                raise DecodeError(
                    "UnknownSchemaId", f"the registry at {self.url} has no schema id {schema_id}: {exc.error_message}"
                ) from exc
            raise DecodeError("InvalidAvro", f"the registry refused the writer's schema: {exc}") from exc
        except RegistryUnavailable:
            raise
        except Exception as exc:  # SerializationError, and fastavro's many errors for a body that does not match
            raise DecodeError("InvalidAvro", f"Avro body does not match its writer's schema: {exc}") from exc

    def encode(self, topic_name: str, record: dict[str, Any]) -> bytes:
        """A JSON-shaped record of the topic named `topic_name` as Confluent-framed Avro."""
        serializer = self.serializer(self._topic_id[topic_name])
        ctx = self._context(topic_name)
        data = self._call(lambda: serializer(record, ctx))
        if data is None:  # pragma: no cover - AvroSerializer returns None only for None
            raise SerializationError(f"no Avro for a record of {topic_name}")
        return bytes(data)

    def _call(self, call: Callable[[], T]) -> T:
        """`call()`, retried while the registry cannot be reached or answers 5xx, for RETRY_SECONDS."""
        deadline = time.monotonic() + RETRY_SECONDS
        delay = 0.1
        while True:
            try:
                return call()
            except (httpx.TransportError, SchemaRegistryError) as exc:
                status = getattr(exc, "http_status_code", None)
                if isinstance(exc, SchemaRegistryError) and status is not None and 0 <= status < 500:
                    raise
                if time.monotonic() >= deadline:
                    raise RegistryUnavailable(f"the schema registry at {self.url} does not answer: {exc}") from exc
                log.warning("schema registry at %s: %s; retrying in %.1f s", self.url, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


def registry_serde(settings: Settings, topology: Topology) -> RegistrySerde | None:
    if not settings.schema_registry_url:
        return None
    return RegistrySerde(settings, topology)
