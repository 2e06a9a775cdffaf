# shellcheck shell=bash
# Cargo tools the checks in scripts/test.sh run (cargo-deny, cargo-machete), built once
# from crates.io into the same cache as tansu (outside the clone) and reused, never
# assumed to be installed. Needs scripts/lib/brokers.sh sourced first (log, die,
# ORDERFLOW_CACHE).

CARGO_DENY_VERSION=0.20.2
CARGO_MACHETE_VERSION=0.9.2
CARGO_DENY_BIN="$ORDERFLOW_CACHE/cargo-deny-$CARGO_DENY_VERSION/bin/cargo-deny"
CARGO_MACHETE_BIN="$ORDERFLOW_CACHE/cargo-machete-$CARGO_MACHETE_VERSION/bin/cargo-machete"

# ensure_cargo_tool CRATE VERSION: `cargo install` it into
# $ORDERFLOW_CACHE/CRATE-VERSION unless that binary is already there.
ensure_cargo_tool() {
  local crate=$1 version=$2 root="$ORDERFLOW_CACHE/$1-$2" lock
  if [ -x "$root/bin/$crate" ]; then return 0; fi
  mkdir -p "$ORDERFLOW_CACHE"
  # As for tansu (brokers.sh): a second script waits for the first one's build.
  exec {lock}>"$root.lock"
  flock "$lock"
  if ! [ -x "$root/bin/$crate" ]; then
    log "building $crate $version into $ORDERFLOW_CACHE (once)"
    cargo install "$crate" --version "=$version" --locked --root "$root" \
      >"$ORDERFLOW_CACHE/$crate-build.log" 2>&1 ||
      { tail -30 "$ORDERFLOW_CACHE/$crate-build.log" >&2; die "building $crate failed"; }
  fi
  exec {lock}>&-
}

ensure_cargo_deny() { ensure_cargo_tool cargo-deny "$CARGO_DENY_VERSION"; }
ensure_cargo_machete() { ensure_cargo_tool cargo-machete "$CARGO_MACHETE_VERSION"; }
