"""One stateful workload on four stream-processing runtimes, side by side, in one run (issue 10, point 8).

Runtimes:
  faust            faust-streaming 0.15.3 (aiokafka), one per-event agent, RocksDB table (rocksdict) with changelog
  quix-alos        Quix Streams 3.28.1, at-least-once, commit_interval 1 s
  quix-eos         Quix Streams 3.28.1, exactly-once, commit_interval 1 s
  confluent-batch  plain confluent-kafka loop for reference: consume(500), rocksdict read-modify-write, produce, commit

Workload, identical for all: small JSON records {"k", "n", "ts"} on an input topic with 8 partitions, keyed by
one of 2,000 keys drawn Zipf-skewed (s = 1.1, fixed seed). Per event the worker reads the key's state (a
counter and a running sum of n) from RocksDB, writes it back (the state store has a changelog topic) and
produces one output record (the input plus count and sum).

Measures, per round on fresh topics, consumer group and state dir, each worker in a process of its own:
  throughput   drain a pre-filled input topic; events / (last output - first output), by the broker's append
               time (the output topic has message.timestamp.type=LogAppendTime)
  CPU          user + system CPU of the worker process (all its threads, /proc/<pid>/stat) over that same
               window, per event
  latency      input paced at --rate for --seconds; produce -> output as seen by a read_committed consumer,
               from the producer's timestamp in the record ("falls behind" with the achieved rate if the
               worker cannot keep that pace)
Medians over --rounds rounds; rounds interleave the runtimes.

    python -m bench.runtimes                         # 100,000 events, 3 rounds, 2,000 ev/s for 20 s
    python -m bench.runtimes --quick                 # smoke run: 10,000 events, 1 round, 5 s paced
    python -m bench.runtimes --only quix-alos,quix-eos --bootstrap 127.0.0.1:9092

Broker: KAFKA_PORT=19692 KAFKA_DATA=/tmp/kafka-bench deploy/kafka/kafka.sh up (and ... down).
faust runs with the interpreter of .venv-bench (python3 -m venv .venv-bench && .venv-bench/bin/pip install -e
'.[bench]'); without it faust is skipped. Results: bench/results/runtimes-<UTC timestamp>.json and .md.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from importlib import metadata
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
BENCH_VENV_COMMAND = "python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'"

PARTITIONS = 8
KEYS = 2_000
ZIPF_S = 1.1
SEED = 20_260_810
COMMIT_INTERVAL = 1.0
CONSUME_BATCH = 500
FALLS_BEHIND_BELOW = 0.95  # of the rate actually produced
WARMUP_S = 1.0  # paced before the latency counts: the step from idle to load stalls every runtime for ~0.5 s

RUNTIMES = {
    "faust": "faust-streaming 0.15.3 (aiokafka), at-least-once",
    "quix-alos": "Quix Streams 3.28.1, at-least-once",
    "quix-eos": "Quix Streams 3.28.1, exactly-once",
    "confluent-batch": "confluent-kafka batch loop (reference)",
}

console = Console(width=None if sys.stdout.isatty() else 160)  # a wide table also in a log


# --- workers: each runs in a process of its own, configured by BENCH_RUNTIME_CONFIG -------------------------


def _count(state: tuple[int, int] | list[int] | None, n: int) -> tuple[int, int]:
    count, total = state or (0, 0)
    return count + 1, total + n


def faust_worker(cfg: dict[str, Any]) -> None:
    import faust

    app = faust.App(
        cfg["group"],
        broker=f"kafka://{cfg['bootstrap']}",
        store="rocksdb://",
        datadir=cfg["state_dir"],
        processing_guarantee="at_least_once",
        broker_commit_interval=COMMIT_INTERVAL,
        topic_partitions=PARTITIONS,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        web_enabled=False,
    )
    source = app.topic(cfg["source"], key_type=bytes, value_type=bytes, partitions=PARTITIONS, internal=False)
    target = app.topic(cfg["target"], key_type=bytes, value_type=bytes, partitions=PARTITIONS, internal=False)
    # Changelog topic: <group>-state-changelog (created beforehand by the controller).
    table = app.Table("state", key_type=bytes, value_type=bytes, partitions=PARTITIONS, options={"driver": "rocksdict"})

    @app.agent(source, concurrency=1)
    async def count(stream: Any) -> None:
        async for key, value in stream.items():
            record = orjson.loads(value)
            stored = table.get(key)
            record["count"], record["sum"] = state = _count(orjson.loads(stored) if stored else None, record["n"])
            table[key] = orjson.dumps(state)
            await target.send(key=key, value=orjson.dumps(record))

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


def quix_worker(cfg: dict[str, Any], guarantee: str) -> None:
    from quixstreams import Application

    app = Application(
        broker_address=cfg["bootstrap"],
        consumer_group=cfg["group"],
        auto_offset_reset="earliest",
        processing_guarantee=guarantee,
        commit_interval=COMMIT_INTERVAL,
        state_dir=cfg["state_dir"],
        loglevel="WARNING",
    )
    source = app.topic(cfg["source"], value_deserializer="json")
    target = app.topic(cfg["target"], value_serializer="json")

    def count(record: dict[str, Any], state: Any) -> dict[str, Any]:
        record["count"], record["sum"] = counted = _count(state.get("cs"), record["n"])
        state.set("cs", counted)
        return record

    app.dataframe(source).apply(count, stateful=True).to_topic(target)
    app.run()  # stops cleanly on SIGTERM


def confluent_worker(cfg: dict[str, Any]) -> None:
    from rocksdict import Rdict

    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer = Consumer(
        {
            "bootstrap.servers": cfg["bootstrap"],
            "group.id": cfg["group"],
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    producer = Producer({"bootstrap.servers": cfg["bootstrap"], "partitioner": "murmur2"})
    db = Rdict(str(Path(cfg["state_dir"]) / "state"))
    consumer.subscribe([cfg["source"]])
    target, changelog = cfg["target"], cfg["changelog"]
    while not stopping:
        head = consumer.poll(0.1)  # consume(500, timeout) alone would sit out the timeout on a short batch
        if head is None:
            continue
        changed: dict[bytes, tuple[int, bytes]] = {}  # key -> (partition, state): one changelog record per key
        for msg in [head, *consumer.consume(CONSUME_BATCH - 1, 0)]:
            if msg.error():
                continue
            key, record = msg.key(), orjson.loads(msg.value())
            stored = db.get(key)
            record["count"], record["sum"] = state = _count(orjson.loads(stored) if stored else None, record["n"])
            db[key] = changed_state = orjson.dumps(state)
            changed[key] = (msg.partition(), changed_state)
            _produce(producer, target, key, orjson.dumps(record))
        for key, (partition, changed_state) in changed.items():
            _produce(producer, changelog, key, changed_state, partition)
        producer.flush(30)  # outputs and changelog acknowledged before the offsets are committed
        consumer.commit(asynchronous=True)
    producer.flush(30)
    consumer.close()
    db.close()


def _produce(producer: Producer, topic: str, key: bytes, value: bytes, partition: int = -1) -> None:
    while True:
        try:
            producer.produce(topic, key=key, value=value, partition=partition)
            return
        except BufferError:
            producer.poll(0.05)


def run_worker(runtime: str) -> None:
    cfg = json.loads(os.environ["BENCH_RUNTIME_CONFIG"])
    if runtime == "faust":
        faust_worker(cfg)
    elif runtime == "quix-alos":
        quix_worker(cfg, "at-least-once")
    elif runtime == "quix-eos":
        quix_worker(cfg, "exactly-once")
    elif runtime == "confluent-batch":
        confluent_worker(cfg)
    else:
        raise SystemExit(f"unknown runtime {runtime}")


# --- controller: topics, load, probe, measures --------------------------------------------------------------


def zipf_keys(count: int, seed: int) -> list[bytes]:
    weights = list(accumulate(1.0 / rank**ZIPF_S for rank in range(1, KEYS + 1)))
    ranks = random.Random(seed).choices(range(KEYS), cum_weights=weights, k=count)
    return [f"k{rank:04d}".encode() for rank in ranks]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_at(samples: list[tuple[float, float]], at: float) -> float:
    """The worker's CPU seconds at wall time `at`, interpolated between (wall, cpu) samples."""
    i = bisect.bisect_left(samples, (at, -1.0))
    if i == 0:
        return samples[0][1]
    if i == len(samples):
        return samples[-1][1]
    (t0, c0), (t1, c1) = samples[i - 1], samples[i]
    return c0 + (c1 - c0) * (at - t0) / (t1 - t0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def record(key: bytes, n: int) -> bytes:
    return orjson.dumps({"k": key.decode(), "n": n, "ts": time.time()})


def prefill(bootstrap: str, topic: str, keys: list[bytes]) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "partitioner": "murmur2", "linger.ms": 20, "batch.size": 262_144}
    )
    for n, key in enumerate(keys):
        _produce(producer, topic, key, record(key, n))
        if n % 1000 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("prefill not delivered")


