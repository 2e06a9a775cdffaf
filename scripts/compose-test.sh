#!/usr/bin/env bash
# scripts/compose-test.sh — docker-compose.yml run for real: build, up, orders, reconcile.
#
# No Docker engine runs on the test machine and no image can be pulled, so the script
# brings its own engine and images (scripts/lib/podman.sh): podman's Docker-compatible API
# under Debian's docker-compose 1.29, a local Debian base image (debootstrap, made once),
# stand-ins for the official postgres / rabbitmq / apache/kafka images built on it from
# docker/stand-ins/ (Debian's PostgreSQL and RabbitMQ, the host's tansu), and the
# orderflow image from the Dockerfile's `prebuilt` stage (binaries built on the host).
# docker/compose.test*.yml swap those images in; the user's files keep the official ones.
# The host ports are the compose files' own knobs (ORDERFLOW_*_PORT), set to free ones.
#
# The orderflow CLI does the work: `orderflow place` places the demo's orders through the
# order API's published port, `orderflow reconcile --wait-for N` waits until they settled
# and says whether every effect happened exactly once.
#
# Phases, on each broker: first only the order service (and what it depends on) is up,
# and 50 orders are placed as soon as its API answers — before payment, points, SMS and
# logging have ever run (topology before traffic: these must not be lost); then the rest
# comes up and 200 more orders are placed; all 250 must settle exactly.
# RabbitMQ (docker-compose.yml) then runs --scale sms=3, 300 orders with one SMS container
# killed mid-run, every SMS container sent some, still exact; down -v.
# Kafka (docker-compose.kafka.yml, tansu): the early orders and the 200; down -v.
# On both, once the orders settled: the `observability` profile's Prometheus (a Debian
# stand-in) is started and must have scraped every service (`up` = 1 for each of the five
# jobs, and each consumer group's acked deliveries > 0 through Prometheus's query API);
# on RabbitMQ also each of the three SMS replicas after --scale sms=3.
#
# Needs root (apt-get, rootful podman). Without it, or when a prerequisite cannot be
# installed, the test is skipped with a message — unless CI=true: then it fails.
# Any failure of the stack itself fails (exit 1) with the reason and the containers' logs.
#
# Knobs: ORDERFLOW_COMPOSE_TEST_EARLY_ORDERS (50), ORDERFLOW_COMPOSE_TEST_ORDERS (200), ORDERFLOW_COMPOSE_TEST_SCALE_ORDERS (300),
# ORDERFLOW_COMPOSE_TEST_DEADLINE (seconds per wait, 240),
# ORDERFLOW_COMPOSE_TEST_PHASES ("rabbitmq kafka"), ORDERFLOW_COMPOSE_TEST_LOGS (a directory
# to keep every container's log in).
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$PWD
source scripts/lib/brokers.sh
source scripts/lib/podman.sh

early_orders=${ORDERFLOW_COMPOSE_TEST_EARLY_ORDERS:-50}
orders=${ORDERFLOW_COMPOSE_TEST_ORDERS:-200}
scale_orders=${ORDERFLOW_COMPOSE_TEST_SCALE_ORDERS:-300}
deadline=${ORDERFLOW_COMPOSE_TEST_DEADLINE:-240}
phases=${ORDERFLOW_COMPOSE_TEST_PHASES:-rabbitmq kafka}
project=orderflow-compose-test
socket=/run/podman/podman.sock
base_image=localhost/orderflow-test-base:bookworm
test_image=localhost/orderflow-test:latest
postgres_image=localhost/orderflow-standin-postgres:bookworm
rabbitmq_image=localhost/orderflow-standin-rabbitmq:bookworm
prometheus_image=localhost/orderflow-standin-prometheus:bookworm
kafka_image=localhost/orderflow-standin-kafka:tansu-$TANSU_VERSION
orderflow=$root_dir/target/release/orderflow

# The compose files of each phase: the user's file, then the test's image swaps.
rabbitmq_files=(-f docker-compose.yml -f docker/compose.test.yml -f docker/compose.test.rabbitmq.yml)
kafka_files=(-f docker-compose.kafka.yml -f docker/compose.test.yml -f docker/compose.test.kafka.yml)
current_files=("${rabbitmq_files[@]}")

