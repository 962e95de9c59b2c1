"""Command line: `python -m agents worker | topics apply | topics check | schemas register | schemas check |
demo | produce | sync | process-backorders`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.metadata import PackageNotFoundError, version

from confluent_kafka import KafkaError, KafkaException

from agents.settings import Settings, get_settings, unknown_variables
from agents.topology import Topology, load_topology


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents", description="inventory allocation worker fleet")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run a worker (applies topics.yaml first)")
    worker.add_argument("--loglevel", default=None)
    topics = sub.add_parser("topics", help="topic administration from topics.yaml")
    topics.add_argument("action", choices=["apply", "check"])
    topics.add_argument("--json", action="store_true", help="check: print the result as one JSON object")
    schemas = sub.add_parser("schemas", help="the fleet's Avro schemas in the schema registry")
    schemas.add_argument(
        "action",
        choices=["register", "check"],
        help="register: every topic's schema under <topic>-value; check: list the subjects that lack theirs",
    )
    schemas.add_argument("--json", action="store_true", help="print the result as one JSON object")
    demo = sub.add_parser("demo", help="produce a demo feed and show a live summary")
    demo.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C)")
    produce = sub.add_parser("produce", help="produce JSON events (one per line) to an input topic")
    produce.add_argument("topic_id", help="topic id from topics.yaml, e.g. stock_movements")
    produce.add_argument("file", help="file of JSON lines, - for standard input")
    sync = sub.add_parser("sync", help="reconcile orders with OMS snapshots (OrderSnapshot, one per line)")
    sync.add_argument("--file", required=True, help="file of OrderSnapshot JSON lines, - for standard input")
    sync.add_argument("--attempts", type=int, default=5, help="sends per snapshot at most (default 5)")
    sync.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for an outcome per attempt (default 30)"
    )
    sync.add_argument("--json", action="store_true", help="print the report as one JSON object")
    process = sub.add_parser("process-backorders", help="re-run a tenant's backorder queues now (via the HTTP API)")
    process.add_argument("--tenant", required=True)
    process.add_argument("--url", default=None, help="a worker's base URL (default: this host's INVENTORY_WEB_PORT)")
    process.add_argument("--token", default=None, help="bearer token for the tenant (default: $INVENTORY_API_TOKEN)")
    process.add_argument("--json", action="store_true", help="print the worker's answer as JSON")
    args = parser.parse_args(argv)
    for warning in unknown_variables(os.environ):
        print(warning, file=sys.stderr)

    settings = get_settings()
    topology = load_topology(settings.topics_file, settings.replication_factor)
    try:
        return run_command(args, settings, topology)
    except KafkaException as exc:  # the broker is down or unreachable: one line, not a traceback
        error = exc.args[0] if exc.args else exc
        reason = error.str() if isinstance(error, KafkaError) else str(error)
        print(f"error: Kafka at {settings.kafka_bootstrap}: {reason}", file=sys.stderr)
        return 1


def run_command(args: argparse.Namespace, settings: Settings, topology: Topology) -> int:
    if args.command == "topics":
        from agents.admin import apply_topics, check_topology

        if args.action == "check":
            problems = check_topology(topology, settings.schemas_dir)
            if args.json:
                print(json.dumps({"ok": not problems, "topics": len(topology.topics), "problems": problems}))
                return 1 if problems else 0
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            if not problems:
                print(f"topics.yaml agrees with schemas/ ({len(topology.topics)} topics)")
            return 1 if problems else 0
        from agents.admin import TopicMismatchError

        try:
            report = apply_topics(topology, settings.kafka_bootstrap)
            changelogs = apply_topics(topology.changelogs(settings.app_id), settings.kafka_bootstrap)
            report.created.extend(changelogs.created)
            report.unchanged.extend(changelogs.unchanged)
        except TopicMismatchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"topics: {len(report.created)} created, {len(report.unchanged)} already as topics.yaml says")
        for name in report.created:
            print(f"  created {name}")
        return 0

    if args.command == "schemas":
        return schemas_command(args.action, settings, topology, as_json=args.json)

    if args.command == "worker":
        return run_worker(args.loglevel or settings.log_level)

    if args.command == "demo":
        from agents.demo import run_demo

        return run_demo(settings, topology, seconds=args.seconds)

    if args.command == "process-backorders":
        url = args.url or f"http://127.0.0.1:{settings.web_port}"
        return process_backorders(args.tenant, url, args.token, as_json=args.json)

    if args.command == "produce":
        from agents.demo import produce_file

        return produce_file(settings, topology, args.topic_id, args.file)

    if args.command == "sync":
        from agents.sync import run_sync

        return run_sync(settings, topology, args.file, attempts=args.attempts, timeout=args.timeout, as_json=args.json)
    return 2


def schemas_command(action: str, settings: Settings, topology: Topology, as_json: bool = False) -> int:
    if not settings.schema_registry_url:
        print("error: no schema registry: set INVENTORY_SCHEMA_REGISTRY_URL", file=sys.stderr)
        return 2
    from confluent_kafka.schema_registry import SchemaRegistryError

    from agents.codec import RegistryUnavailable
    from agents.registry import RegistrySerde

    serde = RegistrySerde(settings, topology)
    subjects = serde.subjects()
    try:
        if action == "register":
            ids = {subject.name: serde.register(subject) for subject in subjects}
            result: dict[str, object] = {"ok": True, "registry": settings.schema_registry_url, "registered": ids}
            lines = [f"  {name}: id {schema_id}" for name, schema_id in ids.items()]
            summary = f"registered {len(ids)} subjects at {settings.schema_registry_url}"
        else:
            missing = serde.missing(subjects)
            result = {"ok": not missing, "registry": settings.schema_registry_url, "missing": missing}
            lines = [f"  missing: {name}" for name in missing]
            summary = f"{len(subjects) - len(missing)} of {len(subjects)} subjects hold the fleet's schema"
    except (SchemaRegistryError, RegistryUnavailable) as exc:
        print(f"error: schema registry at {settings.schema_registry_url}: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(result))
    else:
        print(summary)
        for line in lines:
            print(line)
    return 0 if result["ok"] else 1


def package_version() -> str:
    try:
        return version("inventory-fleet")
    except PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown"


def process_backorders(tenant: str, url: str, token: str | None, as_json: bool = False) -> int:
    import urllib.error
    import urllib.request

    token = token or os.environ.get("INVENTORY_API_TOKEN")
    if not token:
        print("error: give --token or set INVENTORY_API_TOKEN (a token of the tenant)", file=sys.stderr)
        return 2
    request = urllib.request.Request(
        f"{url.rstrip('/')}/v1/tenants/{tenant}/backorders/process", method="POST", data=b""
    )
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        print(f"error: {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: could not reach {url}: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(answer))
        return 0
    print(
        f"processed {answer['processed_count']} backorder(s): {answer['fulfilled_count']} fulfilled, "
        f"{answer['still_pending_count']} still pending"
    )
    for label, ids in (("fulfilled", answer["fulfilled_backorders"]), ("pending", answer["still_pending_backorders"])):
        for backorder_id in ids:
            print(f"  {label}: {backorder_id}")
    return 0


def run_worker(loglevel: str) -> int:
    from agents.logs import configure_logging
    from agents.runtime.app import run_worker as run

    settings = get_settings()
    configure_logging(loglevel, settings.log_json)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return run(settings, load_topology(settings.topics_file, settings.replication_factor))


if __name__ == "__main__":
    sys.exit(main())
