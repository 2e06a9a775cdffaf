# shellcheck shell=bash
# Shared by scripts/test.sh and scripts/up.sh: make sure RabbitMQ, PostgreSQL and a
# Kafka-protocol broker (tansu) are there, installing and starting what is missing.
# Everything this file starts is recorded in ORDERFLOW_STARTED so the caller can stop it.

ORDERFLOW_CACHE=${ORDERFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/orderflow}
TANSU_VERSION=0.6.0
TANSU_BIN="$ORDERFLOW_CACHE/tansu-$TANSU_VERSION/bin/tansu"
ORDERFLOW_STARTED=()

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits up to $2 seconds for port $1 to accept connections.
wait_port() {
  local port=$1 seconds=${2:-60} i
  for ((i = 0; i < seconds * 10; i++)); do
    port_open "$port" && return 0
    sleep 0.1
  done
  return 1
}

# A loopback port nothing listens on, from the range the kernel does not hand out to
# outgoing connections by default (32768-60999), so none is taken between pick and use.
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 12000))
    port_open "$port" || { echo "$port"; return 0; }
  done
}

# The first of $1 consecutive free loopback ports (a stack from scripts/up.sh takes five).
free_ports() {
  local count=$1 port i taken
  while :; do
    port=$(free_port)
    taken=""
    for ((i = 1; i < count; i++)); do port_open $((port + i)) && taken=1; done
    [ -z "$taken" ] && { echo "$port"; return 0; }
  done
}

apt_install() {
  [ "$(id -u)" = 0 ] || die "need root to install $* (or install it yourself)"
  log "installing $* from Debian packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

ensure_rabbitmq() {
  if port_open 5672; then return 0; fi
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  log "starting RabbitMQ"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_port 5672 90 || die "RabbitMQ did not come up on 127.0.0.1:5672"
  rabbitmqctl await_startup >/dev/null 2>&1 || true
  ORDERFLOW_STARTED+=(rabbitmq)
}

ensure_postgres() {
  if port_open 5432; then return 0; fi
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  local version
  version=$(ls /etc/postgresql | sort -V | tail -1)
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_port 5432 60 || die "PostgreSQL did not come up on 127.0.0.1:5432"
  ORDERFLOW_STARTED+=(postgres)
}

# Debian's cluster allows local connections by peer; the tests connect over TCP as
# postgres. Make sure that works without a password (trust on loopback only).
ensure_postgres_access() {
  if psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then return 0; fi
  local hba
  hba=$(su postgres -c "psql -Atc 'show hba_file'")
  log "allowing trust authentication on loopback in $hba"
  sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  su postgres -c "psql -Atc 'select pg_reload_conf()'" >/dev/null
}

# tansu is built once into a cache outside the clone (about 10 minutes) and reused.
ensure_tansu_binary() {
  if [ -x "$TANSU_BIN" ]; then return 0; fi
  mkdir -p "$ORDERFLOW_CACHE"
  # Two scripts started together (a test run and a load test, say) would otherwise each
  # build it, for half an hour on two cores: the second waits for the first's build.
  local lock
  exec {lock}>"$ORDERFLOW_CACHE/tansu-$TANSU_VERSION.lock"
  flock "$lock"
  if ! [ -x "$TANSU_BIN" ]; then
    log "building tansu $TANSU_VERSION into $ORDERFLOW_CACHE (once; about 10 minutes)"
    cargo install tansu --version "=$TANSU_VERSION" --locked --features libsql,dynostore \
      --root "$ORDERFLOW_CACHE/tansu-$TANSU_VERSION" >"$ORDERFLOW_CACHE/tansu-build.log" 2>&1 ||
      { tail -30 "$ORDERFLOW_CACHE/tansu-build.log" >&2; die "building tansu failed"; }
  fi
  exec {lock}>&-
}

# start_tansu PORT STORAGE LOGFILE: starts tansu in the background on loopback and waits
# until it listens. Prints its pid.
# An optional 4th argument is the working directory: tansu resolves `sqlite://tansu.db`
# relative to it (an absolute `sqlite:///path` loses its leading slash).
start_tansu() {
  local port=$1 storage=$2 logfile=$3 workdir=${4:-.}
  (cd "$workdir" && exec "$TANSU_BIN" broker --storage-engine "$storage" \
    --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    >"$logfile" 2>&1) &
  local pid=$!
  wait_port "$port" 30 || { tail -20 "$logfile" >&2; die "tansu did not listen on 127.0.0.1:$port"; }
  echo "$pid"
}
