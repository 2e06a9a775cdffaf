#!/usr/bin/env bash
# scripts/loadtest.sh [memory|rabbitmq|kafka|stack] — the end-to-end load tests, with release
# binaries, on one backend (default memory: nothing to install), and the "End to end"
# section of BENCHMARKS.md for that backend written from what this run measured, with the
# charts it shows committed under docs/benchmarks/BACKEND/.
#
# memory, rabbitmq and kafka run the five services inside the load generator's process on
# that broker; stack runs them as five processes (scripts/up.sh rabbitmq: RabbitMQ and
# PostgreSQL), see "The five services as processes" below for what it measures and why.
#
# The standard set, each an `orderflow load` run of the in-process stack on the backend:
#   steady          the base rate, no burst
#   sync vs async   `load --compare`: both wirings steady, under a 10x burst, and with the
#                   logging service stopped for the middle half of the run
#   sustainable     the highest rate at which, with the SMS limit lifted, nothing fails,
#                   API p99 < 100 ms and every order settles within the drain (the backlog
#                   stays bounded): doubling from a start rate, then halving the gap
#   validation      the same fixed rate against one order-service process, measured by
#                   orderflow and by oha (--latency-correction); and the generator's own
#                   ceiling: GET /healthz scheduled at 20,000/s
#
# Knobs (environment): ORDERFLOW_LOADTEST_RATE (20 orders/s), _STEADY (30s),
# _COMPARE_DURATION (40s), _BURST (10x:10s@10s), _SEARCH_START (50), _SEARCH_RUNS (7),
# _SEARCH_DURATION (15s), _SEARCH_DRAIN (10s), _VALIDATE_RATE (200), _VALIDATE_DURATION
# (20s), _VALIDATE_ROUNDS (2, taking turns), _CEILING_RATE (20000), _CEILING_DURATION (10s), _POSTGRES (a PostgreSQL server
# for the services' databases instead of SQLite files), _KEEP (keep the run directory),
# _RESUME (go on with a kept one). For stack, also _SMS_LIMIT (50, the SMS gateway's default,
# given to the processes explicitly so the section can state it).
# Tools (oha) are built once into ~/.cache/orderflow. Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/brokers.sh
source scripts/lib/tools.sh
source scripts/lib/sections.sh

OHA_VERSION=1.15.0
OHA_BIN="$ORDERFLOW_CACHE/oha-$OHA_VERSION/bin/oha"

backend=${1:-memory}
rate=${ORDERFLOW_LOADTEST_RATE:-20}
steady=${ORDERFLOW_LOADTEST_STEADY:-30s}
compare_duration=${ORDERFLOW_LOADTEST_COMPARE_DURATION:-40s}
burst=${ORDERFLOW_LOADTEST_BURST:-10x:10s@10s}
search_start=${ORDERFLOW_LOADTEST_SEARCH_START:-50}
search_runs=${ORDERFLOW_LOADTEST_SEARCH_RUNS:-7}
search_duration=${ORDERFLOW_LOADTEST_SEARCH_DURATION:-15s}
search_drain=${ORDERFLOW_LOADTEST_SEARCH_DRAIN:-10s}
validate_rate=${ORDERFLOW_LOADTEST_VALIDATE_RATE:-200}
validate_duration=${ORDERFLOW_LOADTEST_VALIDATE_DURATION:-20s}
validate_rounds=${ORDERFLOW_LOADTEST_VALIDATE_ROUNDS:-2}
ceiling_rate=${ORDERFLOW_LOADTEST_CEILING_RATE:-20000}
ceiling_duration=${ORDERFLOW_LOADTEST_CEILING_DURATION:-10s}
postgres=${ORDERFLOW_LOADTEST_POSTGRES:-}
# "Lifted": far above any rate this machine reaches, so the gateway never paces.
sms_lifted=1000000
sms_limit=${ORDERFLOW_LOADTEST_SMS_LIMIT:-50}

# ORDERFLOW_LOADTEST_RESUME=DIR: go on with a kept run directory (ORDERFLOW_LOADTEST_KEEP)
# of the same backend and knobs; the runs it already holds are not made again.
run_dir=${ORDERFLOW_LOADTEST_RESUME:-$(mktemp -d /tmp/orderflow-loadtest.XXXXXX)}
charts_dir=docs/benchmarks/$backend
tansu_pid=""
service_pid=""
vhost=""
stack_suffix=""
cleanup() {
  if [ -n "$service_pid" ]; then kill "$service_pid" 2>/dev/null || true; fi
  # Services before their virtual host (stack_down is defined further down).
  if [ -n "$stack_suffix" ]; then stack_down; fi
  if [ -n "$tansu_pid" ]; then kill "$tansu_pid" 2>/dev/null || true; fi
  if [ -n "$vhost" ]; then rabbitmqctl delete_vhost "$vhost" >/dev/null 2>&1 || true; fi
  if [ -z "${ORDERFLOW_LOADTEST_KEEP:-}${ORDERFLOW_LOADTEST_RESUME:-}" ]; then rm -rf "$run_dir"; else log "kept $run_dir"; fi
}
trap cleanup EXIT

