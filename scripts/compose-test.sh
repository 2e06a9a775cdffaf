#!/usr/bin/env bash
# scripts/compose-test.sh — docker-compose.yml run for real: build, up, orders, reconcile.
#
# No Docker engine runs on the test machine and no image can be pulled, so the script
# brings its own engine and images:
#   - podman's Docker-compatible API (unix:///run/podman/podman.sock) under Debian's
#     docker-compose 1.29, with runc and CNI networks (dnsname) — see ensure_engine;
#   - a local Debian base image (debootstrap, made once and reused), stand-ins for the
#     official postgres / rabbitmq / apache/kafka images built on it from
#     docker/stand-ins/ (Debian's PostgreSQL and RabbitMQ, the host's tansu), and the
#     orderflow image from the Dockerfile's `prebuilt` stage (binaries built on the host);
#   - docker/compose.test.yml swaps those images in; the user's docker-compose.yml keeps
#     the official ones. The published host ports are moved to free ones and the
#     infrastructure's dropped (the host may run RabbitMQ, PostgreSQL and scripts/up.sh).
#
# Phases: RabbitMQ — up, 200 orders, exact; --scale sms=3, 300 orders with one SMS
# container killed mid-run, every SMS container sent some, still exact; down -v. Kafka
# (tansu) — up, 200 orders, exact; down -v. Podman runs no healthchecks by itself here,
# so a pump runs `podman healthcheck run` for every container while the stack is up.
#
# Needs root (apt-get, rootful podman). Without it, or when a prerequisite cannot be
# installed, the test is skipped with a message — unless CI=true: then it fails.
# Any failure of the stack itself fails (exit 1) with the reason and the containers' logs.
#
# Knobs: ORDERFLOW_COMPOSE_TEST_ORDERS (200), ORDERFLOW_COMPOSE_TEST_SCALE_ORDERS (300),
# ORDERFLOW_COMPOSE_TEST_DEADLINE (seconds per wait, 240),
# ORDERFLOW_COMPOSE_TEST_PHASES ("rabbitmq kafka"), ORDERFLOW_COMPOSE_TEST_LOGS (a directory
# to keep every container's log in).
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$PWD
source scripts/lib/brokers.sh

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
kafka_image=localhost/orderflow-standin-kafka:tansu-$TANSU_VERSION
py=/usr/bin/python3
[ -x "$py" ] || py=python3

export DOCKER_HOST=unix://$socket
export ORDERFLOW_TEST_IMAGE=$test_image ORDERFLOW_TEST_BASE_IMAGE=$base_image
export ORDERFLOW_TEST_POSTGRES_IMAGE=$postgres_image ORDERFLOW_TEST_RABBITMQ_IMAGE=$rabbitmq_image
export ORDERFLOW_TEST_KAFKA_IMAGE=$kafka_image
# docker-compose.yml reads these from the environment; the test runs its defaults.
unset ORDERFLOW_BROKER ORDERFLOW_BINARIES ORDERFLOW_LOG_FORMAT RUST_LOG \
  ORDERFLOW_PAYMENT_LATENCY_MS ORDERFLOW_PAYMENT_FAILURE_RATE ORDERFLOW_PAYMENT_SEED \
  ORDERFLOW_SMS_RATE_PER_S ORDERFLOW_SMS_LATENCY_MS \
  COMPOSE_FILE COMPOSE_PROFILES COMPOSE_PROJECT_NAME

run_dir=$(mktemp -d /tmp/orderflow-compose-test.XXXXXX)
started_at=$(date +%s)
phase_name="" phase_started=0
phase_report=()
pump_pid="" placer_pid="" service_pid="" dist_created="" failed_reason=""
current_profile_args=()

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
  docker-compose -p "$project" --project-directory "$root_dir" -f "$run_dir/compose.yml" \
    "${current_profile_args[@]}" "$@"
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
  [ -e "$run_dir/compose.yml" ] || return 0
  timeout 180 docker-compose -p "$project" --project-directory "$root_dir" -f "$run_dir/compose.yml" \
    --profile kafka --profile tools down -v --remove-orphans >"$run_dir/down.log" 2>&1 ||
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

# --- prerequisites ----------------------------------------------------------------------

