"""deploy/k8s: the manifests validate against the Kubernetes JSON schemas (kubernetes-validate, strict) and
agree with the worker's settings, its HTTP pages and each other."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from tests.deploy.support import (
    K8S,
    ROOT,
    TOPICS_COMMAND,
    WORKER_COMMAND,
    inventory_names,
    load_yaml,
    load_yaml_all,
    settings_env_names,
    settings_from,
)

# The newest Kubernetes whose schemas kubernetes-validate bundles, and an older one still in wide use.
K8S_VERSIONS = sorted({latest_version(), "1.30"})
# Manifests kept out of kustomization.yaml on purpose (see the comments at their top).
NOT_IN_KUSTOMIZATION = {"secret.example.yaml", "servicemonitor.yaml"}
# Kinds whose schemas come from an operator's CRD, not from Kubernetes.
CRD_KINDS = {"ServiceMonitor"}
# INVENTORY_* names the deployment provides before agents/settings.py reads them: allowed only as keys of
# an (optional) Secret, never as plain configuration. Reported; remove an entry once Settings has the field.
PENDING_SETTINGS: set[str] = set()
# Settings of the faust runtime that Quix Streams has no use for: no manifest may set them any more.
REMOVED_SETTINGS = {"INVENTORY_WEB_ADVERTISED_HOST", "INVENTORY_STANDBY_REPLICAS"}

NAMESPACED = {"ConfigMap", "Secret", "Service", "StatefulSet", "PodDisruptionBudget", "Job", "ServiceMonitor"}


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def all_resources() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in manifest_files() for doc in load_yaml_all(path)]


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in all_resources() if doc["kind"] == kind}


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(K8S / "kustomization.yaml")
    return data


def statefulset() -> dict[str, Any]:
    return resources("StatefulSet")["inventory-worker"]


def worker_container() -> dict[str, Any]:
    containers = statefulset()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def job_container() -> dict[str, Any]:
    container: dict[str, Any] = resources("Job")["inventory-topics"]["spec"]["template"]["spec"]["containers"][0]
    return container


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def resolved_env(container: dict[str, Any]) -> dict[str, str]:
    """What the container's environment holds: ConfigMaps and Secrets of envFrom, then env (which wins)."""
    configmaps, secrets = resources("ConfigMap"), resources("Secret")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update({k: str(v) for k, v in configmaps[source["configMapRef"]["name"]]["data"].items()})
        if "secretRef" in source:
            secret = secrets.get(source["secretRef"]["name"])
            if secret is None:
                assert source["secretRef"].get("optional") is True, "a Secret that is not in the manifests"
            else:
                env.update({k: str(v) for k, v in secret.get("stringData", {}).items()})
    env.update(plain_env(container))
    return env


def test_kustomization_lists_every_manifest() -> None:
    listed = kustomization()["resources"]
    for name in listed:
        assert (K8S / name).is_file(), f"kustomization.yaml lists {name}, which does not exist"
    on_disk = {p.name for p in manifest_files()}
    assert set(listed) == on_disk - NOT_IN_KUSTOMIZATION, (
        "every manifest in deploy/k8s is in kustomization.yaml, except " + ", ".join(sorted(NOT_IN_KUSTOMIZATION))
    )
    namespace = resources("Namespace")
    assert list(namespace) == [kustomization()["namespace"]]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_validates_against_kubernetes_schema(path: Path, version: str) -> None:
    docs = load_yaml_all(path)
    assert docs, f"{path.name} holds no resource"
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message}")


def test_strict_validation_rejects_an_unknown_field() -> None:
    broken = copy.deepcopy(statefulset())
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, latest_version(), strict=True)