export DOCKER_HOST=unix://$socket
export ORDERFLOW_TEST_IMAGE=$test_image ORDERFLOW_TEST_BASE_IMAGE=$base_image
export ORDERFLOW_TEST_POSTGRES_IMAGE=$postgres_image ORDERFLOW_TEST_RABBITMQ_IMAGE=$rabbitmq_image
export ORDERFLOW_TEST_KAFKA_IMAGE=$kafka_image ORDERFLOW_TEST_PROMETHEUS_IMAGE=$prometheus_image
# The compose files read these from the environment; the test runs their defaults, except
# the host ports: free ones, since the host may run RabbitMQ, PostgreSQL and scripts/up.sh.
unset ORDERFLOW_BROKER ORDERFLOW_BINARIES ORDERFLOW_LOG_FORMAT RUST_LOG \
  ORDERFLOW_PAYMENT_LATENCY_MS ORDERFLOW_PAYMENT_FAILURE_RATE ORDERFLOW_PAYMENT_SEED \
  ORDERFLOW_SMS_RATE_PER_S ORDERFLOW_SMS_LATENCY_MS \
  COMPOSE_FILE COMPOSE_PROFILES COMPOSE_PROJECT_NAME
for port in ORDERFLOW_ORDER_PORT ORDERFLOW_LOGGING_PORT ORDERFLOW_RABBITMQ_PORT \
  ORDERFLOW_RABBITMQ_UI_PORT ORDERFLOW_KAFKA_PORT ORDERFLOW_PROMETHEUS_PORT ORDERFLOW_GRAFANA_PORT; do
  export "$port=$(free_port)"
done

run_dir=$(mktemp -d /tmp/orderflow-compose-test.XXXXXX)
started_at=$(date +%s)
phase_name="" phase_started=0
phase_report=()
pump_pid="" placer_pid="" service_pid="" dist_created="" failed_reason=""

# --- reporting --------------------------------------------------------------------------

fail() {
  failed_reason="$*"
  printf '\nCOMPOSE TEST FAILED: %s\n' "$*" >&2
  exit 1
}

# A prerequisite is missing: a failure with CI=true, else a loud skip.
missing() {
  if [ "${CI:-}" = true ]; then
    fail "prerequisite missing (CI=true, so this fails rather than skips): $*"
  fi
  printf '\nCOMPOSE TEST SKIPPED: %s (set CI=true to make this a failure)\n' "$*" >&2
  failed_reason=skipped
  exit 0
}

phase() {
  phase_end
  phase_name=$1 phase_started=$(date +%s)
  log "[$phase_name]"
}
phase_end() {
  [ -n "$phase_name" ] || return 0
  local took=$(( $(date +%s) - phase_started ))
  phase_report+=("$(printf '%-44s %5d s' "$phase_name" "$took")")
  log "[$phase_name] took ${took} s"
  phase_name=""
}

# --- cleanup ----------------------------------------------------------------------------

compose() {
  docker-compose -p "$project" --project-directory "$root_dir" "${current_files[@]}" "$@"
}

project_containers() {
  podman ps -a -q --filter "label=com.docker.compose.project=$project" 2>/dev/null || true
}

project_leftovers() {
  podman volume ls -q --filter "label=com.docker.compose.project=$project" 2>/dev/null || true
  podman network ls -q --filter "label=com.docker.compose.project=$project" 2>/dev/null || true
}

dump_logs() {
  local id
  [ -n "$(project_containers)" ] || return 0
  echo "--- containers of $project:" >&2
  podman ps -a --filter "label=com.docker.compose.project=$project" \
    --format '{{.Names}}\t{{.Status}}' >&2 || true
  for id in $(project_containers); do
    echo "--- last log lines of $(podman inspect --format '{{.Name}}' "$id" 2>/dev/null):" >&2
    podman logs --tail 25 "$id" 2>&1 | cut -c1-400 >&2 || true
  done
}

stop_pid() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