broker_args=()
broker_note="the embedded memory broker"
case $backend in
  memory) broker_args=(--broker memory://) ;;
  rabbitmq)
    ensure_rabbitmq
    # A virtual host of this run's own: the services' queues (payment, sms, …) would
    # otherwise be shared with anything else on the broker, a stack from scripts/up.sh say.
    vhost="orderflow-loadtest-$$-$RANDOM"
    rabbitmqctl add_vhost "$vhost" >/dev/null
    rabbitmqctl set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null
    broker_args=(--broker "amqp://guest:guest@127.0.0.1:5672/$vhost")
    broker_note="RabbitMQ $(rabbitmqctl version 2>/dev/null || echo '(version unknown)') on loopback, a virtual host of this run's own"
    ;;
  kafka)
    if [ -n "${ORDERFLOW_KAFKA_URL:-}" ]; then
      broker_args=(--broker "$ORDERFLOW_KAFKA_URL")
      broker_note="a Kafka-protocol broker at $ORDERFLOW_KAFKA_URL"
    else
      # Memory storage, as scripts/bench.sh runs it: tansu 0.6.0 on SQLite storage
      # panicked under the 10x burst here ("more or less than one row", lite.rs:503).
      ensure_tansu_binary
      kafka_port=$(free_port)
      tansu_pid=$(start_tansu "$kafka_port" "memory://tansu/" "$run_dir/tansu.log")
      broker_args=(--broker "kafka://127.0.0.1:$kafka_port")
      broker_note="the Kafka protocol: tansu $TANSU_VERSION on loopback, memory storage, private to this run"
    fi
    ;;
  stack)
    ensure_rabbitmq
    ensure_postgres
    ensure_postgres_access
    # As for rabbitmq: the services' queues on a virtual host of this run's own, so a
    # stack from scripts/up.sh beside it keeps its queues to itself.
    vhost="orderflow-loadtest-$$-$RANDOM"
    rabbitmqctl add_vhost "$vhost" >/dev/null
    rabbitmqctl set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null
    stack_broker="amqp://guest:guest@127.0.0.1:5672/$vhost"
    stack_port=$(free_ports 5)
    broker_note="RabbitMQ $(rabbitmqctl version 2>/dev/null || echo '(version unknown)') on loopback, a virtual host of this run's own"
    postgres_note="PostgreSQL $(psql -h 127.0.0.1 -U postgres -d postgres -Atc 'show server_version' 2>/dev/null | cut -d' ' -f1) on loopback"
    ;;
  *) die "usage: scripts/loadtest.sh [memory|rabbitmq|kafka|stack]" ;;
esac
stack_args=("${broker_args[@]}")
if [ -n "$postgres" ]; then
  ensure_postgres
  stack_args+=(--postgres "$postgres")
fi

ensure_cargo_tool oha "$OHA_VERSION"
log "building the release binaries"
packages=(-p orderflow -p orderflow-order)
if [ "$backend" = stack ]; then
  packages+=(-p orderflow-payment -p orderflow-points -p orderflow-sms -p orderflow-logging)
fi
cargo build --release --quiet "${packages[@]}" --bins
orderflow=target/release/orderflow

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# Kept with the runs, so a resumed run states the load average its first run began with.
[ -s "$run_dir/start.load" ] || loadavg >"$run_dir/start.load"
load_at_start=$(cat "$run_dir/start.load")

# measured NAME: a resumed run already holds NAME's result.
measured() { [ -n "${ORDERFLOW_LOADTEST_RESUME:-}" ] && [ -s "$run_dir/$1.json" ]; }

# measure NAME ARGS...: one `orderflow load --json` run, its JSON in $run_dir/NAME.json and
# the load average just before it in $run_dir/NAME.load.
measure() {
  local name=$1
  shift
  if measured "$name"; then
    log "load: $name, measured before ($run_dir/$name.json)"
    return 0
  fi
  log "load: $name ($*)"
  loadavg >"$run_dir/$name.load"
  env -u ORDERFLOW_BROKER -u ORDERFLOW_DEMO_POSTGRES RUST_LOG=${RUST_LOG:-warn} \
    "$orderflow" load "$@" --json >"$run_dir/$name.json" 2>"$run_dir/$name.log" ||
    { tail -20 "$run_dir/$name.log" >&2; die "load $name failed"; }
}

# --- the five services as processes (stack) ----------------------------------------------
# Each run gets a fresh stack from scripts/up.sh rabbitmq — on the run's virtual host, on
# ports and with databases of its own (new databases for every run, so none inherits
# another's backlog or rows) — and scripts/down.sh after it. The load generator is
# `orderflow load --target` in a process of its own; it watches the stages and every
# group's backlog through the broker (a consumer group of its own on the same virtual
# host) and the logged stage through the logging service's API.
#
# What the in-process backends measure and the processes do not: the logging service
# stopped mid-run (`--logging-down` stops and restarts it inside the generator's process,
# which it can only do for the services it runs itself). The synchronous baseline is
# measured: the order service reads ORDERFLOW_WIRING=sync from the environment scripts/up.sh
# passes on (up.sh itself never sets it), and its calls go to the stack's own ports.
stack_target=()
if [ "$backend" = stack ]; then
  stack_target=(--target "http://127.0.0.1:$stack_port" --broker "$stack_broker"
    --logging-url "http://127.0.0.1:$((stack_port + 4))")