class Pacer(threading.Thread):
    """Produces len(keys) records at `rate` per second, numbered from `first`, each with its produce time."""

    def __init__(self, bootstrap: str, topic: str, keys: list[bytes], first: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2", "linger.ms": 1})
        self.producer.list_topics(topic, timeout=10)  # connected, with the topic's leaders, before the clock starts
        self.topic, self.keys, self.first, self.rate = topic, keys, first, rate
        self.started = self.finished = 0.0
        self.produced = 0

    def run(self) -> None:
        self.started = time.time()
        for i, key in enumerate(self.keys):
            delay = self.started + i / self.rate - time.time()
            if delay > 0:
                time.sleep(delay)
            _produce(self.producer, self.topic, key, record(key, self.first + i))
            self.producer.poll(0)
            self.produced = i + 1
        self.finished = time.time()
        self.producer.flush(30)


class Probe:
    """Reads the output topic from the start (read_committed), once per record number n: the broker's append
    time and the produce -> arrival latency."""

    def __init__(self, bootstrap: str, topic: str, drain_events: int) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-rt-probe-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
            }
        )
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        self.drain_events = drain_events
        self.appended: dict[int, float] = {}
        self.latency: dict[int, float] = {}
        self.drained = self.paced = 0

    def poll(self, timeout: float) -> None:
        head = self.consumer.poll(timeout)
        if head is None:
            return
        batch = [head, *self.consumer.consume(999, 0)]
        arrived = time.time()
        for msg in batch:
            if msg.error():
                continue
            value = orjson.loads(msg.value())
            n = value["n"]
            if n in self.appended:
                continue  # a duplicate (at-least-once redelivery)
            self.appended[n] = msg.timestamp()[1] / 1000
            self.latency[n] = arrived - value["ts"]
            if n < self.drain_events:
                self.drained += 1
            else:
                self.paced += 1

    def close(self) -> None:
        self.consumer.close()


