#!/usr/bin/env bash
# scripts/reliability.sh [orders] — runs `orderflow chaos all-at-once` (every fault of the
# suite in one window) on RabbitMQ and on Kafka (tansu), 10,000 orders each by default, and
# writes RELIABILITY.md from what this run measured: the machine, the settings, each ledger.
# Each run starts its own broker node (never the shared RabbitMQ); PostgreSQL is ensured as
# scripts/test.sh ensures it. Exits non-zero when a ledger shows anything lost or doubled
# (RELIABILITY.md is written either way: a failed run is a finding, recorded as measured).
#
#   ORDERFLOW_RELIABILITY_PROFILE=debug   use debug binaries (faster to build, slower to run)
#   ORDERFLOW_RELIABILITY_RATE=250        orders per second on RabbitMQ
#   ORDERFLOW_RELIABILITY_KAFKA_RATE=100  orders per second on Kafka: tansu on SQLite answers
#                                         heartbeats and metadata requests in over 10 s at
#                                         250/s with the suite's nine processes on 2 cores
#   ORDERFLOW_RELIABILITY_BACKENDS="rabbitmq kafka"   which backends (RELIABILITY.md says which ran)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/brokers.sh

orders=${1:-10000}
rate=${ORDERFLOW_RELIABILITY_RATE:-250}
kafka_rate=${ORDERFLOW_RELIABILITY_KAFKA_RATE:-100}
profile=${ORDERFLOW_RELIABILITY_PROFILE:-release}
backends=${ORDERFLOW_RELIABILITY_BACKENDS:-rabbitmq kafka}
run_dir=$(mktemp -d /tmp/orderflow-reliability.XXXXXX)
trap 'rm -rf "$run_dir"' EXIT