fi
stack_runs=0

# stack_up [VARIABLE=VALUE...]: a fresh stack, its five services given the VARIABLE=VALUEs.
stack_up() {
  stack_runs=$((stack_runs + 1))
  stack_suffix="_loadtest_$$_$stack_runs"
  log "stack: scripts/up.sh rabbitmq on ports $stack_port-$((stack_port + 4)) ($*)"
  env "$@" ORDERFLOW_RUN_DIR="$run_dir/stack" ORDERFLOW_AMQP_URL="$stack_broker" \
    ORDERFLOW_UP_FIRST_PORT="$stack_port" ORDERFLOW_DATABASE_SUFFIX="$stack_suffix" \
    ORDERFLOW_PAYMENT_URL="http://127.0.0.1:$((stack_port + 1))" \
    ORDERFLOW_POINTS_URL="http://127.0.0.1:$((stack_port + 2))" \
    ORDERFLOW_SMS_URL="http://127.0.0.1:$((stack_port + 3))" \
    ORDERFLOW_LOGGING_URL="http://127.0.0.1:$((stack_port + 4))" \
    RUST_LOG=${RUST_LOG:-warn} scripts/up.sh rabbitmq >"$run_dir/up-$stack_runs.log" 2>&1 ||
    { tail -20 "$run_dir/up-$stack_runs.log" >&2; die "scripts/up.sh failed"; }
}

# stack_down: stops the stack (scripts/down.sh) and drops its databases.
stack_down() {
  [ -n "$stack_suffix" ] || return 0
  ORDERFLOW_RUN_DIR="$run_dir/stack" scripts/down.sh >>"$run_dir/down.log" 2>&1 || true
  local service
  for service in order payment points sms logging; do
    psql -h 127.0.0.1 -U postgres -d postgres -qAtc \
      "DROP DATABASE IF EXISTS \"orderflow_$service$stack_suffix\" WITH (FORCE)" >/dev/null 2>&1 || true
  done
  stack_suffix=""
}

# stack_measure NAME "VARIABLE=VALUE ..." ARGS...: `measure NAME ARGS...` on a fresh stack.
stack_measure() {
  local name=$1 variables=$2
  shift 2
  if measured "$name"; then measure "$name"; return 0; fi
  # shellcheck disable=SC2086 # the words of $variables are the assignments
  stack_up $variables
  measure "$name" "$@"
  stack_down
}

# --- steady, burst, and the synchronous baseline -------------------------------------------
if [ "$backend" = stack ]; then
  stack_measure steady "ORDERFLOW_SMS_RATE_PER_S=$sms_limit" "${stack_target[@]}" \
    --rate "$rate" --duration "$steady" --out "$run_dir/steady"
  stack_measure burst "ORDERFLOW_SMS_RATE_PER_S=$sms_limit" "${stack_target[@]}" \
    --rate "$rate" --duration "$compare_duration" --burst "$burst" --out "$run_dir/burst"
  # Nothing is queued in the synchronous wiring: no broker to watch.
  stack_measure sync-burst "ORDERFLOW_SMS_RATE_PER_S=$sms_limit ORDERFLOW_WIRING=sync" \
    --target "http://127.0.0.1:$stack_port" --rate "$rate" --duration "$compare_duration" \
    --burst "$burst" --out "$run_dir/sync-burst"
else
  measure steady "${stack_args[@]}" --rate "$rate" --duration "$steady" --out "$run_dir/steady"
  measure compare "${stack_args[@]}" --compare --rate "$rate" --duration "$compare_duration" \
    --burst "$burst" --out "$run_dir/compare"
fi

# --- the highest sustainable rate ----------------------------------------------------------
# Doubling while a rate passes, then halving the gap between the last pass and the first
# failure, $search_runs runs in all; the SMS limit lifted.
passes() {
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = r["totals"]
ok = (t["errors"] + t["timeouts"] + t["dropped"] == 0
      and r["latency_ms"]["p99_ms"] < 100
      and r["settled"] == t["accepted"])
sys.exit(0 if ok else 1)
PY
}
# search_run NAME RATE: one run of the search.
search_run() {
  if [ "$backend" = stack ]; then
    stack_measure "$1" "ORDERFLOW_SMS_RATE_PER_S=$sms_lifted" "${stack_target[@]}" \
      --rate "$2" --duration "$search_duration" --drain "$search_drain"
  else
    measure "$1" "${stack_args[@]}" --rate "$2" --duration "$search_duration" \
      --sms-rate "$sms_lifted" --drain "$search_drain"
  fi
}
low=0
high=0
next=$search_start
: >"$run_dir/search.list"
for ((i = 1; i <= search_runs; i++)); do
  name="search-$i"
  search_run "$name" "$next"
  echo "$name" >>"$run_dir/search.list"
  if passes "$run_dir/$name.json"; then low=$next; else high=$next; fi
  if [ "$high" = 0 ]; then
    next=$((low * 2))
  else
    next=$(((low + high) / 2))
    # Closer than 5 % (or 10 orders/s): the answer is known well enough.
    if [ $((high - low)) -le $((low / 20 > 10 ? low / 20 : 10)) ]; then break; fi
  fi