ensure_engine() {
  [ "$(id -u)" = 0 ] || missing "needs root (apt-get, rootful podman)"
  local packages=()
  command -v podman >/dev/null || packages+=(podman)
  command -v runc >/dev/null || [ -x /usr/sbin/runc ] || packages+=(runc)
  command -v docker-compose >/dev/null || packages+=(docker-compose)
  [ -x /usr/lib/cni/dnsname ] || packages+=(golang-github-containernetworking-plugin-dnsname)
  command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || packages+=(debootstrap)
  command -v strip >/dev/null || packages+=(binutils)
  "$py" -c 'import yaml' 2>/dev/null || packages+=(python3-yaml)
  if [ "${#packages[@]}" -gt 0 ]; then
    ( apt_install "${packages[@]}" ) || missing "could not install ${packages[*]}"
  fi

  # crun fails on this kind of machine; runc works. No default ulimits (the host's apply).
  # CNI with the dnsname plugin (dnsmasq) for DNS by service name: netavark's aardvark-dns
  # 1.4 (bookworm) drops queries while it reloads for each container that starts
  # (containers/aardvark-dns#389), so with five services starting at once one or two
  # would time out connecting to postgres and be restarted ~30-50 s later.
  local conf=/etc/containers/containers.conf marker="# written by orderflow scripts/compose-test.sh"
  local wanted
  wanted=$(printf '%s\n[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n\n[network]\nnetwork_backend = "cni"\n' "$marker")
  if [ ! -e "$conf" ] || { grep -qxF "$marker" "$conf" && [ "$(cat "$conf")" != "$wanted" ]; }; then
    [ -z "$(podman ps -aq 2>/dev/null)" ] ||
      missing "$conf needs writing (runc, CNI) but containers exist; remove them or write it yourself"
    log "writing $conf (runtime runc, no default ulimits, CNI networks)"
    mkdir -p /etc/containers
    echo "$wanted" >"$conf"
  elif ! grep -Eq '^[[:space:]]*runtime[[:space:]]*=[[:space:]]*"runc"' "$conf"; then
    missing "$conf exists but does not set [engine] runtime = \"runc\" (crun fails here); add it"
  elif ! grep -Eq '^[[:space:]]*network_backend[[:space:]]*=[[:space:]]*"cni"' "$conf"; then
    log "warning: $conf does not set [network] network_backend = \"cni\"; with netavark's aardvark-dns 1.4 services may be restarted once at start"
  fi

  if [ "$(curl -fsS --max-time 5 --unix-socket "$socket" http://d/_ping 2>/dev/null)" != OK ]; then
    log "starting the podman API service on $socket"
    mkdir -p "$(dirname "$socket")"
    podman system service --time=0 "unix://$socket" >"$run_dir/podman-service.log" 2>&1 &
    service_pid=$!
    local i
    for ((i = 0; i < 100; i++)); do
      [ "$(curl -fsS --max-time 5 --unix-socket "$socket" http://d/_ping 2>/dev/null)" = OK ] && break
      sleep 0.1
    done
    [ "$(curl -fsS --max-time 5 --unix-socket "$socket" http://d/_ping 2>/dev/null)" = OK ] ||
      { cat "$run_dir/podman-service.log" >&2; missing "the podman API service did not answer on $socket"; }
  fi
  docker-compose version --short >/dev/null || missing "docker-compose does not run"
}

# A minimal Debian bookworm, made with debootstrap once and kept as $base_image.
ensure_base_image() {
  podman image exists "$base_image" && return 0
  log "making the local Debian base $base_image (debootstrap; once)"
  local dir
  dir=$(mktemp -d /var/tmp/orderflow-base.XXXXXX)
  if ! debootstrap --variant=minbase bookworm "$dir" http://deb.debian.org/debian >"$run_dir/debootstrap.log" 2>&1; then
    tail -20 "$run_dir/debootstrap.log" >&2
    rm -rf "$dir"
    missing "debootstrap of Debian bookworm failed (no network to deb.debian.org?)"
  fi
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$base_image" >"$run_dir/import.log" 2>&1 ||
    { cat "$run_dir/import.log" >&2; fail "podman import of the Debian base failed"; }
  rm -rf "$dir"
}

# podman build with its layer cache: quick when nothing changed.
build_stand_in() {
  local image=$1 dockerfile=$2 context=$3
  log "building the stand-in $image"
  podman build --layers -f "$dockerfile" --build-arg "BASE_IMAGE=$base_image" -t "$image" "$context" \
    >"$run_dir/build-$(basename "$dockerfile").log" 2>&1 ||
    { tail -30 "$run_dir/build-$(basename "$dockerfile").log" >&2; fail "building $image failed"; }
}

