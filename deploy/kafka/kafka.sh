#!/usr/bin/env bash
# Local Apache Kafka (KRaft, combined broker+controller nodes) for development and CI.
#
#   deploy/kafka/kafka.sh up      resolve the jars (once), format storage (once), start, wait until it answers
#   deploy/kafka/kafka.sh down    stop only the nodes this script started
#   deploy/kafka/kafka.sh logs    show the nodes' logs
#   deploy/kafka/kafka.sh status  say which nodes run
#
# Environment: NODES (1 or 3, default 1), KAFKA_PORT (first broker port, default 9092; node i listens on
# KAFKA_PORT+2*(i-1), its controller on that port + 1), KAFKA_DATA (default .kafka in the project),
# KAFKA_CACHE (where the jars go, default ~/.cache/inventory-fleet), KAFKA_HEAP (default 512m).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
NODES="${NODES:-1}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_DATA="${KAFKA_DATA:-$root/.kafka}"
KAFKA_HEAP="${KAFKA_HEAP:-512m}"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")"
cache="${KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/inventory-fleet}/kafka-$version"
libs="$cache/libs"
cluster_dir="$KAFKA_DATA/cluster-$NODES-$KAFKA_PORT"

log() { printf 'kafka: %s\n' "$*" >&2; }

resolve() {
  if [[ -f "$libs/.complete" ]] && cmp -s "$here/pom.xml" "$libs/.pom"; then return; fi
  command -v mvn >/dev/null || { log "mvn not found: install Maven (apt-get install maven) and Java 17"; exit 1; }
  log "resolving Apache Kafka $version and its runtime dependencies from Maven Central into $libs"
  rm -rf "$libs" && mkdir -p "$libs"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$libs" -DincludeScope=runtime -Dmdep.useRepositoryLayout=false >&2
  cp "$here/pom.xml" "$libs/.pom" && touch "$libs/.complete"
}

broker_port() { echo $((KAFKA_PORT + 2 * ($1 - 1))); }
controller_port() { echo $(($(broker_port "$1") + 1)); }

voters() {
  local v="" i
  for ((i = 1; i <= NODES; i++)); do v+="${v:+,}$i@127.0.0.1:$(controller_port "$i")"; done
  echo "$v"
}

write_config() {
  local i="$1" dir="$cluster_dir/node-$i" rf=$((NODES >= 3 ? 3 : 1)) isr=$((NODES >= 3 ? 2 : 1))
  mkdir -p "$dir"
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$(voters)
listeners=PLAINTEXT://127.0.0.1:$(broker_port "$i"),CONTROLLER://127.0.0.1:$(controller_port "$i")
advertised.listeners=PLAINTEXT://127.0.0.1:$(broker_port "$i")
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
log.segment.bytes=67108864
PROPS
}

java_cmd() {
  java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/log4j2.properties" -cp "$libs/*" "$@"
}

running() { # node index -> 0 if our process for it is alive
  local pidf="$cluster_dir/node-$1/pid"
  [[ -f "$pidf" ]] || return 1
  local pid; pid="$(cat "$pidf")"
  [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$cluster_dir/node-$1/server.properties"
}

answers() { # node index -> 0 when the broker accepts connections and has logged its start
  (exec 3<>"/dev/tcp/127.0.0.1/$(broker_port "$1")") 2>/dev/null &&
    grep -q "Kafka Server started" "$cluster_dir/node-$1/kafka.log" 2>/dev/null
}

up() {
  command -v java >/dev/null || { log "java not found: install Java 17"; exit 1; }
  resolve
  local i cid
  mkdir -p "$cluster_dir"
  [[ -f "$cluster_dir/cluster.id" ]] || java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1 >"$cluster_dir/cluster.id"
  cid="$(cat "$cluster_dir/cluster.id")"
  for ((i = 1; i <= NODES; i++)); do
    if running "$i"; then log "node $i already running (port $(broker_port "$i"))"; continue; fi
    write_config "$i"
    if [[ ! -f "$cluster_dir/node-$i/data/meta.properties" ]]; then
      java_cmd kafka.tools.StorageTool format -t "$cid" -c "$cluster_dir/node-$i/server.properties" --ignore-formatted >/dev/null
    fi
    : >"$cluster_dir/node-$i/kafka.log"
    # A session of its own: a Ctrl-C meant for `make run` must not stop the broker before the workers.
    setsid nohup java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$here/log4j2.properties" -cp "$libs/*" \
      kafka.Kafka "$cluster_dir/node-$i/server.properties" >>"$cluster_dir/node-$i/kafka.log" 2>&1 </dev/null &
    echo $! >"$cluster_dir/node-$i/pid"
    log "started node $i (pid $!, port $(broker_port "$i"), data $cluster_dir/node-$i)"
  done
  local deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-120}))
  for ((i = 1; i <= NODES; i++)); do
    until answers "$i"; do
      # Liveness by pid alone: right after the launch the JVM's command line may not be readable yet.
      if ! kill -0 "$(cat "$cluster_dir/node-$i/pid")" 2>/dev/null; then
        log "node $i exited; last lines of its log:"; tail -n 30 "$cluster_dir/node-$i/kafka.log" >&2; exit 1
      fi
      if ((SECONDS > deadline)); then log "node $i did not answer in time"; tail -n 30 "$cluster_dir/node-$i/kafka.log" >&2; exit 1; fi
      sleep 0.3
    done
  done
  log "up: bootstrap $(bootstrap)"
}

bootstrap() {
  local b="" i
  for ((i = 1; i <= NODES; i++)); do b+="${b:+,}127.0.0.1:$(broker_port "$i")"; done
  echo "$b"
}

down() {
  local i pid
  for ((i = 1; i <= NODES; i++)); do
    running "$i" || continue
    pid="$(cat "$cluster_dir/node-$i/pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do running "$i" || break; sleep 0.2; done
    running "$i" && kill -9 "$pid" 2>/dev/null || true
    rm -f "$cluster_dir/node-$i/pid"
    log "stopped node $i"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  logs) for f in "$cluster_dir"/node-*/kafka.log; do [[ -f "$f" ]] && { echo "== $f"; tail -n "${LINES_SHOWN:-200}" "$f"; }; done ;;
  status) for ((i = 1; i <= NODES; i++)); do running "$i" && echo "node $i running on $(broker_port "$i")" || echo "node $i stopped"; done ;;
  bootstrap) bootstrap ;;
  stop-node) i="${2:?node}"; kill -9 "$(cat "$cluster_dir/node-$i/pid")" ;;
  reset) down; rm -rf "$cluster_dir" ;;
  *) echo "usage: $0 up|down|logs|status|bootstrap|stop-node N|reset" >&2; exit 2 ;;
esac