done

# --- validation against oha, and the generator's ceiling ------------------------------------
# The same fixed rate from orderflow and from oha on one target — one order-service process
# (memory broker, SQLite: the API alone), or for stack the stack's order service with the
# other four behind it — then the generator against GET /healthz of the same target.
if [ "$backend" = stack ]; then
  stack_up "ORDERFLOW_SMS_RATE_PER_S=$sms_limit"
  port=$stack_port
else
  port=$(free_port)
  ORDERFLOW_BROKER=memory:// DATABASE_URL="sqlite://$run_dir/validate-order.db" \
    ORDERFLOW_HTTP_ADDR="127.0.0.1:$port" RUST_LOG=warn \
    target/release/order-service >"$run_dir/order-service.log" 2>&1 &
  service_pid=$!
  for ((i = 0; i < 300; i++)); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || die "the order service did not start"
fi
# Taking turns, so a change in what else the shared machine runs falls on both tools.
for ((round = 1; round <= validate_rounds; round++)); do
  measure "validate-orderflow-$round" --target "http://127.0.0.1:$port" --rate "$validate_rate" \
    --duration "$validate_duration"
  if [ -n "${ORDERFLOW_LOADTEST_RESUME:-}" ] && [ -s "$run_dir/validate-oha-$round.json" ]; then continue; fi
  log "oha: $validate_rate/s for $validate_duration, --latency-correction (round $round)"
  loadavg >"$run_dir/validate-oha-$round.load"
  "$OHA_BIN" -q "$validate_rate" -z "$validate_duration" --latency-correction --no-tui \
    --output-format json -m POST -H 'content-type: application/json' \
    -d '{"user_id":42,"phone":"+8613800138000","items":[{"sku":"tea","quantity":2,"unit_price_cents":3550}]}' \
    "http://127.0.0.1:$port/orders" >"$run_dir/validate-oha-$round.json" 2>"$run_dir/validate-oha-$round.log" ||
    { tail -20 "$run_dir/validate-oha-$round.log" >&2; die "oha failed"; }
done
measure ceiling --target "http://127.0.0.1:$port" --get /healthz --rate "$ceiling_rate" \
  --duration "$ceiling_duration"
if [ -n "$service_pid" ]; then
  kill "$service_pid" 2>/dev/null || true
  wait "$service_pid" 2>/dev/null || true
  service_pid=""
fi
stack_down

# --- the charts and the section ----------------------------------------------------------------
mkdir -p "$charts_dir"
if [ "$backend" = stack ]; then
  cp "$run_dir/burst/peak-shaving.svg" "$charts_dir/peak-shaving.svg"
  cp "$run_dir/burst/latency.svg" "$charts_dir/latency-burst.svg"
  cp "$run_dir/sync-burst/peak-shaving.svg" "$charts_dir/sync-burst.svg"
else
  cp "$run_dir/compare/async/peak-shaving.svg" "$charts_dir/peak-shaving.svg"
  cp "$run_dir/compare/async/latency.svg" "$charts_dir/latency-burst.svg"
  cp "$run_dir/compare/sync/peak-shaving.svg" "$charts_dir/sync-burst.svg"
  cp "$run_dir/compare/compare.svg" "$charts_dir/compare.svg"
  cp "$run_dir/compare/async-logging-down/logging-down.svg" "$charts_dir/logging-down-async.svg"
  cp "$run_dir/compare/sync-logging-down/logging-down.svg" "$charts_dir/logging-down-sync.svg"
fi
cp "$run_dir/steady/latency.svg" "$charts_dir/latency-steady.svg"

ORDERFLOW_LOAD_AT_START="$load_at_start" ORDERFLOW_SMS_LIMIT="$sms_limit" \
  ORDERFLOW_POSTGRES_NOTE="${postgres_note:-}" \
  ORDERFLOW_BACKEND="$backend" ORDERFLOW_CHARTS="$charts_dir" ORDERFLOW_OHA="$OHA_VERSION" \
  ORDERFLOW_SMS_LIFTED="$sms_lifted" ORDERFLOW_SEARCH_DRAIN="$search_drain" \
  ORDERFLOW_POSTGRES="$postgres" ORDERFLOW_VALIDATE_ROUNDS="$validate_rounds" ORDERFLOW_BROKER_NOTE="$broker_note" \
  python3 - "$run_dir" >"$run_dir/section.md" <<'PY'
import datetime, json, os, platform, subprocess, sys

run = sys.argv[1]
env = os.environ.get
def load(name):
    return json.load(open(f"{run}/{name}.json"))
def loadavg(name):
    return open(f"{run}/{name}.load").read().split()[0]
def sh(command):
    try:
        return subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return ""