ensure_stand_ins() {
  build_stand_in "$postgres_image" docker/stand-ins/postgres.Dockerfile docker/stand-ins
  build_stand_in "$rabbitmq_image" docker/stand-ins/rabbitmq.Dockerfile docker/stand-ins
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

# --- the stack --------------------------------------------------------------------------

# docker-compose.yml + the override, merged by docker-compose itself, with the published
# host ports moved to free ones (the order API's included) and the infrastructure's dropped.
render() {
  docker-compose -f docker-compose.yml -f docker/compose.test.yml config >"$run_dir/merged.yml" 2>"$run_dir/config.err" ||
    { cat "$run_dir/config.err" >&2; fail "docker-compose config with the override failed"; }
  "$py" - "$run_dir/merged.yml" "$run_dir/compose.yml" <<'PY'
import socket, sys, yaml
merged = yaml.safe_load(open(sys.argv[1]))
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
for name, service in merged["services"].items():
    ports = service.get("ports")
    if not ports:
        continue
    if name in ("postgres", "rabbitmq", "kafka"):
        del service["ports"]
        continue
    moved = []
    for port in ports:
        # "127.0.0.1:8080:8080/tcp", as `docker-compose config` prints them.
        host, _, target = str(port).rpartition(":")
        ip = host.rpartition(":")[0] or "127.0.0.1"
        moved.append(f"{ip}:{free_port()}:{target}")
    service["ports"] = moved
yaml.safe_dump(merged, open(sys.argv[2], "w"), sort_keys=False)
PY
}

check_config() {
  local out
  out=$(docker-compose -f docker-compose.yml config -q 2>&1) || fail "docker-compose config (the user's file): $out"
  [ -z "$out" ] || fail "docker-compose config (the user's file) warns: $out"
  out=$(docker-compose -f docker-compose.yml -f docker/compose.test.yml --profile kafka --profile tools config -q 2>&1) ||
    fail "docker-compose config with docker/compose.test.yml: $out"
  [ -z "$out" ] || fail "docker-compose config with docker/compose.test.yml warns: $out"
  out=$(ORDERFLOW_BROKER=kafka://kafka:9092 docker-compose -f docker-compose.yml --profile kafka config -q 2>&1) ||
    fail "docker-compose --profile kafka config: $out"
  log "docker-compose config: clean for docker-compose.yml, with the override, and with --profile kafka"
}

# Podman runs no healthchecks by itself here: run each container's every interval
# (at least every 2 s), so that `service_healthy` and the health status come.
health_pump() {
  declare -A due=() interval=()
  local id now seconds
  while [ -e "$run_dir/pump.on" ]; do
    now=$(date +%s)
    for id in $(podman ps -q --filter "label=com.docker.compose.project=$project" --filter status=running 2>/dev/null); do
      if [ -z "${interval[$id]:-}" ]; then
        # {"Test":[…],"Interval":5000000000,…} or null
        seconds=$(podman inspect --format '{{json .Config.Healthcheck}}' "$id" 2>/dev/null |
          grep -o '"Interval":[0-9]*' | cut -d: -f2 || true)
        if [ -z "$seconds" ]; then
          interval[$id]=none
        else
          seconds=$(( seconds / 1000000000 ))
          interval[$id]=$(( seconds > 2 ? seconds : 2 ))
        fi
      fi
      [ "${interval[$id]}" = none ] && continue
      [ "${due[$id]:-0}" -le "$now" ] || continue
      due[$id]=$(( now + interval[$id] ))
      timeout 60 podman healthcheck run "$id" >/dev/null 2>&1 &
    done
    sleep 1
  done
  wait
}

start_pump() {
  touch "$run_dir/pump.on"
  health_pump &
  pump_pid=$!
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
  log "docker-compose ${current_profile_args[*]} up -d $*"
  timeout $((deadline + 60)) docker-compose -p "$project" --project-directory "$root_dir" \
    -f "$run_dir/compose.yml" "${current_profile_args[@]}" up -d "$@" >"$run_dir/up.log" 2>&1 ||
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

# One reconciliation as JSON into $run_dir/report.json; true when exact.
reconcile_json() {
  set_endpoints || return 2
  target/release/orderflow reconcile --json >"$run_dir/report.json" 2>"$run_dir/reconcile.err"
}

report_field() { # report_field PYTHON-EXPRESSION over r (the report)
  "$py" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$run_dir/report.json" "$1"
}

# Polls until the reconciliation is exact and $1 orders are placed and settled.
wait_exact() {
  local expected=$1 started status
  started=$(date +%s)
  while :; do
    status=0
    reconcile_json || status=$?
    if [ "$status" = 0 ] && [ "$(report_field 'r["placed"]')" -ge "$expected" ]; then
      log "exact after $(( $(date +%s) - started )) s: $(report_field '"%d placed, %d paid, %d payment failed, %d SMS, %d events" % (r["placed"], r["paid"], r["payment_failed"], r["sms_sent"], r["events_logged"])')"
      return 0
    fi
    if (( $(date +%s) - started >= deadline )); then
      [ -s "$run_dir/report.json" ] && cat "$run_dir/report.json" >&2
      cat "$run_dir/reconcile.err" >&2 2>/dev/null
      fail "not exact within ${deadline} s ($expected orders expected)"
    fi
    sleep 1
  done
}

# The user's own way, inside the compose network: docker-compose run --rm reconcile.
reconcile_in_network() {
  log "docker-compose run --rm reconcile"
  timeout 120 docker-compose -p "$project" --project-directory "$root_dir" -f "$run_dir/compose.yml" \
    "${current_profile_args[@]}" run --rm reconcile >"$run_dir/reconcile.txt" 2>&1 ||
    { cat "$run_dir/reconcile.txt" >&2; fail "docker-compose run --rm reconcile: not exact"; }
  sed 's/^/    /' "$run_dir/reconcile.txt" >&2
}

# Places orders through the order container's published port: place START COUNT [RATE/s].
# The demo's orders (every tenth over the card limit), an Idempotency-Key each, retried.
place() {
  local start=$1 count=$2 rate=${3:-0} port
  port=$(compose port order 8080 | awk -F: '{print $NF}')
  [ -n "$port" ] || fail "the order service publishes no port"
  "$py" - "http://127.0.0.1:$port/orders" "$start" "$count" "$rate" <<'PY'
import concurrent.futures, json, sys, threading, time, urllib.request, uuid
url, start, count, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
SKUS = ["green-tea-250g", "oolong-100g", "teapot", "cups-x4"]
def demo_order(index):  # as src/demo.rs demo_order
    over = index % 10 == 9
    items = [{"sku": SKUS[(index + i) % 4], "quantity": 1 + (index + i) % 3,
              "unit_price_cents": 1_200_000 if over else 990 + 1_000 * ((index * 7 + i) % 20)}
             for i in range(1 + index % 3)]
    return {"user_id": 1 + index % 50, "phone": "+86138%08d" % (index % 100_000_000), "items": items}
def place(index):
    body = json.dumps(demo_order(index)).encode()
    key = str(uuid.uuid4())
    for attempt in range(1, 8):
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "content-type": "application/json", "Idempotency-Key": key})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)["order_id"]
        except urllib.error.HTTPError as error:
            if 400 <= error.code < 500:
                raise SystemExit(f"order {index} refused: {error.code} {error.read()[:200]!r}")
            last = error
        except OSError as error:
            last = error
        time.sleep(0.2 * attempt)
    raise SystemExit(f"order {index}: {last}")
began = time.time()
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    futures = []
    for n, index in enumerate(range(start, start + count)):
        if rate > 0:
            time.sleep(max(0.0, began + n / rate - time.time()))
        futures.append(pool.submit(place, index))
    ids = [future.result() for future in futures]
assert len(set(ids)) == count, "an order id came back twice"
print(f"placed {count} orders in {time.time() - began:.1f} s", file=sys.stderr)
PY
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
  timeout 900 docker-compose -p "$project" --project-directory "$root_dir" -f "$run_dir/compose.yml" \
    build order >"$run_dir/build.log" 2>&1 ||
    { tail -30 "$run_dir/build.log" >&2; fail "docker-compose build failed"; }
  comm -13 <(echo "$containers_before") <(podman ps -a -q --external --filter name=working-container | sort) |
    xargs -r podman rm -f >/dev/null 2>&1 || true
  comm -13 <(echo "$images_before") <(podman images -q --filter dangling=true | sort) |
    xargs -r podman rmi >/dev/null 2>&1 || true
}

