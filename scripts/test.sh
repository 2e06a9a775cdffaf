#!/usr/bin/env bash
# The one test command: scripts/test.sh [extra cargo test args]
#
# Makes sure RabbitMQ and PostgreSQL run (installing and starting them if missing), builds
# tansu once into a cache and starts it on a free loopback port, then runs every test in
# the workspace against them. Stops whatever it started. With CI=true a broker that cannot
# be brought up fails the run; tests never skip there.
#
# Before the tests, the dependency checks: `cargo machete` (no unused dependency) and
# `cargo deny` (licenses, bans, sources; advisories where the RustSec database is on the
# machine — see deny.toml), both built once into the same cache as tansu.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/brokers.sh
source scripts/lib/tools.sh

run_dir=$(mktemp -d /tmp/orderflow-test.XXXXXX)
tansu_pid=""
cleanup() {
  local status=$?
  # tansu was started from a command substitution, so it is not this shell's child and
  # `wait` cannot be used on it; under `set -e` any failure here would replace the status.
  if [ -n "$tansu_pid" ]; then kill "$tansu_pid" 2>/dev/null || true; fi
  for started in "${ORDERFLOW_STARTED[@]}"; do
    case $started in
      rabbitmq) log "stopping the RabbitMQ this script started"; rabbitmqctl stop >/dev/null 2>&1 || true ;;
      postgres) log "stopping the PostgreSQL this script started"; pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main stop || true ;;
    esac
  done
  rm -rf "$run_dir"
  exit $status
}
trap cleanup EXIT

started_at=$(date +%s)
status=0

# --- the dependency checks ---------------------------------------------------------------
ensure_cargo_machete
ensure_cargo_deny
export PATH="$(dirname "$CARGO_MACHETE_BIN"):$(dirname "$CARGO_DENY_BIN"):$PATH"
log "cargo machete (unused dependencies)"
cargo machete || { log "cargo machete: unused dependencies (see above)"; status=1; }
# cargo deny runs offline, so the crates of every platform must be in the local registry
# first (`cargo metadata` wants them all, e.g. plotters' wasm-only dependencies, which a
# build on Linux never downloads). crates.io is reachable; the advisory database is not.
log "cargo fetch (every platform's crates, for cargo deny)"
cargo fetch --locked --quiet || { log "cargo fetch failed"; status=1; }
advisory_dbs=${CARGO_HOME:-$HOME/.cargo}/advisory-dbs
# A fetched database is a git checkout with a crates/ folder of advisories.
if compgen -G "$advisory_dbs/*/crates" >/dev/null; then
  log "cargo deny check (advisories from the local copy in $advisory_dbs, not fetched)"
  cargo deny --offline check || { log "cargo deny: see above"; status=1; }
else
  log "cargo deny check licenses bans sources"
  cargo deny --offline check licenses bans sources || { log "cargo deny: see above"; status=1; }
  log "NOTE: advisories NOT checked: no RustSec database in $advisory_dbs (it is fetched from GitHub, which this machine cannot reach; run \`cargo deny fetch\` where it can)"
fi

# --- the tests ---------------------------------------------------------------------------
ensure_rabbitmq
ensure_postgres
ensure_postgres_access
ensure_tansu_binary
kafka_port=$(free_port)
# SQLite storage: tansu 0.6's memory engine skips records when a partition changes hands
# mid-batch (a fetch from inside a batch is answered from the next one), and the contract
# suite rebalances on purpose.
mkdir -p "$run_dir/tansu"
tansu_pid=$(start_tansu "$kafka_port" "sqlite://tansu.db" "$run_dir/tansu.log" "$run_dir/tansu")
log "tansu $TANSU_VERSION on 127.0.0.1:$kafka_port (pid $tansu_pid)"

export ORDERFLOW_AMQP_URL=${ORDERFLOW_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export ORDERFLOW_KAFKA_URL="kafka://127.0.0.1:$kafka_port"
export ORDERFLOW_TANSU_BIN="$TANSU_BIN"
export ORDERFLOW_DATABASE_URL=${ORDERFLOW_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export RUST_BACKTRACE=1

log "running every test (brokers: $ORDERFLOW_AMQP_URL, $ORDERFLOW_KAFKA_URL)"
# Not under `set -e`: a failing test must still let the summary below print.
set +e
cargo test --workspace --all-targets --no-fail-fast "$@" 2>&1 | tee "$run_dir/cargo-test.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
set -e

# docker-compose.yml for real: podman serves the Docker API, local stand-ins replace the
# official infrastructure images (no image can be pulled here). See scripts/compose-test.sh.
log "docker-compose.yml for real (scripts/compose-test.sh)"
compose_started=$(date +%s)
scripts/compose-test.sh || status=1
log "compose test took $(( $(date +%s) - compose_started )) s"

for backend in memory rabbitmq kafka; do
  passed=$(grep -cE "^test $backend::[a-z_]+ \.\.\. ok" "$run_dir/cargo-test.log" || true)
  log "contract suite on $backend: $passed passed"
done
log "tests took $(( $(date +%s) - started_at )) s"
exit "$status"