def ms(value):
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
def backlog_peak(report, group):
    return next((g["peak"] for g in report["backlog"] if g["group"] == group), None)
def stage(report, name):
    return next((s for s in report["stages"] if s["stage"] == name), None)

def figures(report):
    """One wiring's figures of a --target run, as `--compare` gives them for the in-process
    stack (src/load/compare.rs, WiringFigures::of): accepted/s within the base-rate and
    the burst's seconds, from the per-second series."""
    profile = report["setup"]["profile"]
    burst = profile["burst"]
    seconds = max(int(profile["duration_s"]), 1)
    start = int(burst["start_s"])
    end = max(int(min(burst["start_s"] + burst["length_s"], profile["duration_s"])), start + 1)
    def per_second(pick):
        chosen = [second for second in range(seconds) if pick(second)]
        accepted = sum(row["accepted"] for row in report["series"] if row["second"] in chosen)
        return round(accepted / max(len(chosen), 1), 1)
    t = report["totals"]
    return {
        "offered": t["offered"], "accepted": t["accepted"], "errors": t["errors"],
        "timeouts": t["timeouts"], "dropped": t["dropped"],
        "accepted_per_s_base": per_second(lambda second: not start <= second < end),
        "accepted_per_s_burst": per_second(lambda second: start <= second < end),
        "latency_base_ms": report["latency_base_ms"], "latency_burst_ms": report["latency_burst_ms"],
        "sms_backlog_peak": backlog_peak(report, "sms"),
    }

backend = env("ORDERFLOW_BACKEND")
processes = backend == "stack"
charts = env("ORDERFLOW_CHARTS")
steady = load("steady")
if processes:
    burst_report = load("burst")
    a, s = figures(burst_report), figures(load("sync-burst"))
else:
    compare = load("compare")
    burst_report = json.load(open(f"{run}/compare/async/report.json"))
    a, s = compare["async"], compare["sync"]
setup = steady["setup"]
# The processes' SMS limit is what the script gave them; the in-process stack reports its own.
sms_limit = setup["sms_limit_per_s"] if setup["sms_limit_per_s"] is not None else float(env("ORDERFLOW_SMS_LIMIT"))
profile = burst_report["setup"]["profile"]
burst = profile["burst"]
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip() or platform.processor()
memory_gib = int(sh("grep MemTotal /proc/meminfo | awk '{print $2}'") or 0) // (1024 * 1024)
databases = "PostgreSQL (one database per service)" if env("ORDERFLOW_POSTGRES") else "SQLite (one file per service)"

out = []
p = out.append
p(f"## End to end: {backend}")
p("")
p(f"Written by `scripts/loadtest.sh {backend}` from the run it made; run it again to refresh. "
  "Every figure below was measured in that run.")
p("")
def stamp(name):
    when = datetime.datetime.fromtimestamp(os.path.getmtime(f"{run}/{name}.json"), datetime.timezone.utc)
    return when.strftime('%Y-%m-%d %H:%M UTC')
p(f"- measured: from {stamp('steady')} (the steady run ended) to {stamp('ceiling')} (the last run ended)")
p(f"- machine: {os.cpu_count()} cores ({cpu}), {memory_gib} GiB, {platform.system()} {platform.release()}, "
  f"shared with other work; load average (1, 5, 15 min) when the run began: {env('ORDERFLOW_LOAD_AT_START')}, "
  f"before its last run: {open(f'{run}/ceiling.load').read().strip()}; the 1-minute figure before each run is in its row")
generator = (f"open loop, latency from each request's intended send time (coordinated omission corrected), "
             f"at most {setup['max_in_flight']} in flight, timeout {setup['timeout_ms']} ms")
if processes:
    p(f"- stack: the five services as separate processes (`scripts/up.sh rabbitmq`, release build) on "
      f"{env('ORDERFLOW_BROKER_NOTE')}, each with its own database on {env('ORDERFLOW_POSTGRES_NOTE')}; "
      "a fresh stack with new databases for every run, stopped by `scripts/down.sh` after it")
    p(f"- the load generator: `orderflow load --target` (release build) in a process of its own on the same machine, "
      f"{generator}; it watches the stages and every group's backlog through the broker (a consumer group of its "
      "own on the same virtual host) and the logged stage through the logging service's API")
    sms_setting = f"`ORDERFLOW_SMS_RATE_PER_S={env('ORDERFLOW_SMS_LIFTED')}`"
else:
    p(f"- stack: the five services in one process (`orderflow load`, release build) on {env('ORDERFLOW_BROKER_NOTE')}, "
      f"databases {databases}; the load generator in the same process, {generator}")
    sms_setting = f"`--sms-rate {env('ORDERFLOW_SMS_LIFTED')}`"
p(f"- gateways at their defaults: payment answers in 5 ms, the SMS gateway takes {sms_limit:g} texts/s "
  f"(10 ms each), except in the sustainable-rate search, where its limit is lifted ({sms_setting})")
p("")

p("### Steady, burst, and the synchronous baseline")
p("")
load_args = (f"--rate {profile['rate_per_s']:g} --duration {profile['duration_s']:g}s "
             f"--burst {burst['multiplier']:g}x:{burst['length_s']:g}s@{burst['start_s']:g}s")
