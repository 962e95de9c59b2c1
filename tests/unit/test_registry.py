"""agents/registry.py on confluent-kafka's own in-memory registry client (no network): Avro input read by the
registry's id of its writer's schema and resolved against the fleet's schema, Avro outputs under
TopicNameStrategy subjects, the subjects a worker needs, and a registry that does not answer.

The same paths against a real registry server: tests/integration/test_registry.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from agents import registry as registry_module
from agents.__main__ import main
from agents.codec import AVRO_NAMESPACE, Codec, DecodeError, LocalSchemaRegistry, RegistryUnavailable
from agents.core.events import parse_input
from agents.dlq import dead_letter
from agents.processors.base import Where
from agents.processors.intake import Intake
from agents.registry import AVRO_ROLES, RegistrySerde
from agents.runtime.app import OutSerializer
from agents.settings import Settings, get_settings
from agents.topology import load_topology
from tests.unit.factories import order_placed_factory

SETTINGS = Settings(schema_registry_url="http://registry.invalid")
TOPOLOGY = load_topology(SETTINGS.topics_file)
ORDERS = TOPOLOGY["orders"]


@pytest.fixture
def serde() -> RegistrySerde:
    return RegistrySerde(SETTINGS, TOPOLOGY, client=MockSchemaRegistryClient({"url": "mock://"}))


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def evolved_orders_schema() -> str:
    """The orders schema as a newer upstream writes it: OrderPlaced with a field the fleet does not know
    (with a default, a BACKWARD-compatible change) and the field order of its first two fields swapped."""
    branches = json.loads((SETTINGS.schemas_dir / ORDERS.schema_file).read_text())
    for branch in branches:
        if branch["name"] == "OrderPlaced":
            branch["fields"] = [branch["fields"][1], branch["fields"][0], *branch["fields"][2:]]
            branch["fields"].append({"name": "sales_channel", "type": "string", "default": "web"})
    return json.dumps(branches)


def upstream_avro(serde: RegistrySerde, schema_text: str, record: dict[str, Any], extra: dict[str, Any]) -> bytes:
    """What an upstream producer with its own schema sends: confluent-kafka's serializer, registering it."""
    serializer = AvroSerializer(
        serde.client,
        schema_text,
        to_dict=lambda r, ctx: (f"{AVRO_NAMESPACE}.{r['event_type']}", {**r, **extra}),
        conf={"auto.register.schemas": True},
    )
    data = serializer(record, SerializationContext(ORDERS.name, MessageField.VALUE))
    assert data is not None
    return bytes(data)


def test_avro_input_is_read_by_the_registrys_id_and_resolved_against_the_fleets_schema(serde: RegistrySerde) -> None:
    local = LocalSchemaRegistry(SETTINGS.schemas_dir)
    offline_ids = {local.id_for(f) for f in local.files()}
    for n in range(max(offline_ids)):  # the registry's ids are its own: push the writer's past the offline file's
        serde.client.register_schema(f"other-{n}-value", Schema(json.dumps({"type": "string", "doc": str(n)}), "AVRO"))
    order = order_placed_factory()
    record = order.model_dump(mode="json")
    data = upstream_avro(serde, evolved_orders_schema(), record, {"sales_channel": "edi"})
    assert int.from_bytes(data[1:5], "big") not in offline_ids  # the offline ids could not read it
    payload = Codec(local, serde).decode(data, "orders")
    assert "sales_channel" not in payload  # resolved against the fleet's schema
    assert parse_input("orders", payload) == order


def test_without_the_topic_the_codec_falls_back_to_the_offline_ids(serde: RegistrySerde) -> None:
    data = upstream_avro(serde, evolved_orders_schema(), order_placed_factory().model_dump(mode="json"), {})
    with pytest.raises(DecodeError) as raised:
        Codec(LocalSchemaRegistry(SETTINGS.schemas_dir), serde).decode(b"\x00\x00\x00\x03\xe7" + data[5:])
    assert raised.value.error == "UnknownSchemaId"


