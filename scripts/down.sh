#!/usr/bin/env bash
# scripts/down.sh — stops what scripts/up.sh started: SIGTERM first (the services finish
# and ack what they hold), SIGKILL only after 20 s. PostgreSQL and RabbitMQ keep running.
set -euo pipefail
cd "$(dirname "$0")/.."
run_dir=${ORDERFLOW_RUN_DIR:-$PWD/.run}
[ -f "$run_dir/pids" ] || { echo "nothing to stop ($run_dir/pids not found)"; exit 0; }

# Services first, the broker last, so the services can still ack on their way out.
mapfile -t entries < <(grep -v '^tansu ' "$run_dir/pids"; grep '^tansu ' "$run_dir/pids" || true)
for entry in "${entries[@]}"; do
  name=${entry% *} pid=${entry#* }
  kill -0 "$pid" 2>/dev/null || continue
  kill -TERM "$pid"
  for ((i = 0; i < 200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name ($pid) did not stop in 20 s: killing it"
    kill -KILL "$pid"
  else
    echo "stopped $name"
  fi
done
rm -f "$run_dir/pids"