class WorkerFailed(RuntimeError):
    pass


class Round:
    """One runtime, one round: fresh topics, group and state dir; drain, then paced latency."""

    def __init__(self, args: argparse.Namespace, runtime: str, number: int, progress: Progress, task: Any) -> None:
        self.args, self.runtime, self.number, self.progress, self.task = args, runtime, number, progress, task
        suffix = f"{runtime}-r{number}-{uuid.uuid4().hex[:6]}"
        self.suffix = suffix
        self.source, self.target = f"bench.rt.in.{suffix}", f"bench.rt.out.{suffix}"
        self.group = f"bench-rt-{suffix}"
        self.changelog = {
            "faust": f"{self.group}-state-changelog",
            "confluent-batch": f"bench.rt.changelog.{suffix}",
        }.get(runtime)  # Quix creates its own changelog topic
        self.admin = AdminClient({"bootstrap.servers": args.bootstrap})
        self.samples: list[tuple[float, float]] = []

    def status(self, text: str, completed: int = 0, total: int | None = None) -> None:
        label = f"{self.runtime} round {self.number}/{self.args.rounds}: {text}"
        self.progress.update(self.task, description=label, completed=completed, total=total)

    def run(self, drain_keys: list[bytes], paced_keys: list[bytes]) -> dict[str, Any]:
        state_dir = tempfile.mkdtemp(prefix=f"bench-rt-{self.runtime}-")
        result: dict[str, Any] = {"round": self.number, "ok": False}
        proc = probe = None
        try:
            self.create_topics()
            self.status("prefilling the input topic")
            prefill(self.args.bootstrap, self.source, drain_keys)
            probe = Probe(self.args.bootstrap, self.target, len(drain_keys))
            log = Path(state_dir) / "worker.log"
            proc = self.start(state_dir, log)
            result.update(self.drain(proc, probe, log, len(drain_keys)))
            result["paced"] = self.paced(proc, probe, log, paced_keys, len(drain_keys))
            result["ok"] = True
        except Exception as exc:  # one failed round is reported, the others still run
            result["error"] = f"{type(exc).__name__}: {exc}"
            console.print(f"[red]{self.runtime} round {self.number} failed:[/] {exc}")
        finally:
            self.status("stopping")
            if proc is not None:
                self.stop(proc)
            if probe is not None:
                probe.close()
            self.delete_topics()
            shutil.rmtree(state_dir, ignore_errors=True)
        return result

    def create_topics(self) -> None:
        topics = [
            NewTopic(self.source, PARTITIONS, 1),
            NewTopic(self.target, PARTITIONS, 1, config={"message.timestamp.type": "LogAppendTime"}),
        ]
        if self.changelog:
            topics.append(NewTopic(self.changelog, PARTITIONS, 1, config={"cleanup.policy": "compact"}))
        for future in self.admin.create_topics(topics).values():
            future.result(30)

    def delete_topics(self) -> None:
        names = [name for name in self.admin.list_topics(timeout=10).topics if self.suffix in name]
        for future in self.admin.delete_topics(names).values() if names else ():
            try:
                future.result(30)
            except KafkaException:
                pass
        for future in self.admin.delete_consumer_groups([self.group]).values():
            try:
                future.result(30)
            except KafkaException:
                pass

    def start(self, state_dir: str, log: Path) -> subprocess.Popen[bytes]:
        cfg = {
            "bootstrap": self.args.bootstrap,
            "source": self.source,
            "target": self.target,
            "changelog": self.changelog,
            "group": self.group,
            "state_dir": state_dir,
        }
        python = str(BENCH_PYTHON) if self.runtime == "faust" else sys.executable
        env = {**os.environ, "BENCH_RUNTIME_CONFIG": json.dumps(cfg)}
        with log.open("wb") as out:
            return subprocess.Popen(
                [python, str(Path(__file__).resolve()), "worker", self.runtime],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(45)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)

    def watch(self, proc: subprocess.Popen[bytes], probe: Probe, log: Path) -> None:
        """One probe poll and one CPU sample; fails if the worker exited."""
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-15:]
            raise WorkerFailed(f"worker exited with {proc.returncode}:\n" + "\n".join(tail))
        probe.poll(0.05)
        self.samples.append((time.time(), cpu_seconds(proc.pid)))

    def drain(self, proc: subprocess.Popen[bytes], probe: Probe, log: Path, events: int) -> dict[str, Any]:
        started = time.time()
        deadline = time.monotonic() + 90 + events / 500  # at least 500 ev/s after a 90 s start
        while probe.drained < events:
            if time.monotonic() > deadline:
                raise WorkerFailed(f"drain incomplete: {probe.drained:,} of {events:,} outputs in time")
            self.watch(proc, probe, log)
            self.status("draining", probe.drained, events)
        appended = [probe.appended[n] for n in range(events)]
        first, last = min(appended), max(appended)
        cpu = cpu_at(self.samples, last) - cpu_at(self.samples, first)
        return {
            "events": events,
            "startup_s": round(first - started, 2),
            "drain_s": round(last - first, 3),
            "throughput_eps": round((events - 1) / (last - first), 1),
            "cpu_us_per_event": round(cpu / (events - 1) * 1e6, 1),
            "cpu_until_drained_s": round(cpu_at(self.samples, last), 2),
        }

    def paced(
        self, proc: subprocess.Popen[bytes], probe: Probe, log: Path, keys: list[bytes], first: int
    ) -> dict[str, Any]:
        """Paced input; the first WARMUP_S seconds of it (idle -> load) are not counted in the latency."""
        pacer = Pacer(self.args.bootstrap, self.source, keys, first, self.args.rate)
        pacer.start()
        total = len(keys)
        while pacer.is_alive() or probe.paced < total:
            if not pacer.is_alive() and time.time() > pacer.finished + 10 + 2 * self.args.seconds:
                break  # far behind: measure what arrived
            self.watch(proc, probe, log)
            self.status(f"paced at {self.args.rate:,.0f} ev/s", probe.paced, total)
        pacer.join()
        arrived = [n for n in range(first, first + total) if n in probe.latency]
        if not arrived:
            raise WorkerFailed(f"no output for the {total:,} paced records")
        warmup = first + int(self.args.rate * WARMUP_S)
        latencies = [probe.latency[n] * 1000 for n in arrived if n >= warmup]
        per_second = max(1, int(self.args.rate))
        everything = [probe.latency[n] * 1000 for n in arrived]
        by_second = [everything[i : i + per_second] for i in range(0, len(everything), per_second)]
        produce_rate = total / (pacer.finished - pacer.started)
        achieved = len(arrived) / (max(probe.appended[n] for n in arrived) - pacer.started)
        return {
            "rate": self.args.rate,
            "seconds": self.args.seconds,
            "warmup_s": WARMUP_S,
            "produced": total,
            "produce_rate_eps": round(produce_rate, 1),
            "received": len(arrived),
            "achieved_eps": round(achieved, 1),
            "falls_behind": len(arrived) < total or achieved < FALLS_BEHIND_BELOW * produce_rate,
            "p50_ms": round(percentile(latencies, 0.50), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2),
            "max_ms": round(max(latencies), 2),
            "p99_ms_by_second_incl_warmup": [round(percentile(chunk, 0.99), 1) for chunk in by_second],
        }