if processes:
    p(f"`orderflow load --target … {load_args}` against a fresh stack wired through the queue (async), and the same "
      "against a fresh stack whose order service runs with `ORDERFLOW_WIRING=sync`, calling payment, points, SMS and "
      "logging over HTTP in the request, each through that service's own handler (sync; nothing is queued, so no "
      f"broker is watched); and a steady run of {steady['setup']['profile']['duration_s']:g} s at the base rate "
      f"(load average before it {loadavg('steady')}; before the async burst {loadavg('burst')}, "
      f"before the sync one {loadavg('sync-burst')}).")
else:
    p(f"`orderflow load --compare {load_args}`: the same load on a fresh "
      "stack wired through the queue (async) and with `POST /orders` calling payment, points, SMS and logging in the "
      f"request (sync); and a steady run of {steady['setup']['profile']['duration_s']:g} s at the base rate "
      f"(load average before it {loadavg('steady')}; before the comparison {loadavg('compare')}).")
p("")
p("| | steady run | async | sync |")
p("| --- | ---: | ---: | ---: |")
st = steady
p(f"| orders offered / accepted | {st['totals']['offered']:,} / {st['totals']['accepted']:,} | "
  f"{a['offered']:,} / {a['accepted']:,} | {s['offered']:,} / {s['accepted']:,} |")
p(f"| accepted orders/s, base-rate seconds | {st['totals']['accepted_per_s']:.1f} | {a['accepted_per_s_base']:.1f} | {s['accepted_per_s_base']:.1f} |")
p(f"| accepted orders/s, burst seconds | – | {a['accepted_per_s_burst']:.1f} | {s['accepted_per_s_burst']:.1f} |")
p(f"| errors / timeouts / dropped | {st['totals']['errors']} / {st['totals']['timeouts']} / {st['totals']['dropped']} | "
  f"{a['errors']:,} / {a['timeouts']:,} / {a['dropped']:,} | {s['errors']:,} / {s['timeouts']:,} / {s['dropped']:,} |")
for key, label in [("p50_ms", "p50"), ("p99_ms", "p99"), ("p99_9_ms", "p99.9")]:
    p(f"| API {label}, ms, base rate | {ms(st['latency_ms'][key])} | {ms(a['latency_base_ms'][key])} | {ms(s['latency_base_ms'][key])} |")
for key, label in [("p50_ms", "p50"), ("p99_ms", "p99"), ("p99_9_ms", "p99.9")]:
    p(f"| API {label}, ms, during the burst | – | {ms(a['latency_burst_ms'][key])} | {ms(s['latency_burst_ms'][key])} |")
sms = stage(burst_report, "sms")
steady_sms = stage(st, "sms")
p(f"| SMS backlog peak, messages | {backlog_peak(st, 'sms')} | {a['sms_backlog_peak']} | no queue |")
if sms and steady_sms:
    p(f"| orders that got their SMS | {steady_sms['orders']:,} | {sms['orders']:,} | in the request |")
    p(f"| SMS p50 / max, s after the order's intended send | {steady_sms['latency_ms']['p50_ms'] / 1000:.2f} / "
      f"{steady_sms['latency_ms']['max_ms'] / 1000:.2f} | {sms['latency_ms']['p50_ms'] / 1000:.2f} / "
      f"{sms['latency_ms']['max_ms'] / 1000:.2f} | – |")
p("")
ratio_async = a["latency_burst_ms"]["p99_ms"] / max(a["latency_base_ms"]["p99_ms"], 0.001)
ratio_sync = s["latency_burst_ms"]["p99_ms"] / max(s["latency_base_ms"]["p99_ms"], 0.001)
sms_max_per_s = max((row["stages"].get("sms", 0) for row in burst_report["series"]), default=0)
p(f"Under the burst the async API's p99 was {ratio_async:.1f}× its base-rate p99 and the sync API's "
  f"{ratio_sync:.1f}× (with {s['errors'] + s['timeouts']:,} of {s['offered']:,} requests failed); "
  f"the SMS backlog peaked at {a['sms_backlog_peak']} and ended at "
  f"{next((g['last'] for g in burst_report['backlog'] if g['group'] == 'sms'), None)}, "
  f"SMS sent/s at most {sms_max_per_s} (gateway limit {sms_limit:g}/s; texts are counted in the "
  "second the gateway accepted them, the `sent_at` of their event). "
  "Latency counts every answer, refusals too.")
p("")
sms_last = next((g['last'] for g in burst_report['backlog'] if g['group'] == 'sms'), None)
def verdict(ok):
    return "met" if ok else "not met"
p(f"Targets of the peak-shaving claim, as measured here: async burst p99 within 2× its base p99 — "
  f"{verdict(ratio_async <= 2)}; sync burst p99 10× its base p99 or more, or failing — "
  f"{verdict(ratio_sync >= 10 or s['errors'] + s['timeouts'] > 0)}; the SMS backlog drained to 0 and SMS sent/s "
  f"never above the limit — {verdict(sms_last == 0 and sms_max_per_s <= sms_limit)}.")
