#!/usr/bin/env bash
# scripts/up.sh [rabbitmq|kafka] — the whole stack as plain processes, no Docker.
#
# Starts PostgreSQL and the chosen broker on loopback if they are not running (installing
# them if missing; for kafka, a tansu built once into ~/.cache/orderflow), builds the
# release binaries, starts the five services with one database each, waits until every
# one answers /readyz, and prints where everything is. scripts/down.sh stops them.
#
# Knobs (environment), for a second stack beside a user's (scripts/loadtest.sh stack):
# ORDERFLOW_RUN_DIR (.run: pids and logs), ORDERFLOW_AMQP_URL (the broker, e.g. a virtual
# host of its own), ORDERFLOW_UP_FIRST_PORT (8080: the order service's port, the other four
# on the next ones), ORDERFLOW_DATABASE_SUFFIX (none: databases orderflow_<service><suffix>),
# ORDERFLOW_DATABASE_BASE (the PostgreSQL server). The services inherit the rest of the
# environment, so any setting they read (ORDERFLOW_SMS_RATE_PER_S, …) can be given here.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/brokers.sh

broker_kind=${1:-rabbitmq}
run_dir=${ORDERFLOW_RUN_DIR:-$PWD/.run}
[ -e "$run_dir/pids" ] && die "the stack seems to be up already ($run_dir/pids exists): scripts/down.sh first"
mkdir -p "$run_dir"

ensure_postgres
ensure_postgres_access
case $broker_kind in
  rabbitmq)
    ensure_rabbitmq
    broker_url=${ORDERFLOW_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
    ;;
  kafka)
    ensure_tansu_binary
    kafka_port=${ORDERFLOW_KAFKA_PORT:-9092}
    port_open "$kafka_port" && kafka_port=$(free_port)
    mkdir -p "$run_dir/tansu"
    tansu_pid=$(start_tansu "$kafka_port" "sqlite://tansu.db" "$run_dir/tansu.log" "$run_dir/tansu")
    echo "tansu $tansu_pid" >>"$run_dir/pids"
    broker_url="kafka://127.0.0.1:$kafka_port"
    ;;
  *) die "usage: scripts/up.sh [rabbitmq|kafka]" ;;
esac

log "building the release binaries"
cargo build --release --bins --quiet

database_base=${ORDERFLOW_DATABASE_BASE:-postgres://postgres@127.0.0.1:5432}
database_suffix=${ORDERFLOW_DATABASE_SUFFIX:-}
first_port=${ORDERFLOW_UP_FIRST_PORT:-8080}
ports=()
for ((i = 0; i < 5; i++)); do ports+=($((first_port + i))); done
port=$first_port
for service in order payment points sms logging; do
  port_open "$port" && die "port $port is taken; stop what uses it (scripts/down.sh?)"
  ORDERFLOW_BROKER="$broker_url" \
    DATABASE_URL="$database_base/orderflow_$service$database_suffix" \
    ORDERFLOW_HTTP_ADDR="127.0.0.1:$port" \
    ORDERFLOW_INSTANCE="$service-1" \
    RUST_LOG=${RUST_LOG:-info} \
    nohup "target/release/$service-service" >"$run_dir/$service.log" 2>&1 &
  echo "$service $!" >>"$run_dir/pids"
  port=$((port + 1))
done

log "waiting for every service to be ready"
for port in "${ports[@]}"; do
  for ((i = 0; i < 600; i++)); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 ||
    { scripts/down.sh >/dev/null 2>&1 || true; die "the service on port $port is not ready; see $run_dir/*.log"; }
done

cat <<MSG
orderflow is up on $broker_kind ($broker_url)
  order    http://127.0.0.1:${ports[0]}   POST /orders, GET /orders/{id}
  payment  http://127.0.0.1:${ports[1]}   GET /payments/{order_id}
  points   http://127.0.0.1:${ports[2]}   GET /users/{id}/points
  sms      http://127.0.0.1:${ports[3]}   GET /sms?order_id=
  logging  http://127.0.0.1:${ports[4]}   GET /events?order_id=
  logs     $run_dir/*.log
Place an order:
  curl -s -XPOST localhost:${ports[0]}/orders -H 'content-type: application/json' \\
    -d '{"user_id":42,"phone":"+8613800138000","items":[{"sku":"tea","quantity":2,"unit_price_cents":3550}]}'
Check every effect happened once:   target/release/orderflow reconcile
Stop:                               scripts/down.sh
MSG