# --- summary and report --------------------------------------------------------------------------------------


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in rounds if r["ok"]]
    if not good:
        return {"rounds_ok": 0}

    def median(values: list[float]) -> float:
        return round(statistics.median(values), 2)

    behind = [r["paced"]["falls_behind"] for r in good]
    return {
        "rounds_ok": len(good),
        "throughput_eps": median([r["throughput_eps"] for r in good]),
        "cpu_us_per_event": median([r["cpu_us_per_event"] for r in good]),
        "p50_ms": median([r["paced"]["p50_ms"] for r in good]),
        "p99_ms": median([r["paced"]["p99_ms"] for r in good]),
        "achieved_eps": median([r["paced"]["achieved_eps"] for r in good]),
        "falls_behind": sum(behind) * 2 > len(behind),
        "rounds_behind": sum(behind),
    }


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, entry in report["runtimes"].items():
        s = entry["median"]
        if entry.get("skipped"):
            rows.append([name, entry["label"], "skipped", "", "", "", "", "0"])
            continue
        if not s["rounds_ok"]:
            rows.append([name, entry["label"], "failed", "", "", "", "", f"0/{len(entry['rounds'])}"])
            continue
        pace = f"falls behind ({s['achieved_eps']:,.0f} ev/s)" if s["falls_behind"] else "keeps up"
        rows.append(
            [
                name,
                entry["label"],
                f"{s['throughput_eps']:,.0f}",
                f"{s['cpu_us_per_event']:,.1f}",
                f"{s['p50_ms']:,.1f}",
                f"{s['p99_ms']:,.1f}",
                pace,
                f"{s['rounds_ok']}/{len(entry['rounds'])}",
            ]
        )
    return rows