p("")
p(f"![Peak shaving on {backend}: offered load, orders accepted, SMS sent and the SMS backlog]({charts}/peak-shaving.svg)")
p("")
side_by_side = "" if processes else f" · [async vs sync side by side]({charts}/compare.svg)"
p(f"Charts: [peak shaving, async]({charts}/peak-shaving.svg) · [the same burst, sync]({charts}/sync-burst.svg) · "
  f"[API latency per second under the burst, async]({charts}/latency-burst.svg) · "
  f"[API latency, steady run]({charts}/latency-steady.svg){side_by_side}")
p("")

p("### The logging service stopped")
p("")
if processes:
    p("Not part of the stack set: `--logging-down` stops the logging service and starts it again inside the load "
      "generator's own process, which it can do only for the services it runs itself (the in-process backends' "
      "sections show it). With the services as processes the same experiment needs the script to stop and restart "
      "one of them mid-run, which it does not do.")
    p("")
else:
    down = compare["logging_down"]
    o = down["outage"]
    p(f"Part of the same `--compare`: at the base rate with no burst, the logging service stopped {o['start_s']:g} s "
      f"into the run and started again {o['length_s']:g} s later, on its port and database.")
    p("")
    da, ds = down["async"], down["sync"]
    p("| | async | sync |")
    p("| --- | ---: | ---: |")
    p(f"| logging stopped / ready again, s after the start | {da['outage']['stopped_at_s']:.1f} / {da['outage']['ready_again_at_s']:.1f} | "
      f"{ds['outage']['stopped_at_s']:.1f} / {ds['outage']['ready_again_at_s']:.1f} |")
    p(f"| requests scheduled while it was down | {da['outage']['offered']:,} | {ds['outage']['offered']:,} |")
    p(f"| accepted orders/s while it was down | {da['outage']['accepted_per_s']:.1f} | {ds['outage']['accepted_per_s']:.1f} |")
    p(f"| errors + timeouts while it was down | {da['outage']['failed']:,} | {ds['outage']['failed']:,} |")
    for key, label in [("p50_ms", "p50"), ("p99_ms", "p99"), ("p99_9_ms", "p99.9")]:
        p(f"| API {label}, ms, while it was down | {ms(da['outage']['latency_ms'][key])} | {ms(ds['outage']['latency_ms'][key])} |")
    p(f"| logging backlog peak / at the end, messages | {da['outage']['logging_backlog_peak']} / {da['outage']['logging_backlog_last']} | no queue |")
    p(f"| accepted orders fully logged by the end | {da['logged']:,} of {da['accepted']:,} | in the request ({ds['accepted']:,} accepted) |")
    p("")
    p(f"Charts: [async]({charts}/logging-down-async.svg) · [sync]({charts}/logging-down-sync.svg)")
    p("")

p("### The highest sustainable rate")
p("")
p(f"With the SMS limit lifted, a rate passes when nothing fails (errors, timeouts, drops), API p99 stays under "
  f"100 ms and every accepted order settles (all stages, logged included) within {env('ORDERFLOW_SEARCH_DRAIN')} "
  "after the load — the backlog stays bounded. Doubling from the start rate, then halving the gap.")