rabbitmq_phase() {
  phase "rabbitmq: build the orderflow image"
  current_profile_args=()
  render
  build_image

  phase "rabbitmq: up -d, every container healthy"
  start_pump
  compose_up
  wait_healthy 7

  phase "rabbitmq: $orders orders, exact"
  place 0 "$orders"
  wait_exact "$orders"
  reconcile_in_network

  phase "rabbitmq: --scale sms=3, $scale_orders orders, one SMS killed"
  compose_up --scale sms=3
  wait_healthy 9
  local victim before_victim sms_before
  declare -A hostname_of=()
  local name
  for name in $(podman ps --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=sms" --format '{{.Names}}'); do
    hostname_of[$name]=$(podman inspect --format '{{.Config.Hostname}}' "$name")
  done
  [ "${#hostname_of[@]}" = 3 ] || fail "--scale sms=3 runs ${#hostname_of[@]} SMS containers"
  victim=$(container_of sms 3)
  [ -n "${hostname_of[$victim]:-}" ] || fail "no container $victim"
  reconcile_json || fail "reconcile before the scaled run failed"
  sms_before=$(report_field 'r["sms_sent"]')
  # Orders at 60/s in the background, so that the SMS containers are busy when one dies.
  place "$orders" "$scale_orders" 60 &
  placer_pid=$!
  local waited=0 victim_sent=0
  while :; do
    if reconcile_json || [ -s "$run_dir/report.json" ]; then
      victim_sent=$(report_field "r['sms_by_instance'].get('${hostname_of[$victim]}', 0)")
      [ "$victim_sent" -ge 3 ] && break
    fi
    waited=$((waited + 1))
    [ "$waited" -lt 600 ] || fail "$victim sent no SMS within 60 s of the scaled run"
    kill -0 "$placer_pid" 2>/dev/null || break
    sleep 0.1
  done
  local placed_at_kill sms_at_kill
  placed_at_kill=$(report_field 'r["placed"]')
  sms_at_kill=$(( $(report_field 'r["sms_sent"]') - sms_before ))
  kill -0 "$placer_pid" 2>/dev/null ||
    fail "the $scale_orders orders were all placed before $victim had sent 3 SMS: no kill mid-run"
  podman kill "$victim" >/dev/null || fail "podman kill $victim failed"
  log "killed $victim (hostname ${hostname_of[$victim]}) mid-run: it had sent $victim_sent SMS; $((placed_at_kill - orders)) of $scale_orders orders placed, $sms_at_kill SMS sent in this run so far"
  wait "$placer_pid" || { placer_pid=""; fail "placing the $scale_orders orders failed"; }
  placer_pid=""
  wait_exact $((orders + scale_orders))
  "$py" - "$run_dir/report.json" "${hostname_of[@]}" <<'PY' >&2 || fail "the SMS check failed (see above)"
import json, sys
report = json.load(open(sys.argv[1]))
by_instance = report["sms_by_instance"]
print("    SMS by instance (container hostname):", ", ".join(f"{k}={v}" for k, v in sorted(by_instance.items())))
ok = True
for hostname in sys.argv[2:]:
    if by_instance.get(hostname, 0) <= 0:
        print(f"    SMS container {hostname} sent none"); ok = False
if report["sms_sent"] != report["paid"]:
    print(f"    {report['sms_sent']} SMS for {report['paid']} paid orders"); ok = False
if set(by_instance) - set(sys.argv[2:]):
    print(f"    SMS from unknown instances: {sorted(set(by_instance) - set(sys.argv[2:]))}"); ok = False
print(f"    {report['sms_sent']} SMS for {report['paid']} paid orders, {report['duplicates_ignored']} redeliveries ignored")
sys.exit(0 if ok else 1)
PY
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
  timeout 180 docker-compose -p "$project" --project-directory "$root_dir" -f "$run_dir/compose.yml" \
    --profile kafka --profile tools down -v --remove-orphans >"$run_dir/down.log" 2>&1 ||
    { cat "$run_dir/down.log" >&2; fail "docker-compose down -v failed"; }
  [ -z "$(project_containers)" ] || fail "containers left after down -v: $(project_containers | tr '\n' ' ')"
  [ -z "$(podman volume ls -q --filter "label=com.docker.compose.project=$project")" ] ||
    fail "volumes left after down -v"
  [ -z "$(podman network ls -q --filter "label=com.docker.compose.project=$project")" ] ||
    fail "networks left after down -v"
}

kafka_phase() {
  export ORDERFLOW_BROKER=kafka://kafka:9092
  current_profile_args=(--profile kafka)
  phase "kafka: up -d (tansu), every container healthy"
  render
  podman image exists "$test_image" || build_image
  start_pump
  compose_up
  wait_healthy 8

  phase "kafka: $orders orders, exact"
  place 0 "$orders"
  wait_exact "$orders"
  reconcile_in_network

  phase "kafka: down -v"
  compose_down kafka
  unset ORDERFLOW_BROKER
  current_profile_args=()
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
render
[ -z "$(project_containers)" ] || { log "removing the stack an earlier run left"; take_down || true; }

for name in $phases; do
  case $name in
    rabbitmq) rabbitmq_phase ;;
    kafka) kafka_phase ;;
    *) fail "unknown phase $name (ORDERFLOW_COMPOSE_TEST_PHASES: rabbitmq kafka)" ;;
  esac
done
phase_end