ensure_postgres
ensure_postgres_access
case " $backends " in *" kafka "*) ensure_tansu_binary ;; esac
command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
export ORDERFLOW_DATABASE_URL=${ORDERFLOW_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export ORDERFLOW_TANSU_BIN="$TANSU_BIN"

profile_flag=()
[ "$profile" = release ] && profile_flag=(--release)
log "building the $profile binaries (the order service with its failpoints)"
cargo build "${profile_flag[@]}" --quiet --workspace --bins
# Last, so target/<profile>/order-service is the one with `outbox-after-confirm` in it.
cargo build "${profile_flag[@]}" --quiet -p orderflow-order --features failpoints --bin order-service
bin="target/$profile"

status=0
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for backend in $backends; do
  backend_rate=$rate
  [ "$backend" = kafka ] && backend_rate=$kafka_rate
  echo "$backend_rate" >"$run_dir/$backend.rate"
  log "chaos all-at-once on $backend, $orders orders at $backend_rate/s"
  started=$(date +%s)
  if ! "$bin/orderflow" chaos all-at-once --broker "$backend" --orders "$orders" --rate "$backend_rate" \
      --deadline-secs 900 --json >"$run_dir/$backend.json" 2>"$run_dir/$backend.log"; then
    status=1
  fi
  echo $(( $(date +%s) - started )) >"$run_dir/$backend.seconds"
  if ! [ -s "$run_dir/$backend.json" ]; then
    # No ledger: the run could not complete its faults. That is a finding too; it goes
    # into RELIABILITY.md with the run's own words (the timeline up to where it stopped).
    sed 's/\x1b\[[0-9;]*m//g' "$run_dir/$backend.log" | sed -n '/^Error:/,/service logs in/p' | head -40 >"$run_dir/$backend.error"
    [ -s "$run_dir/$backend.error" ] || tail -20 "$run_dir/$backend.log" >"$run_dir/$backend.error"
    log "the $backend run printed no ledger: $(head -1 "$run_dir/$backend.error")"
    rm -f "$run_dir/$backend.json"
  fi
done
completed=()
for backend in $backends; do [ -s "$run_dir/$backend.json" ] && completed+=("$backend"); done
[ "${#completed[@]}" -gt 0 ] || die "no run printed a ledger"

ORDERFLOW_LOAD_BEFORE="$load_before" ORDERFLOW_PROFILE="$profile" \
  ORDERFLOW_BACKENDS="$backends" python3 - "$run_dir" "${completed[@]}" >RELIABILITY.md <<'PY'
import datetime, json, os, platform, subprocess, sys

def sh(command):
    try:
        return subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return ""

run_dir = sys.argv[1]
runs = []
for backend in sys.argv[2:]:
    with open(f"{run_dir}/{backend}.json") as f:
        ledger = json.loads(f.read().strip().splitlines()[-1])
    with open(f"{run_dir}/{backend}.seconds") as f:
        ledger["wall_s"] = int(f.read().strip())
    with open(f"{run_dir}/{backend}.rate") as f:
        ledger["rate"] = f.read().strip()
    runs.append(ledger)

cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip() or platform.processor()
memory_gib = int(sh("grep MemTotal /proc/meminfo | awk '{print $2}'") or 0) // (1024 * 1024)
rabbit_version = sh("rabbitmqctl version 2>/dev/null") or "unknown"
postgres_version = sh("psql -h 127.0.0.1 -U postgres -Atc 'show server_version' 2>/dev/null") or "unknown"
orders = runs[0]["sent"]

print("# Reliability: nothing lost, nothing doubled — under every fault at once")
print()
print("Written by `scripts/reliability.sh` from the run it made; run it again to refresh.")
print()
print(f"- measured: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
print(f"- machine: {os.cpu_count()} cores ({cpu}), {memory_gib} GiB, {platform.system()} {platform.release()}; "
      f"load average when the run began: {os.environ.get('ORDERFLOW_LOAD_BEFORE', 'unknown')} (1, 5, 15 min)")
brokers = {
    "rabbitmq": f"a RabbitMQ {rabbit_version} node of the run's own (own ports and data)",
    "kafka": "tansu 0.6.0 (Kafka protocol, SQLite storage) of the run's own",
}
print(f"- brokers: {'; '.join(brokers[run['backend']] for run in runs)}; "
      f"PostgreSQL {postgres_version}, a database per service")
rates = ", ".join(f"{run['rate']} orders/s on {run['backend']}" for run in runs)
print(f"- settings: `orderflow chaos all-at-once --broker B --orders {orders:,} --rate R` ({rates}; "
      f"{os.environ.get('ORDERFLOW_PROFILE')} binaries); the five services as separate processes, two copies of each "
      "consumer service; the order service (and on RabbitMQ payment) reach the broker through the run's TCP proxy "
      "(on Kafka every service does: the broker advertises the proxy)")
print("- the fault window (each run's timeline below): the order service aborted by the failpoint "
      "`outbox-after-confirm` (after the broker confirmed a batch, before the outbox mark) and restarted without it, "
      "poison published, the network cut, SMS and points copies killed with SIGKILL during the cut, the broker killed "
      "with SIGKILL, network restored, broker restarted, more poison, a rolling SIGTERM restart of payment and logging")
print("- what each line means: `src/chaos/ledger.rs`")
print()
fields = [
    ("orders sent", "sent"), ("orders accepted", "accepted"), ("orders stored", "stored"),
    ("orders settled", "settled"), ("**lost**", "lost"), ("**doubled**", "doubled"), ("orphans", "orphans"),
    ("duplicates absorbed", "duplicates_absorbed"), ("redeliveries", "redeliveries"),
    ("dead letters", "dead_letters"), ("dead letters expected (poison × receiving groups)", "dead_letters_expected"),
    ("poison published", "poison_published"), ("time to recover (fault end → all settled)", "time_to_recover_ms"),
    ("wall time of the run", "wall_s"), ("verdict", "passed"),
]
def cell(key, value):
    if value is None:
        return "never" if key == "time_to_recover_ms" else "not counted"
    if key == "time_to_recover_ms":
        return f"{value / 1000:.1f} s"
    if key == "wall_s":
        return f"{value} s"
    if key == "passed":
        return "PASSED" if value else "**FAILED**"
    return f"{value:,}" if isinstance(value, int) else str(value)
print("| | " + " | ".join(run["backend"] for run in runs) + " |")
print("| --- | " + " | ".join("---:" for _ in runs) + " |")
for label, key in fields:
    print(f"| {label} | " + " | ".join(cell(key, run.get(key)) for run in runs) + " |")
print()
for run in runs:
    print(f"## Timeline on {run['backend']}")
    print()
    print("```text")
    for line in run["faults"]:
        print(line)
    print("```")
    missing = {stage: n for stage, n in run["missing_by_stage"].items() if n}
    doubled = {stage: n for stage, n in run["doubled_by_stage"].items() if n}
    if missing or doubled:
        print()
        print(f"Missing by stage: {missing or 'none'}; doubled by stage: {doubled or 'none'}.")
    print()
for backend in os.environ.get("ORDERFLOW_BACKENDS", "").split():
    error = f"{run_dir}/{backend}.error"
    if os.path.exists(error):
        print(f"## {backend}: the run did not complete")
        print()
        print("No ledger: the suite could not finish injecting its faults, and stopped as follows "
              "(verdict: **FAILED**, recorded as measured).")
        print()
        print("```text")
        with open(error) as f:
            lines = f.read().splitlines()
        # The timeline, its last step (why it stopped) and nothing of the service logs after.
        cut = next((n for n, line in enumerate(lines) if "logs kept in" in line), len(lines) - 1)
        for line in lines[:min(cut + 1, 30)]:
            print(line[:240])
        print("```")
        print()
        # A broker that crashed explains more than the service logs: its first panic.
        kept = next((line.split("logs kept in", 1)[1].strip() for line in lines if "logs kept in" in line), None)
        if kept and os.path.exists(f"{kept}/broker.log"):
            with open(f"{kept}/broker.log", errors="replace") as f:
                panic = next((line.strip() for line in f if "panicked at" in line), None)
            if panic:
                print(f"The broker itself panicked during the run: `{panic[:240]}`.")
                print()
print("`redeliveries` counts every delivery that may have been handed out before (retries, the broker's "
      "redelivered mark; on Kafka every record already in a partition when it was assigned, an over-count after a "
      "rebalance); the duplicates absorbed are the redeliveries of work already done.")
PY
log "wrote RELIABILITY.md"
cat RELIABILITY.md
exit "$status"