take_down() {
  timeout 180 docker-compose -p "$project" --project-directory "$root_dir" "${current_files[@]}" \
    --profile tools --profile observability down -v --remove-orphans >"$run_dir/down.log" 2>&1 ||
    { cat "$run_dir/down.log" >&2; return 1; }
}

cleanup() {
  local status=$?
  set +e
  phase_end
  rm -f "$run_dir/pump.on"
  stop_pid "$placer_pid"
  if [ "$status" != 0 ] && [ "$failed_reason" != skipped ]; then
    [ -n "$failed_reason" ] || printf '\nCOMPOSE TEST FAILED: a command failed (exit %s); see above\n' "$status" >&2
    dump_logs
    save_logs failed
  fi
  if [ -n "$(project_containers)" ] || [ -n "$(project_leftovers)" ]; then
    log "docker-compose down -v (leaving nothing behind)"
    take_down || { echo "docker-compose down failed; removing the containers with podman" >&2; }
    for id in $(project_containers); do podman rm -f "$id" >/dev/null 2>&1; done
    podman volume ls -q --filter "label=com.docker.compose.project=$project" 2>/dev/null |
      xargs -r podman volume rm -f >/dev/null 2>&1
    podman network ls -q --filter "label=com.docker.compose.project=$project" 2>/dev/null |
      xargs -r podman network rm -f >/dev/null 2>&1
  fi
  stop_pid "$pump_pid"
  [ -n "$dist_created" ] && rm -rf "$root_dir/dist"
  stop_pid "$service_pid"
  if [ "${#phase_report[@]}" -gt 0 ]; then
    echo "phases:" >&2
    printf '  %s\n' "${phase_report[@]}" >&2
    printf '  %-44s %5d s\n' "total" "$(( $(date +%s) - started_at ))" >&2
  fi
  [ "$status" = 0 ] && [ -z "$failed_reason" ] && printf 'COMPOSE TEST PASSED\n' >&2
  rm -rf "$run_dir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- images and binaries ----------------------------------------------------------------

ensure_stand_ins() {
  build_stand_in "$postgres_image" docker/stand-ins/postgres.Dockerfile docker/stand-ins
  build_stand_in "$rabbitmq_image" docker/stand-ins/rabbitmq.Dockerfile docker/stand-ins
  build_stand_in "$prometheus_image" docker/stand-ins/prometheus.Dockerfile docker/stand-ins
  if [[ " $phases " == *" kafka "* ]]; then
    ( ensure_tansu_binary ) || missing "no tansu binary ($TANSU_BIN) and building it failed"
    mkdir -p "$run_dir/kafka-context"
    cp docker/stand-ins/kafka.Dockerfile "$run_dir/kafka-context/"
    cp "$TANSU_BIN" "$run_dir/kafka-context/tansu"
    build_stand_in "$kafka_image" "$run_dir/kafka-context/kafka.Dockerfile" "$run_dir/kafka-context"
  fi
}

# The host-built binaries into dist/, the Dockerfile's `prebuilt` stage (debug info out).
stage_binaries() {
  log "cargo build --release --workspace --bins"
  cargo build --release --workspace --bins --quiet || fail "cargo build failed"
  [ -e dist ] || dist_created=1
  mkdir -p dist
  local binary
  for binary in order-service payment-service points-service sms-service logging-service orderflow; do
    strip --strip-debug -o "dist/$binary" "target/release/$binary"
  done
}

check_config() {
  local out files
  for files in "-f docker-compose.yml" "-f docker-compose.kafka.yml" \
    "${rabbitmq_files[*]}" "${kafka_files[*]}"; do
    # shellcheck disable=SC2086 # the words of $files are the -f arguments
    out=$(docker-compose $files --profile tools --profile observability config -q 2>&1) ||
      fail "docker-compose $files config: $out"
    [ -z "$out" ] || fail "docker-compose $files config warns: $out"
  done
  log "docker-compose config: clean for docker-compose.yml, docker-compose.kafka.yml and both with the test's overrides"
}

# Waits until every running container of the project is healthy and at least $1 run.
wait_healthy() {
  local expected=$1 started now name status unhealthy running became=""
  declare -A healthy_at=()
  started=$(date +%s)
  while :; do
    running=0 unhealthy=""
    while IFS=$'\t' read -r name status; do
      [ -n "$name" ] || continue
      case $status in
        Up*)
          running=$((running + 1))
          if [[ $status == *"(healthy)"* ]]; then
            [ -n "${healthy_at[$name]:-}" ] ||
              { healthy_at[$name]=$(( $(date +%s) - started )); became+=" ${name#"${project}_"}:${healthy_at[$name]}s"; }
          else
            unhealthy+=" $name"
          fi
          ;;
        *) unhealthy+=" $name($status)" ;;
      esac
    done < <(podman ps -a --filter "label=com.docker.compose.project=$project" \
      --format '{{.Names}}	{{.Status}}' | grep -v '_run_' || true)
    if [ -z "$unhealthy" ] && [ "$running" -ge "$expected" ]; then
      log "all $running containers healthy after $(( $(date +%s) - started )) s (healthy at:$became)"
      local restarted
      restarted=$(podman ps -a --filter "label=com.docker.compose.project=$project" -q |
        xargs -r podman inspect --format '{{.Name}} {{.RestartCount}}' | awk '$2 > 0 {printf " %s (%d)", $1, $2}')
      [ -z "$restarted" ] || log "restarted by the restart policy on the way:$restarted"
      return 0
    fi
    now=$(date +%s)
    (( now - started < deadline )) || fail "containers not healthy within ${deadline} s:${unhealthy} ($running running, $expected expected)"
    sleep 2
  done
}