def test_servicemonitor_shape() -> None:
    (monitor,) = resources("ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    service = resources("Service")["inventory-worker"]
    for key, value in spec["selector"]["matchLabels"].items():
        assert service["metadata"]["labels"].get(key) == value, "the ServiceMonitor selects the headless Service"
    assert service["metadata"]["labels"][spec["jobLabel"]] == "inventory-worker", "job label = inventory-worker"
    ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"


def test_namespaced_resources_use_the_kustomization_namespace() -> None:
    namespace = kustomization()["namespace"]
    for name, doc in all_resources():
        if doc["kind"] in NAMESPACED:
            assert doc["metadata"].get("namespace", namespace) == namespace, f"{name}: {doc['kind']}"


def test_every_inventory_env_name_is_a_setting() -> None:
    fields = settings_env_names()
    plain: dict[str, str] = {}  # name -> where
    secret_keys: dict[str, str] = {}
    for filename, doc in all_resources():
        kind = doc["kind"]
        if kind == "ConfigMap":
            for key in inventory_names(doc.get("data", {})):
                plain[key] = f"{filename} ConfigMap {doc['metadata']['name']}"
        if kind == "Secret":
            for key in inventory_names({**doc.get("stringData", {}), **doc.get("data", {})}):
                secret_keys[key] = f"{filename} Secret {doc['metadata']['name']}"
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            for entry in container.get("env", []):
                if entry["name"].upper().startswith("INVENTORY_"):
                    plain[entry["name"]] = f"{filename} {kind} container {container['name']}"
    assert plain, "the manifests set no INVENTORY_* variable at all"
    unknown = {name: where for name, where in plain.items() if name not in fields}
    assert not unknown, f"not fields of agents.settings.Settings: {unknown}"
    unknown_secret = {n: w for n, w in secret_keys.items() if n not in fields and n not in PENDING_SETTINGS}
    assert not unknown_secret, f"not fields of agents.settings.Settings: {unknown_secret}"


def test_statefulset_shape() -> None:
    sts = statefulset()
    spec = sts["spec"]
    assert spec["replicas"] == 3
    headless = resources("Service")[spec["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None", "serviceName must be a headless Service"
    assert headless["spec"].get("publishNotReadyAddresses") is True
    pod_labels = spec["template"]["metadata"]["labels"]
    for key, value in spec["selector"]["matchLabels"].items():
        assert pod_labels[key] == value
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60
    container = worker_container()
    assert container["command"] + container.get("args", []) == WORKER_COMMAND
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert any(
        term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= pod_labels.items()
        and term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        for term in anti
    ), "preferred anti-affinity between the worker pods, per node"
    assert (
        resources("Job")["inventory-topics"]["spec"]["template"]["spec"]["containers"][0]["image"]
        == (container["image"])
    ), "the topics Job runs the worker's image"


def test_probes_point_at_the_worker_pages() -> None:
    container = worker_container()
    env = resolved_env(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(env["INVENTORY_WEB_PORT"]), "the container port is the one the worker serves on"
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        http = container[probe]["httpGet"]
        assert http["path"] == path, probe
        port = http["port"]
        assert (ports[port] if isinstance(port, str) else port) == int(env["INVENTORY_WEB_PORT"]), probe
    assert env["INVENTORY_WEB_HOST"] == "0.0.0.0", "the worker binds all interfaces, or probes cannot reach it"


def test_static_membership_comes_from_the_pod() -> None:
    container = worker_container()
    env = container["env"]
    by_name = {e["name"]: e for e in env}
    assert by_name["INVENTORY_MEMBER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # No request forwarding: a worker needs no address of its own to advertise.
    assert not REMOVED_SETTINGS & set(resolved_env(container)), "settings of the faust runtime"
    # $(VAR) expands only variables defined earlier in the list: nothing may refer to one that is not.
    for index, entry in enumerate(env):
        for name in re.findall(r"\$\((\w+)\)", entry.get("value", "")):
            assert name in {e["name"] for e in env[:index]}, f"{entry['name']} refers to $({name}), not defined before"


def test_removed_settings_are_set_nowhere() -> None:
    for filename, doc in all_resources():
        text = yaml.safe_dump(doc)
        for name in REMOVED_SETTINGS:
            assert name not in text, f"{filename}: {doc['kind']}/{doc['metadata']['name']} still sets {name}"


def test_example_api_tokens_parse() -> None:
    """The example Secret's INVENTORY_API_TOKENS is in the token=tenant form agents/settings.py reads."""
    from pydantic import SecretStr

    from agents.settings import Settings, token_tenants

    (secret,) = resources("Secret").values()
    raw = secret["stringData"]["INVENTORY_API_TOKENS"]
    tenants = token_tenants(Settings(_env_file=None, api_tokens=SecretStr(raw)))
    assert len(tenants) == raw.count(",") + 1 and all(tenants.values())


def test_data_dir_is_a_writable_claimed_volume() -> None:
    spec = statefulset()["spec"]
    container = worker_container()
    data_dir = resolved_env(container)["INVENTORY_DATA_DIR"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert data_dir in mounts, f"nothing is mounted at INVENTORY_DATA_DIR={data_dir}"
    mount = mounts[data_dir]
    assert not mount.get("readOnly", False)
    claims = {t["metadata"]["name"]: t for t in spec["volumeClaimTemplates"]}
    assert mount["name"] in claims, "the data volume comes from a volumeClaimTemplate"
    assert claims[mount["name"]]["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_non_root_read_only_root_filesystem() -> None:
    for kind, name, container in (
        ("StatefulSet", "inventory-worker", worker_container()),
        ("Job", "inventory-topics", job_container()),
    ):
        pod = resources(kind)[name]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly", False)}
        assert "/tmp" in writable, f"{kind} {name}: /tmp must be a writable volume"
    assert statefulset()["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 10001, (
        "fsGroup makes the data volume writable for the non-root user"
    )


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_resources_fit_a_two_core_node() -> None:
    resources_ = worker_container()["resources"]
    assert set(resources_) == {"requests", "limits"}
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources_[section])
    requests = cpu_cores(resources_["requests"]["cpu"])
    assert cpu_cores(resources_["limits"]["cpu"]) <= 2
    assert requests * statefulset()["spec"]["replicas"] <= 2, "all three workers can be scheduled on one 2-core node"


def test_topics_configmap_is_the_repository_topics_yaml() -> None:
    topics = resources("ConfigMap")["inventory-topics"]
    assert topics["data"]["topics.yaml"] == (ROOT / "topics.yaml").read_text(), (
        "deploy/k8s/configmap.yaml has drifted from topics.yaml: copy topics.yaml into it again"
    )
    for kind, name, container in (
        ("StatefulSet", "inventory-worker", worker_container()),
        ("Job", "inventory-topics", job_container()),
    ):
        topics_file = Path(resolved_env(container)["INVENTORY_TOPICS_FILE"])
        volumes = {v["name"]: v for v in resources(kind)[name]["spec"]["template"]["spec"]["volumes"]}
        mounts = {Path(m["mountPath"]): m for m in container["volumeMounts"]}
        mount = mounts.get(topics_file.parent)
        assert mount is not None, f"{kind} {name}: nothing mounted at {topics_file.parent}"
        assert volumes[mount["name"]]["configMap"]["name"] == "inventory-topics"
        assert topics_file.name in topics["data"]


def test_services_and_disruption_budget() -> None:
    services = resources("Service")
    pod_labels = statefulset()["spec"]["template"]["metadata"]["labels"]
    api = services["inventory-api"]
    assert api["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert [(p["port"], p["targetPort"]) for p in api["spec"]["ports"]] == [(6066, "http")]
    for service in services.values():
        assert service["spec"]["selector"].items() <= pod_labels.items()
    pdb = resources("PodDisruptionBudget")["inventory-worker"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_topics_job_applies_topics() -> None:
    job = resources("Job")["inventory-topics"]
    container = job_container()
    assert container["command"] + container.get("args", []) == TOPICS_COMMAND
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}
    assert "INVENTORY_KAFKA_BOOTSTRAP" in resolved_env(container)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not on PATH (optional extra check)")
def test_kustomize_renders() -> None:
    result = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc)
    expected = sorted(doc["kind"] for name in kustomization()["resources"] for doc in load_yaml_all(K8S / name))
    assert kinds == expected


def test_settings_parse_the_worker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = resolved_env(worker_container())
    settings = settings_from(env, monkeypatch)
    assert str(settings.data_dir) == env["INVENTORY_DATA_DIR"]
    assert settings.web_port == int(env["INVENTORY_WEB_PORT"])
    assert settings.replication_factor == 3, "a production cluster has three brokers"
    assert settings.processing_guarantee == env["INVENTORY_PROCESSING_GUARANTEE"]
    assert settings.log_json is True, "production logs one JSON object per line"


def test_topics_configmap_has_no_changelog_topics() -> None:
    """Quix derives and creates the state changelogs itself; topics.yaml declares the fleet's own topics."""
    contract = yaml.safe_load(resources("ConfigMap")["inventory-topics"]["data"]["topics.yaml"])
    roles = {topic["role"] for topic in contract["topics"].values()}
    assert "changelog" not in roles
    views = {tid for tid, topic in contract["topics"].items() if topic["role"] == "view"}
    assert views, "the read models every worker serves come from view topics"
    for tid in views:
        assert contract["topics"][tid]["cleanup_policy"] == "compact", tid
