"""docker-compose.yml: the services exist and agree with the worker's settings, Kafka's listeners,
Prometheus' scrape targets and the files of the repository they mount."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.support import (
    COMPOSE_FILE,
    ROOT,
    TOPICS_COMMAND,
    WORKER_COMMAND,
    WORKER_JOB,
    dockerfile_instructions,
    inventory_names,
    load_yaml,
    settings_env_names,
    settings_from,
)

SERVICES = {"kafka", "topics", "worker-1", "worker-2", "prometheus", "grafana"}
WORKERS = ("worker-1", "worker-2")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return data


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def dockerfile_cmd() -> list[str]:
    cmds = [args for op, args in dockerfile_instructions() if op == "CMD"]
    result: list[str] = json.loads(cmds[-1])
    return result


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    if cmd is None:
        return dockerfile_cmd()
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume["target"]
        else:
            source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def container_path_to_repo(service: dict[str, Any], container_path: str) -> Path:
    """The repository file that a bind mount puts at container_path."""
    for source, target in bind_mounts(service):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return (ROOT / source).resolve() / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"nothing of the repository is mounted at {container_path}")


def test_parses_and_has_the_services() -> None:
    assert set(services()) >= SERVICES, f"missing: {SERVICES - set(services())}"


def test_every_inventory_env_name_is_a_setting() -> None:
    fields = settings_env_names()
    seen = False
    for name, service in services().items():
        names = inventory_names(environment(service))
        seen = seen or bool(names)
        unknown = names - fields
        assert not unknown, f"{name}: not fields of agents.settings.Settings: {sorted(unknown)}"
    assert seen, "no service sets an INVENTORY_* variable"


def kafka_listeners() -> dict[str, tuple[str, int]]:
    """Advertised listener name -> (host, port), checked against the bound listeners and protocol map."""
    env = environment(services()["kafka"])

    def parse(value: str) -> dict[str, tuple[str, int]]:
        result = {}
        for item in value.split(","):
            match = re.fullmatch(r"\s*(\w+)://([^:]*):(\d+)\s*", item)
            assert match, f"cannot read listener {item!r}"
            result[match[1]] = (match[2], int(match[3]))
        return result

    bound = parse(env["KAFKA_LISTENERS"])
    advertised = parse(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    for name, (_, port) in advertised.items():
        assert name in bound and bound[name][1] == port, f"advertised listener {name} is not bound on {port}"
        assert name in protocols, f"listener {name} has no security protocol"
    return advertised


def test_clients_use_the_kafka_service_listener() -> None:
    advertised = set(kafka_listeners().values())
    for name in (*WORKERS, "topics"):
        bootstrap = environment(services()[name])["INVENTORY_KAFKA_BOOTSTRAP"]
        for server in bootstrap.split(","):
            host, port = server.strip().rsplit(":", 1)
            assert host == "kafka", f"{name}: {server} is not the kafka service"
            assert (host, int(port)) in advertised, f"{name}: {server} is not an advertised listener of kafka"


def test_kafka_is_a_pinned_apache_kafka_4_in_kraft_mode() -> None:
    kafka = services()["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"]), kafka["image"]
    env = environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert f"{controller}://" in env["KAFKA_LISTENERS"]
    assert f"{controller}:" in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    assert "healthcheck" in kafka, "topics waits for a healthy broker"


def test_start_order() -> None:
    svc = services()
    assert svc["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert command(svc["topics"]) == TOPICS_COMMAND
    for name in WORKERS:
        assert svc[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_app_services_build_the_dockerfile() -> None:
    for name in ("topics", *WORKERS):
        build = services()[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (ROOT / context / dockerfile).resolve() == (ROOT / "Dockerfile").resolve()


def test_workers_are_distinct_members_with_their_own_data() -> None:
    svc = services()
    members, volumes, host_ports = set(), set(), set()
    for name in WORKERS:
        worker = svc[name]
        env = environment(worker)
        assert command(worker) == WORKER_COMMAND
        members.add(env["INVENTORY_MEMBER_ID"])
        assert env["INVENTORY_WEB_HOST"] == "0.0.0.0"
        data_dir = env["INVENTORY_DATA_DIR"]
        mounted = [v.split(":")[0] for v in worker["volumes"] if v.split(":")[1] == data_dir]
        assert mounted, f"{name}: nothing mounted at INVENTORY_DATA_DIR={data_dir}"
        assert mounted[0] in compose()["volumes"], f"{name}: the data volume is a named volume"
        volumes.add(mounted[0])
        for mapping in worker.get("ports", []):
            host, container = str(mapping).rsplit(":", 1)
            assert int(container) == int(env["INVENTORY_WEB_PORT"])
            host_ports.add(host)
    assert len(members) == len(WORKERS), "INVENTORY_MEMBER_ID differs per worker"
    groups = {environment(svc[name]).get("INVENTORY_APP_ID", "inventory-fleet") for name in WORKERS}
    assert len(groups) == 1, "the workers are members of one consumer group (INVENTORY_APP_ID)"
    assert len(volumes) == len(WORKERS), "each worker has its own data volume"
    assert len(host_ports) == len(WORKERS), "published host ports differ"


def prometheus_config_path() -> Path:
    prometheus = services()["prometheus"]
    args = command(prometheus)
    config = next(a.split("=", 1)[1] for a in args if a.startswith("--config.file="))
    return container_path_to_repo(prometheus, config)


def test_prometheus_scrapes_the_worker_services_on_their_port() -> None:
    path = prometheus_config_path()
    assert path.is_file(), path
    config = load_yaml(path)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == WORKER_JOB]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = sorted(t for static in job["static_configs"] for t in static["targets"])
    expected = sorted(f"{name}:{environment(services()[name])['INVENTORY_WEB_PORT']}" for name in WORKERS)
    assert targets == expected
    for rule_file in config.get("rule_files", []):
        assert (path.parent / rule_file).is_file(), rule_file


def test_mounted_files_exist() -> None:
    for name, service in services().items():
        for source, _ in bind_mounts(service):
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"


def test_grafana_provisioning_matches_the_mounts() -> None:
    grafana = services()["grafana"]
    targets = dict((t, s) for s, t in bind_mounts(grafana))
    assert "/etc/grafana/provisioning" in targets
    provisioning = container_path_to_repo(grafana, "/etc/grafana/provisioning")
    datasources = [ds for f in (provisioning / "datasources").glob("*.yml") for ds in load_yaml(f)["datasources"]]
    (prometheus,) = [ds for ds in datasources if ds["type"] == "prometheus"]
    assert prometheus["url"] == "http://prometheus:9090"
    providers = [p for f in (provisioning / "dashboards").glob("*.yml") for p in load_yaml(f)["providers"]]
    assert providers
    for provider in providers:
        folder = container_path_to_repo(grafana, provider["options"]["path"])
        assert list(folder.glob("*.json")), f"no dashboard in {folder}"
    home = environment(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert container_path_to_repo(grafana, home).is_file()


def test_settings_parse_each_service_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("topics", *WORKERS):
        env = environment(services()[name])
        settings = settings_from(env, monkeypatch)
        assert settings.kafka_bootstrap == env["INVENTORY_KAFKA_BOOTSTRAP"], name


def test_the_single_broker_can_run_transactions() -> None:
    """INVENTORY_PROCESSING_GUARANTEE=exactly-once uses Kafka transactions: the one broker must be able to
    host the transaction state log (replication factor and min ISR of at most its one node)."""
    env = environment(services()["kafka"])
    assert int(env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) == 1
    assert int(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == 1
    assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 1


# --- the Compose Specification ---------------------------------------------------------------------------
# The official JSON schema of the compose spec (compose-spec/compose-spec, schema/compose-spec.json), as
# check-jsonschema ships it (pinned in the dev extras: the schema changes only with that pin), validated
# with jsonschema (pinned too).


def compose_spec_schema() -> dict[str, Any]:
    from importlib.resources import files

    schema: dict[str, Any] = json.loads(
        (files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text(encoding="utf-8")
    )
    return schema


@cache
def compose_spec_validator() -> Any:
    from jsonschema import Draft202012Validator

    schema = compose_spec_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def compose_spec_errors(document: Any) -> list[str]:
    validator = compose_spec_validator()
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


def test_the_schema_is_the_compose_specification() -> None:
    schema = compose_spec_schema()
    assert (schema["title"], schema["$id"]) == ("Compose Specification", "compose_spec.json")
    assert {"services", "volumes", "networks"} <= set(schema["properties"])


def test_docker_compose_yml_follows_the_compose_specification() -> None:
    assert compose_spec_errors(compose()) == []


@pytest.mark.parametrize(
    ("break_it", "complaint"),
    [
        (lambda c: c["services"]["worker-1"].update(imagee="x"), "imagee"),  # a misspelt key
        (lambda c: c["services"]["prometheus"].update(ports=[{"target": 9090, "protocol": 5}]), "protocol"),
        (lambda c: c["services"]["worker-1"].update(depends_on={"kafka": {"condition": "ready"}}), "ready"),
        (lambda c: c["services"]["grafana"].update(restart=["always"]), "restart"),  # a list, not a string
        (lambda c: c.update(volumez={}), "volumez"),  # unknown top-level key
    ],
)
def test_an_invalid_compose_file_fails_the_schema(break_it: Any, complaint: str) -> None:
    broken = compose()
    break_it(broken)
    errors = compose_spec_errors(broken)
    assert errors, "the schema accepted a broken compose file"
    assert any(complaint in error for error in errors), errors