def headers(report: dict[str, Any]) -> list[str]:
    rate = f"{report['settings']['rate']:,.0f}"
    return [
        "Runtime",
        "What",
        "Throughput (ev/s)",
        "CPU (µs/event)",
        f"p50 (ms) @ {rate}/s",
        f"p99 (ms) @ {rate}/s",
        f"Paced {rate} ev/s",
        "Rounds",
    ]


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"# Runtimes: one stateful workload, four runtimes ({report['started']})",
        "",
        f"`{report['command']}`, {report['duration_s'] / 60:.1f} min, {report['machine']['cpus']} CPUs,"
        f" broker {s['bootstrap']}",
        "",
        f"{s['events']:,} events per drain, {s['partitions']} partitions, {s['keys']:,} keys Zipf s={s['zipf_s']}"
        f" (seed {s['seed']}); latency at {s['rate']:,.0f} ev/s for {s['seconds']} s; medians of {s['rounds']}"
        " round(s), each on fresh topics, group and state dir.",
        "",
        "| " + " | ".join(headers(report)) + " |",
        "|" + "|".join(["---", "---", *["---:"] * 6]) + "|",
        *("| " + " | ".join(row) + " |" for row in table_rows(report)),
        "",
        "- Throughput: events / (last - first output append time) draining the pre-filled input topic.",
        "- CPU: user + system CPU of the worker process (all threads) over that same window, per event.",
        "- Latency: the producer's timestamp in the record -> arrival at a read_committed consumer; the first"
        f' {s["warmup_s"]:g} s of the paced input (idle -> load) is not counted. "Falls behind": fewer outputs'
        f" than inputs, or outputs at less than {s['falls_behind_below']:.0%} of the produced rate (achieved rate"
        " shown).",
        "- Changelog: faust writes one record per table write; Quix one per changed key per commit; the reference"
        " loop one per changed key per batch (flushed, with the outputs, before the offsets are committed).",
        f"- Machine load average (1, 5, 15 min) at the start: {report['machine']['loadavg_start']}, at the end:"
        f" {report['machine']['loadavg_end']}.",
        "",
        "Per round (throughput ev/s, CPU µs/event, p50 / p99 ms):",
        "",
        *per_round_lines(report),
    ]
    if report["skipped"]:
        lines += ["", *(f"- {name}: {why}" for name, why in report["skipped"].items())]
    return "\n".join(lines) + "\n"