p("")
p("| rate, orders/s | load avg | accepted/s | errors+timeouts+drops | late sends | API p50 / p99, ms | settled / accepted | largest backlog peak | verdict |")
p("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
best = None
for name in open(f"{run}/search.list").read().split():
    r = load(name)
    t = r["totals"]
    failed = t["errors"] + t["timeouts"] + t["dropped"]
    ok = failed == 0 and r["latency_ms"]["p99_ms"] < 100 and r["settled"] == t["accepted"]
    peaks = [(g["peak"], g["group"]) for g in r["backlog"] if g["peak"] is not None and not g["group"].startswith("load")]
    peak = max(peaks) if peaks else (None, "-")
    rate = r["setup"]["profile"]["rate_per_s"]
    if ok and (best is None or rate > best[0]):
        best = (rate, r)
    p(f"| {rate:g} | {loadavg(name)} | {t['accepted_per_s']:.1f} | {failed:,} | {t['late']:,} | "
      f"{ms(r['latency_ms']['p50_ms'])} / {ms(r['latency_ms']['p99_ms'])} | {r['settled']:,} / {t['accepted']:,} | "
      f"{peak[0]} ({peak[1]}) | {'passes' if ok else 'fails'} |")
p("")
if best:
    p(f"Highest sustainable rate measured on {backend}: **{best[0]:g} orders/s** "
      f"({best[1]['setup']['profile']['duration_s']:g} s runs).")
else:
    p(f"No rate tried passed on {backend}.")
p("")

p("### Validation against oha, and the generator's own ceiling")
p("")
rounds = int(env("ORDERFLOW_VALIDATE_ROUNDS"))
vo = load("validate-orderflow-1")
validated = ("The stack's order service (a fresh stack as above, the SMS gateway at its default; the other four "
             "services working off the orders behind it)" if processes else
             "One order-service process (release build, memory broker, SQLite: the API alone)")
p(f"{validated}, "
  f"`POST /orders` at {vo['setup']['profile']['rate_per_s']:g} requests/s for {vo['setup']['profile']['duration_s']:g} s, "
  f"from `orderflow load --target` and from oha {env('ORDERFLOW_OHA')} "
  f"(`oha -q {vo['setup']['profile']['rate_per_s']:g} -z {vo['setup']['profile']['duration_s']:g}s --latency-correction`, "
  f"its default 50 connections), taking turns, {rounds} rounds each. Both measure from each request's intended send time.")
p("")
p("| round | tool | load avg | requests | 2xx | errors | p50, ms | p90, ms | p99, ms | max, ms |")
p("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
def sec(value):
    return ms(value * 1000) if isinstance(value, (int, float)) else "?"
oha_error_kinds = {}
for round in range(1, rounds + 1):
    vo = load(f"validate-orderflow-{round}")
    vt = vo["totals"]
    p(f"| {round} | orderflow load | {loadavg(f'validate-orderflow-{round}')} | {vt['sent']:,} | {vt['accepted']:,} | "
      f"{vt['errors'] + vt['timeouts']:,} | {ms(vo['latency_ms']['p50_ms'])} | {ms(vo['latency_ms']['p90_ms'])} | "
      f"{ms(vo['latency_ms']['p99_ms'])} | {ms(vo['latency_ms']['max_ms'])} |")
    oha = json.load(open(f"{run}/validate-oha-{round}.json"))
    lp = oha.get("latencyPercentiles", {})
    summary = oha.get("summary", {})
    statuses = oha.get("statusCodeDistribution", {})
    errors = oha.get("errorDistribution") or {}
    for kind, count in errors.items():
        oha_error_kinds[kind] = oha_error_kinds.get(kind, 0) + count
    oha_ok = sum(v for k, v in statuses.items() if str(k).startswith("2"))
    oha_errors = sum(errors.values())
    p(f"| {round} | oha | {loadavg(f'validate-oha-{round}')} | {sum(statuses.values()) + oha_errors:,} | {oha_ok:,} | "
      f"{oha_errors:,} | {sec(lp.get('p50'))} | {sec(lp.get('p90'))} | {sec(lp.get('p99'))} | {sec(summary.get('slowest'))} |")
p("")
def both(round):
    ours = load(f"validate-orderflow-{round}")["latency_ms"]
    theirs = json.load(open(f"{run}/validate-oha-{round}.json")).get("latencyPercentiles", {})
    return ours, theirs
pairs = [both(round) for round in range(1, rounds + 1)]
if all(isinstance(theirs.get("p99"), (int, float)) for _, theirs in pairs):
    d50 = [ours["p50_ms"] - theirs["p50"] * 1000 for ours, theirs in pairs]
    d99 = [ours["p99_ms"] - theirs["p99"] * 1000 for ours, theirs in pairs]
    p(f"orderflow minus oha, per round: p50 {', '.join(f'{d:+.1f}' for d in d50)} ms; "
      f"p99 {', '.join(f'{d:+.1f}' for d in d99)} ms.")
    p("")
if oha_error_kinds:
    kinds = "; ".join(f"{count} × {kind}" for kind, count in oha_error_kinds.items())
    p(f"oha's errors: {kinds} (requests still in flight when `-z` ran out).")
    p("")
c = load("ceiling")
ct = c["totals"]
p(f"The generator's ceiling: `orderflow load --target … --get /healthz --rate {c['setup']['profile']['rate_per_s']:g} "
  f"--duration {c['setup']['profile']['duration_s']:g}s` against the same {'service' if processes else 'process'}, "
  f"on the same {os.cpu_count()} cores "
  f"(load average before it {loadavg('ceiling')}): {ct['offered']:,} requests scheduled, {ct['sent']:,} sent, "
  f"{ct['dropped']:,} dropped at the in-flight limit, {ct['accepted']:,} answered 2xx "
  f"({ct['accepted_per_s']:,.0f}/s), {ct['errors'] + ct['timeouts']:,} errors or timeouts; "
  f"**{ct['late']:,} sent late** (more than {c['setup']['late_after_ms']} ms after their time; send lag p99 "
  f"{ms(c['send_lag_ms']['p99_ms'])} ms, max {ms(c['send_lag_ms']['max_ms'])} ms), and API p99 {ms(c['latency_ms']['p99_ms'])} ms "
  "from the intended times. When it cannot keep the schedule, it says so in these counts rather than slowing down. "
  f"Kept the schedule at {c['setup']['profile']['rate_per_s']:,.0f}/s (nothing late or dropped, "
  f"every request answered): {'yes' if ct['late'] == 0 and ct['dropped'] == 0 and ct['accepted'] == ct['offered'] else 'no'}.")
print("\n".join(out))
PY
write_section BENCHMARKS.md "end-to-end-$backend" "scripts/loadtest.sh $backend" "$run_dir/section.md"
log "wrote the end-to-end ($backend) section of BENCHMARKS.md and $charts_dir/"
cat "$run_dir/section.md"
