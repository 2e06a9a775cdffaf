#!/usr/bin/env bash
# scripts/bench.sh [messages] — runs `orderflow bench broker` on memory, RabbitMQ and Kafka
# (tansu) with the same settings and writes the broker section of BENCHMARKS.md from what
# this run measured (scripts/loadtest.sh writes the end-to-end section beside it).
# Brokers are started as scripts/test.sh starts them; what this script started it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/brokers.sh
source scripts/lib/sections.sh

messages=${1:-100000}
memory_messages=${ORDERFLOW_BENCH_MEMORY_MESSAGES:-1000000}
payload=${ORDERFLOW_BENCH_PAYLOAD:-256}
run_dir=$(mktemp -d /tmp/orderflow-bench.XXXXXX)
tansu_pid=""
cleanup() {
  if [ -n "$tansu_pid" ]; then kill "$tansu_pid" 2>/dev/null || true; fi
  rm -rf "$run_dir"
}
trap cleanup EXIT

ensure_rabbitmq
ensure_tansu_binary
kafka_port=$(free_port)
tansu_pid=$(start_tansu "$kafka_port" "memory://tansu/" "$run_dir/tansu.log")

log "building the release binary"
cargo build --release --quiet --bin orderflow

bench() {
  local url=$1 count=$2
  log "bench: $url, $count messages"
  target/release/orderflow bench broker --broker "$url" --messages "$count" --payload-bytes "$payload" --json | tail -1
}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
memory=$(bench "memory://" "$memory_messages")
rabbit=$(bench "${ORDERFLOW_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}" "$messages")
kafka=$(bench "kafka://127.0.0.1:$kafka_port" "$messages")

ORDERFLOW_LOAD_BEFORE="$load_before" python3 - "$memory" "$rabbit" "$kafka" >"$run_dir/section.md" <<'PY'
import json, os, platform, subprocess, sys, datetime

def sh(command):
    try:
        return subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return ""

rows = [json.loads(arg) for arg in sys.argv[1:]]
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip() or platform.processor()
memory_gib = int(sh("grep MemTotal /proc/meminfo | awk '{print $2}'") or 0) // (1024 * 1024)
rabbit_version = sh("rabbitmqctl version 2>/dev/null") or "unknown"
print("## The broker abstraction against the raw clients")
print()
print("Written by `scripts/bench.sh` from the run it made; run it again to refresh.")
print()
print(f"- measured: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
print(f"- machine: {os.cpu_count()} cores ({cpu}), {memory_gib} GiB, {platform.system()} {platform.release()}; "
      f"load average when the run began: {os.environ.get('ORDERFLOW_LOAD_BEFORE', 'unknown')} (1, 5, 15 min)")
print(f"- brokers on loopback: RabbitMQ {rabbit_version}; tansu 0.6.0 (Kafka protocol, memory storage); memory = the embedded broker")
print(f"- settings: persistent messages of {rows[0]['payload_bytes']} B, keys spread over 1,000 keys, "
      "published in batches of 1,000 (confirms awaited per batch), then consumed with prefetch 256 and acked one by one")
print("- `orderflow bench broker --broker URL --messages N --json`; the raw pipelines are `src/bench/raw_*.rs` "
      "(lapin, rdkafka, a bare tokio channel), doing the same work with the client alone")
print()
print("| backend | messages | publish msg/s | raw publish msg/s | ratio | consume+ack msg/s | raw consume msg/s | ratio |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for row in rows:
    print(f"| {row['backend']} | {row['messages']:,} | {row['publish_per_s']:,.0f} | {row['raw_publish_per_s']:,.0f} | "
          f"{row['publish_ratio']:.2f} | {row['consume_per_s']:,.0f} | {row['raw_consume_per_s']:,.0f} | {row['consume_ratio']:.2f} |")
print()
print("Targets: the abstraction at 0.95× the raw client or better on RabbitMQ and Kafka; the "
      "memory backend at 1,000,000 msg/s or more for publish and for consume+ack. The memory "
      "backend's raw pipeline is only a floor (a channel with no groups, no per-key ownership, "
      "no redelivery), so its ratio is not a target.")
PY
write_section BENCHMARKS.md broker scripts/bench.sh "$run_dir/section.md"
log "wrote the broker section of BENCHMARKS.md"
cat "$run_dir/section.md"