def test_an_id_the_registry_does_not_have_is_unknown_schema_id(serde: RegistrySerde) -> None:
    with pytest.raises(DecodeError) as raised:
        serde.decode("orders", b"\x00\x00\x00\x30\x39" + b"\x02")
    assert raised.value.error == "UnknownSchemaId"
    assert "12345" in raised.value.reason


def test_a_body_that_does_not_match_its_writers_schema_is_invalid_avro(serde: RegistrySerde) -> None:
    data = upstream_avro(serde, evolved_orders_schema(), order_placed_factory().model_dump(mode="json"), {})
    with pytest.raises(DecodeError) as raised:
        serde.decode("orders", data[:5] + b"\xff\xff\xff\xff\xff\xff")
    assert raised.value.error == "InvalidAvro"


def test_outputs_go_avro_under_their_topic_subject_and_internal_topics_stay_json(serde: RegistrySerde) -> None:
    for subject in serde.subjects(AVRO_ROLES):
        serde.register(subject)
    letter = dead_letter(
        source_topic=ORDERS.name,
        source_partition=3,
        source_offset=42,
        error="InvalidJson",
        reason="invalid JSON",
        key=b"acme:ORD-1",
        value=b"{nope",
        headers=None,
        tenant_id="acme",
    )
    json_bytes = letter.model_dump_json().encode()
    dlq, commands = TOPOLOGY["dlq"].name, TOPOLOGY["sku_commands"].name
    serializer = OutSerializer(serde, frozenset({dlq}))
    avro = serializer(json_bytes, SerializationContext(dlq, MessageField.VALUE))
    assert avro[0] == 0
    registered = serde.client.lookup_schema(f"{dlq}-value", serde.schema(TOPOLOGY["dlq"].schema_file))
    assert int.from_bytes(avro[1:5], "big") == registered.schema_id
    assert serde.decode("dlq", avro) == orjson.loads(json_bytes)
    assert serializer(json_bytes, SerializationContext(commands, MessageField.VALUE)) == json_bytes


def test_a_worker_needs_every_output_and_view_subject_registered(serde: RegistrySerde) -> None:
    needed = serde.subjects(AVRO_ROLES)
    assert {TOPOLOGY[s.topic_id].role for s in needed} == set(AVRO_ROLES)
    assert serde.missing(needed) == [s.name for s in needed]
    first = serde.register(needed[0])
    assert serde.register(needed[0]) == first  # registering again keeps the id
    assert serde.missing(needed) == [s.name for s in needed[1:]]
    for subject in needed[1:]:
        serde.register(subject)
    assert serde.missing(needed) == []


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> RegistrySerde:
    monkeypatch.setattr(registry_module, "RETRY_SECONDS", 0.3)
    settings = Settings(schema_registry_url="http://127.0.0.1:1")  # nothing listens on port 1
    return RegistrySerde(settings, TOPOLOGY)


def test_a_registry_that_does_not_answer_stops_intake_instead_of_dead_lettering(unreachable: RegistrySerde) -> None:
    data = b"\x00\x00\x00\x00\x07" + b"\x02"
    with pytest.raises(RegistryUnavailable):
        unreachable.decode("orders", data)
    intake = Intake("orders", Codec(LocalSchemaRegistry(SETTINGS.schemas_dir), unreachable), {})
    with pytest.raises(RegistryUnavailable):
        intake(data, b"acme:ORD-1", 0, None, Where(ORDERS.name, 0, 1))


def test_schemas_commands_need_a_registry_and_say_so_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INVENTORY_SCHEMA_REGISTRY_URL", raising=False)
    assert main(["schemas", "check"]) == 2
    assert capsys.readouterr().err.strip() == "error: no schema registry: set INVENTORY_SCHEMA_REGISTRY_URL"
    monkeypatch.setattr(registry_module, "RETRY_SECONDS", 0.3)
    monkeypatch.setenv("INVENTORY_SCHEMA_REGISTRY_URL", "http://127.0.0.1:1")
    get_settings.cache_clear()
    assert main(["schemas", "register", "--json"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: schema registry at http://127.0.0.1:1: ")
