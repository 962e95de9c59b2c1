#!/usr/bin/env bash
# `make run`: local Kafka, topics, two workers, the demo feed and its live summary. Ctrl-C stops it all.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
py="$root/.venv/bin/python"
mkdir -p .run
export INVENTORY_KAFKA_BOOTSTRAP="${INVENTORY_KAFKA_BOOTSTRAP:-127.0.0.1:9092}"
export INVENTORY_API_TOKENS="${INVENTORY_API_TOKENS:-demo-acme=acme,demo-globex=globex}"

kafka_was_running=false
deploy/kafka/kafka.sh status | grep -q running && kafka_was_running=true
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo "stopping workers..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ "$kafka_was_running" == false ]]; then deploy/kafka/kafka.sh down; fi
  echo "stopped."
}
trap cleanup EXIT INT TERM

deploy/kafka/kafka.sh up
"$py" -m agents topics apply
for i in 1 2; do
  INVENTORY_WEB_PORT=$((6065 + i)) INVENTORY_DATA_DIR="data/worker-$i" INVENTORY_MEMBER_ID="local-worker-$i" \
    setsid "$py" -m agents worker >".run/worker-$i.log" 2>&1 &  # Ctrl-C reaches the demo; cleanup stops these
  pids+=($!)
  echo "worker $i: pid $!, http://127.0.0.1:$((6065 + i)), log .run/worker-$i.log"
done
for i in 1 2; do
  port=$((6065 + i))
  for _ in $(seq 1 240); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    kill -0 "${pids[$((i - 1))]}" 2>/dev/null || { echo "worker $i exited:"; tail -n 40 ".run/worker-$i.log"; exit 1; }
    sleep 0.5
  done
done
echo "workers ready; starting the demo feed"
echo "  views:   curl -H 'Authorization: Bearer demo-acme' http://127.0.0.1:6066/v1/tenants/acme/customers/C-100/inventory"
echo "  metrics: http://127.0.0.1:6066/metrics   http://127.0.0.1:6067/metrics"
"$py" -m agents demo "$@"