def per_round_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for name, entry in report["runtimes"].items():
        cells = []
        for r in entry["rounds"]:
            if r["ok"]:
                p = r["paced"]
                behind = " behind" if p["falls_behind"] else ""
                cells.append(
                    f"{r['throughput_eps']:,.0f}, {r['cpu_us_per_event']:,.1f}, {p['p50_ms']:,.1f} / {p['p99_ms']:,.1f}{behind}"
                )
            else:
                cells.append(f"failed ({r['error'].splitlines()[0]})")
        lines.append(f"- {name}: " + ("; ".join(cells) or "skipped"))
    return lines


def rich_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"Runtimes, medians of {report['settings']['rounds']} round(s)")
    for i, header in enumerate(headers(report)):
        table.add_column(header, justify="left" if i < 2 else "right")
    for row in table_rows(report):
        table.add_row(*row)
    return table


def versions(runtimes: list[str]) -> dict[str, Any]:
    found = {p: metadata.version(p) for p in ("quixstreams", "confluent-kafka", "rocksdict", "orjson")}
    found["librdkafka"] = __import__("confluent_kafka").libversion()[0]
    if "faust" in runtimes:
        packages = ("faust-streaming", "aiokafka", "mode-streaming", "rocksdict")
        probe = f"import json, importlib.metadata as m; print(json.dumps({{p: m.version(p) for p in {packages}}}))"
        out = subprocess.run([str(BENCH_PYTHON), "-c", probe], capture_output=True, text=True, check=True)
        found["faust venv"] = json.loads(out.stdout)
    return found


