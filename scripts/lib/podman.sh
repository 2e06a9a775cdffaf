# shellcheck shell=bash
# A container engine for scripts/compose-test.sh on a machine that has none and can pull
# no image: podman's Docker-compatible API under Debian's docker-compose 1.29, a local
# Debian base image made with debootstrap, stand-in images built on it, and a pump that
# runs the containers' healthchecks (podman runs none by itself here).
#
# The caller sources scripts/lib/brokers.sh first (log, apt_install) and defines
# `missing MESSAGE` (a prerequisite is absent: skip, or fail with CI=true) and
# `fail MESSAGE`, and sets:
#   run_dir     a scratch directory for logs
#   socket      where the podman API listens (unix socket path)
#   base_image  the local Debian base image's name
#   project     the compose project name (the pump serves its containers only)
# ensure_engine sets service_pid when it started the podman API service itself.

ensure_engine() {
  [ "$(id -u)" = 0 ] || missing "needs root (apt-get, rootful podman)"
  local packages=()
  command -v podman >/dev/null || packages+=(podman)
  command -v runc >/dev/null || [ -x /usr/sbin/runc ] || packages+=(runc)
  command -v docker-compose >/dev/null || packages+=(docker-compose)
  [ -x /usr/lib/cni/dnsname ] || packages+=(golang-github-containernetworking-plugin-dnsname)
  command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || packages+=(debootstrap)
  command -v strip >/dev/null || packages+=(binutils)
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
# build_stand_in IMAGE DOCKERFILE CONTEXT
build_stand_in() {
  local image=$1 dockerfile=$2 context=$3
  log "building the stand-in $image"
  podman build --layers -f "$dockerfile" --build-arg "BASE_IMAGE=$base_image" -t "$image" "$context" \
    >"$run_dir/build-$(basename "$dockerfile").log" 2>&1 ||
    { tail -30 "$run_dir/build-$(basename "$dockerfile").log" >&2; fail "building $image failed"; }
}

# Podman runs no healthchecks by itself here: run each container's every interval (at
# least every 2 s), so that `service_healthy` and the health status come. Runs while
# $run_dir/pump.on exists; start_pump starts it in the background (pid in pump_pid).
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