compose_up() {
  log "docker-compose up -d $*"
  timeout $((deadline + 60)) docker-compose -p "$project" --project-directory "$root_dir" \
    "${current_files[@]}" up -d "$@" >"$run_dir/up.log" 2>&1 ||
    { cat "$run_dir/up.log" >&2; fail "docker-compose up -d $* failed"; }
}

container_of() { # container_of SERVICE INDEX → name
  echo "${project}_$1_$2"
}

# ORDERFLOW_*_URL for target/release/orderflow on the host: each service's container
# address on the compose network (payment, points and SMS publish no host port).
set_endpoints() {
  local service id address
  for service in order payment points sms logging; do
    address=""
    for id in $(podman ps -q --filter "label=com.docker.compose.project=$project" \
      --filter "label=com.docker.compose.service=$service" --filter status=running); do
      address=$(podman inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$id" | awk '{print $1}')
      [ -n "$address" ] && break
    done
    [ -n "$address" ] || return 1
    export "ORDERFLOW_${service^^}_URL=http://$address:8080"
  done
}

# --- Prometheus -------------------------------------------------------------------------

# prometheus_query PROMQL: the JSON answer of Prometheus's instant query API, through its
# published host port.
prometheus_query() {
  curl -fsS --max-time 5 --get --data-urlencode "query=$1" \
    "http://127.0.0.1:$ORDERFLOW_PROMETHEUS_PORT/api/v1/query"
}

# wait_prometheus_shows PROMQL LABEL VALUE NAME…: until the query's answer has, for each
# NAME, a series {LABEL="NAME"} of value VALUE (within the deadline).
wait_prometheus_shows() {
  local query=$1 label=$2 value=$3 started answer name missing
  shift 3
  started=$(date +%s)
  while :; do
    answer=$(prometheus_query "$query" 2>/dev/null || true)
    missing=""
    for name in "$@"; do
      # {"metric":{"job":"order"},"value":[1733070000.123,"1"]}
      [[ $answer =~ \{\"$label\":\"$name\"\},\"value\":\[[0-9.]+,\"$value\"\] ]] || missing+=" $name"
    done
    [ -n "$missing" ] || { log "prometheus: $query = $value for every $label after $(( $(date +%s) - started )) s"; return 0; }
    (( $(date +%s) - started < deadline )) ||
      fail "prometheus: $query is not $value within ${deadline} s for:$missing (last answer: ${answer:-none})"
    sleep 1
  done
}

# The `observability` profile's Prometheus, started on its own (Grafana has no stand-in),
# must scrape every service: each job up, and what each consumer group did visible
# through it — the series come from the services' /metrics, not from Prometheus itself.
prometheus_phase() {
  phase "$1: --profile observability up -d prometheus, every service scraped"
  log "docker-compose --profile observability up -d prometheus"
  timeout $((deadline + 60)) docker-compose -p "$project" --project-directory "$root_dir" \
    "${current_files[@]}" --profile observability up -d prometheus >"$run_dir/up.log" 2>&1 ||
    { cat "$run_dir/up.log" >&2; fail "docker-compose up -d prometheus failed"; }
  wait_healthy 8
  wait_prometheus_shows 'min by (job) (up)' job 1 order payment points sms logging
  wait_prometheus_shows 'count by (group) (sum by (group) (orderflow_deliveries_total{outcome="acked"}) > 0)' \
    group 1 order payment points sms logging
}

# --- the CLI doing the work -------------------------------------------------------------

# json_number KEY [FILE]: the number under "KEY" in the report (the keys the report
# uses are unique, and its numbers are plain integers).
json_number() {
  local json
  json=$(<"${2:-$run_dir/report.json}")
  [[ $json =~ \"$1\":([0-9]+) ]] || return 1
  echo "${BASH_REMATCH[1]}"
}

# place FIRST COUNT [RATE/s]: the demo's orders FIRST.. through the order API's host port.
place() {
  local first=$1 count=$2 rate=${3:-}
  "$orderflow" place --url "http://127.0.0.1:$ORDERFLOW_ORDER_PORT" --first "$first" \
    --orders "$count" ${rate:+--rate "$rate"} >"$run_dir/place-$first.txt" 2>&1 ||
    { cat "$run_dir/place-$first.txt" >&2; return 1; }
  sed 's/^/    /' "$run_dir/place-$first.txt" >&2
}

# early_orders_phase BROKER: only the order service up (compose starts what it depends on:
# PostgreSQL and the broker), the early orders placed as soon as its API answers, with
# the other four services checked to have no container at all; then everything up.
early_orders_phase() {
  phase "$1: up -d order only, $early_orders orders before the other services exist"
  compose_up order
  wait_healthy 3
  place 0 "$early_orders" || fail "placing the $early_orders early orders failed"
  local service
  for service in payment points sms logging; do
    [ -z "$(podman ps -a -q --filter "label=com.docker.compose.project=$project" \
      --filter "label=com.docker.compose.service=$service")" ] ||
      fail "$service has a container before the early orders were placed"
  done
  log "$early_orders orders placed while payment, points, SMS and logging had never run"

  phase "$1: up -d the rest, every container healthy"
  compose_up
  wait_healthy 7
}

# wait_exact N: `orderflow reconcile --wait-for N`, the report in $run_dir/report.json.
wait_exact() {
  local expected=$1 started
  started=$(date +%s)
  set_endpoints || fail "a service has no running container to reconcile against"
  "$orderflow" reconcile --wait-for "$expected" --deadline "$deadline" --json \
    >"$run_dir/report.json" 2>"$run_dir/reconcile.err" ||
    { cat "$run_dir/report.json" "$run_dir/reconcile.err" >&2; fail "not exact within ${deadline} s ($expected orders expected)"; }
  log "exact after $(( $(date +%s) - started )) s: $(json_number placed) placed, $(json_number paid) paid, $(json_number payment_failed) payment failed, $(json_number sms_sent) SMS, $(json_number events_logged) events"
}

# The user's own way, inside the compose network: docker-compose run --rm reconcile.
reconcile_in_network() {
  log "docker-compose run --rm reconcile"
  timeout 120 docker-compose -p "$project" --project-directory "$root_dir" "${current_files[@]}" \
    run --rm reconcile >"$run_dir/reconcile.txt" 2>&1 ||
    { cat "$run_dir/reconcile.txt" >&2; fail "docker-compose run --rm reconcile: not exact"; }
  sed 's/^/    /' "$run_dir/reconcile.txt" >&2
}

# check_sms_spread HOSTNAME…: in $run_dir/report.json, every SMS container (by hostname)
# sent some, no other instance sent any, and there is one SMS per paid order.
check_sms_spread() {
  local json by entry name ok=1 host known
  json=$(<"$run_dir/report.json")
  [[ $json =~ \"sms_by_instance\":\{([^\}]*)\} ]] || fail "the report has no sms_by_instance"
  by=${BASH_REMATCH[1]}
  log "SMS by instance (container hostname): ${by//\"/}"
  for host in "$@"; do
    if ! [[ $by =~ \"$host\":([0-9]+) ]] || [ "${BASH_REMATCH[1]}" -le 0 ]; then
      log "SMS container $host sent none"; ok=0
    fi
  done
  local entries
  IFS=, read -ra entries <<<"$by"
  for entry in "${entries[@]}"; do
    name=${entry%%:*} name=${name//\"/} known=0
    for host in "$@"; do [ "$name" = "$host" ] && known=1; done
    [ "$known" = 1 ] || { log "SMS from an unknown instance: $name"; ok=0; }
  done
  if [ "$(json_number sms_sent)" != "$(json_number paid)" ]; then
    log "$(json_number sms_sent) SMS for $(json_number paid) paid orders"; ok=0
  fi
  log "$(json_number sms_sent) SMS for $(json_number paid) paid orders, $(json_number duplicates_ignored) redeliveries ignored"
  [ "$ok" = 1 ]
}

# --- the phases -------------------------------------------------------------------------

# docker-compose build: the orderflow image from the Dockerfile's `prebuilt` stage. What
# the build leaves behind is removed: the images it left dangling (the previous
# orderflow-test, the stage's) and the buildah working container podman 4.3 leaks for the
# `FROM ${BINARIES} AS binaries` stage.
build_image() {
  local images_before containers_before
  images_before=$(podman images -q --filter dangling=true | sort)
  containers_before=$(podman ps -a -q --external | sort)
  timeout 900 docker-compose -p "$project" --project-directory "$root_dir" "${current_files[@]}" \
    build order >"$run_dir/build.log" 2>&1 ||
    { tail -30 "$run_dir/build.log" >&2; fail "docker-compose build failed"; }
  comm -13 <(echo "$containers_before") <(podman ps -a -q --external --filter name=working-container | sort) |
    xargs -r podman rm -f >/dev/null 2>&1 || true
  comm -13 <(echo "$images_before") <(podman images -q --filter dangling=true | sort) |
    xargs -r podman rmi >/dev/null 2>&1 || true
}

rabbitmq_phase() {
  current_files=("${rabbitmq_files[@]}")
  phase "rabbitmq: build the orderflow image"
  build_image

  start_pump
  early_orders_phase rabbitmq

  phase "rabbitmq: $orders more orders, all $((early_orders + orders)) exact"
  place "$early_orders" "$orders" || fail "placing $orders orders failed"
  wait_exact $((early_orders + orders))
  reconcile_in_network
  local placed=$((early_orders + orders))
  prometheus_phase rabbitmq

  phase "rabbitmq: --scale sms=3, $scale_orders orders, one SMS killed"
  compose_up --scale sms=3
  wait_healthy 10
  local victim sms_before name report
  declare -A hostname_of=()
  for name in $(podman ps --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=sms" --format '{{.Names}}'); do
    hostname_of[$name]=$(podman inspect --format '{{.Config.Hostname}}' "$name")
  done
  [ "${#hostname_of[@]}" = 3 ] || fail "--scale sms=3 runs ${#hostname_of[@]} SMS containers"
  # Prometheus finds the new replicas by DNS: each one a target of its own, scraped.
  wait_prometheus_shows 'count by (job) (up{job="sms"} == 1)' job 3 sms
  victim=$(container_of sms 3)
  [ -n "${hostname_of[$victim]:-}" ] || fail "no container $victim"
  set_endpoints || fail "a service has no running container to reconcile against"
  "$orderflow" reconcile --json >"$run_dir/report.json" 2>/dev/null || fail "reconcile before the scaled run: not exact"
  sms_before=$(json_number sms_sent)
  # Orders at 60/s in the background, so that the SMS containers are busy when one dies.
  place "$placed" "$scale_orders" 60 &
  placer_pid=$!
  local waited=0 victim_sent=0
  while :; do
    # Not exact while orders are in flight (exit 1): only the numbers matter here.
    report=$("$orderflow" reconcile --json 2>/dev/null || true)
    if [[ $report =~ \"${hostname_of[$victim]}\":([0-9]+) ]]; then
      victim_sent=${BASH_REMATCH[1]}
      [ "$victim_sent" -ge 3 ] && break
    fi
    waited=$((waited + 1))
    [ "$waited" -lt 600 ] || fail "$victim sent no SMS within 60 s of the scaled run"
    kill -0 "$placer_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "$report" >"$run_dir/at-kill.json"
  kill -0 "$placer_pid" 2>/dev/null ||
    fail "the $scale_orders orders were all placed before $victim had sent 3 SMS: no kill mid-run"
  podman kill "$victim" >/dev/null || fail "podman kill $victim failed"
  log "killed $victim (hostname ${hostname_of[$victim]}) mid-run: it had sent $victim_sent SMS; $(( $(json_number placed "$run_dir/at-kill.json") - placed )) of $scale_orders orders placed, $(( $(json_number sms_sent "$run_dir/at-kill.json") - sms_before )) SMS sent in this run so far"
  wait "$placer_pid" || { placer_pid=""; fail "placing the $scale_orders orders failed"; }
  placer_pid=""
  wait_exact $((placed + scale_orders))
  check_sms_spread "${hostname_of[@]}" || fail "the SMS check failed (see above)"
  log "$victim after the run: $(podman inspect --format '{{.State.Status}} (restarts: {{.RestartCount}})' "$victim" 2>/dev/null)"
  reconcile_in_network

  phase "rabbitmq: down -v"
  compose_down rabbitmq
}

# With ORDERFLOW_COMPOSE_TEST_LOGS=DIR, every container's log is kept there (per phase).
save_logs() {
  [ -n "${ORDERFLOW_COMPOSE_TEST_LOGS:-}" ] || return 0
  local dir=$ORDERFLOW_COMPOSE_TEST_LOGS/$1 id name
  mkdir -p "$dir"
  for id in $(project_containers); do
    name=$(podman inspect --format '{{.Name}}' "$id" 2>/dev/null) || continue
    podman logs "$id" >"$dir/$name.log" 2>&1 || true
  done
  log "container logs kept in $dir"
}

compose_down() {
  save_logs "${1:-stack}"
  rm -f "$run_dir/pump.on"
  stop_pid "$pump_pid"
  pump_pid=""
  take_down || fail "docker-compose down -v failed"
  [ -z "$(project_containers)" ] || fail "containers left after down -v: $(project_containers | tr '\n' ' ')"
  [ -z "$(podman volume ls -q --filter "label=com.docker.compose.project=$project")" ] ||
    fail "volumes left after down -v"
  [ -z "$(podman network ls -q --filter "label=com.docker.compose.project=$project")" ] ||
    fail "networks left after down -v"
}

kafka_phase() {
  current_files=("${kafka_files[@]}")
  phase "kafka: up -d (tansu), every container healthy"
  podman image exists "$test_image" || build_image
  start_pump
  early_orders_phase kafka

  phase "kafka: $orders more orders, all $((early_orders + orders)) exact"
  place "$early_orders" "$orders" || fail "placing $orders orders failed"
  wait_exact $((early_orders + orders))
  reconcile_in_network
  prometheus_phase kafka

  phase "kafka: down -v"
  compose_down kafka
}

# --- main -------------------------------------------------------------------------------

phase "prerequisites: podman, docker-compose"
ensure_engine
phase "config: docker-compose config"
check_config
phase "images: Debian base, stand-ins"
ensure_base_image
ensure_stand_ins
phase "binaries: cargo build, dist/"
stage_binaries
# A stack of an earlier, interrupted run goes first.
[ -z "$(project_containers)" ] || { log "removing the stack an earlier run left"; take_down || true; }

for name in $phases; do
  case $name in
    rabbitmq) rabbitmq_phase ;;
    kafka) kafka_phase ;;
    *) fail "unknown phase $name (ORDERFLOW_COMPOSE_TEST_PHASES: rabbitmq kafka)" ;;
  esac
done
phase_end