def faust_available() -> bool:
    if not BENCH_PYTHON.exists():
        return False
    check = subprocess.run([str(BENCH_PYTHON), "-c", "import faust, rocksdict"], capture_output=True)
    return check.returncode == 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("INVENTORY_BENCH_BOOTSTRAP", "127.0.0.1:19692"))
    parser.add_argument("--events", type=int, help="events per drain (default 100,000; --quick 10,000)")
    parser.add_argument("--rounds", type=int, help="rounds per runtime (default 3; --quick 1)")
    parser.add_argument("--rate", type=float, default=2_000.0, help="paced events/s for latency (default 2,000)")
    parser.add_argument("--seconds", type=float, help="paced duration (default 20; --quick 5)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(RUNTIMES)}")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10,000 events, 1 round, 5 s paced")
    args = parser.parse_args()
    args.events = args.events or (10_000 if args.quick else 100_000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.seconds = args.seconds or (5.0 if args.quick else 20.0)
    args.runtimes = args.only.split(",") if args.only else list(RUNTIMES)
    unknown = set(args.runtimes) - set(RUNTIMES)
    if unknown:
        parser.error(f"unknown runtime(s) {', '.join(sorted(unknown))}; choose from {', '.join(RUNTIMES)}")
    return args


def main() -> None:
    if sys.argv[1:2] == ["worker"]:
        run_worker(sys.argv[2])
        return
    args = parse_args()
    started = datetime.now(UTC)
    loadavg_start = [round(x, 2) for x in os.getloadavg()]
    clock = time.monotonic()
    try:
        AdminClient({"bootstrap.servers": args.bootstrap}).list_topics(timeout=10)
    except KafkaException as exc:
        raise SystemExit(f"no broker at {args.bootstrap} ({exc}); start one with deploy/kafka/kafka.sh up") from exc

    skipped: dict[str, str] = {}
    if "faust" in args.runtimes and not faust_available():
        console.print(f"[yellow]faust skipped: install with make bench-venv[/] ({BENCH_VENV_COMMAND})")
        skipped["faust"] = f"skipped: no {BENCH_PYTHON.relative_to(ROOT)} with faust ({BENCH_VENV_COMMAND})"
    runtimes = [r for r in args.runtimes if r not in skipped]

    drain_keys = zipf_keys(args.events, SEED)
    paced_keys = zipf_keys(int(args.rate * (WARMUP_S + args.seconds)), SEED + 1)
    rounds: dict[str, list[dict[str, Any]]] = {r: [] for r in runtimes}
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        overall = progress.add_task("runs", total=len(runtimes) * args.rounds)
        phase = progress.add_task("", total=None)
        for number in range(1, args.rounds + 1):
            for runtime in runtimes:  # rounds interleave the runtimes
                result = Round(args, runtime, number, progress, phase).run(drain_keys, paced_keys)
                rounds[runtime].append(result)
                progress.advance(overall)

    report = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - clock, 1),
        "command": " ".join(["python -m bench.runtimes", *sys.argv[1:]]),
        "settings": {
            "bootstrap": args.bootstrap,
            "events": args.events,
            "rounds": args.rounds,
            "rate": args.rate,
            "seconds": args.seconds,
            "partitions": PARTITIONS,
            "keys": KEYS,
            "zipf_s": ZIPF_S,
            "seed": SEED,
            "commit_interval_s": COMMIT_INTERVAL,
            "falls_behind_below": FALLS_BEHIND_BELOW,
            "warmup_s": WARMUP_S,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_start": loadavg_start,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": versions(runtimes),
        "skipped": skipped,
        "runtimes": {
            name: {"label": RUNTIMES[name], "skipped": name in skipped, "rounds": rounds.get(name, [])}
            for name in args.runtimes
        },
    }
    for entry in report["runtimes"].values():
        entry["median"] = summarize(entry["rounds"])

    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"runtimes-{started.strftime('%Y%m%dT%H%M%SZ')}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    console.print(rich_table(report))
    console.print(f"{report['duration_s'] / 60:.1f} min; results in {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
