#!/usr/bin/env bash
# Brings up what shipit's tests and `make run` need on this machine:
# a Docker engine, the registry and htpasswd tools, and a local nginx base image.
# Safe to run again: every step checks first and does nothing when already done.
set -euo pipefail

BASE_IMAGE="${SHIPIT_LOCAL_BASE_IMAGE:-shipit-local/nginx:bookworm}"
STATE_DIR="${SHIPIT_TESTENV_DIR:-/var/tmp/shipit-testenv}"
mkdir -p "$STATE_DIR"

say() { printf 'testenv: %s\n' "$*" >&2; }
die() { printf 'testenv: error: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

apt_updated=0
apt_install() {
  is_root || die "missing $* and not root: install them (apt-get install $*) and run again"
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq >"$STATE_DIR/apt.log" 2>&1 || die "apt-get update failed, see $STATE_DIR/apt.log"
    apt_updated=1
  fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >>"$STATE_DIR/apt.log" 2>&1 \
    || die "apt-get install $* failed, see $STATE_DIR/apt.log"
}

ensure_packages() {
  local missing=()
  [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
  command -v htpasswd >/dev/null || missing+=(apache2-utils)
  # The screenshot tests render the served page with headless Chromium.
  command -v chromium >/dev/null || missing+=(chromium)
  # Outside clients that judge the images shipit uploads (tests/test_blob_store.py).
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v umoci >/dev/null || missing+=(umoci)
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

engine_up() { timeout 5 docker info >/dev/null 2>&1; }

# The project's network namespaces (scripts/engines.sh: 10.251.0.1 here, 10.251.0.2 there)
# hold plain-HTTP registries in tests, which an engine reaches only if it lists them as
# insecure registries, as a user's daemon.json would.
INSECURE_REGISTRIES='["10.251.0.0/30"]'
DAEMON_JSON="$STATE_DIR/daemon.json"

write_daemon_json() {
  printf '{"insecure-registries": %s}\n' "$INSECURE_REGISTRIES" >"$DAEMON_JSON"
}

check_insecure_registries() {
  local cidrs
  cidrs=$(timeout 5 docker info --format '{{json .RegistryConfig.InsecureRegistryCIDRs}}' 2>/dev/null || true)
  [[ "$cidrs" == *10.251.0.0/30* ]] && return
  say "warning: the running engine does not list 10.251.0.0/30 in insecure-registries (it has $cidrs);"
  say "  the insecure-registry tests need it: stop dockerd and run this script again, which starts"
  say "  it with $DAEMON_JSON"
}

ensure_engine() {
  if engine_up; then
    [ -n "${DOCKER_HOST:-}" ] || check_insecure_registries
    return
  fi
  if [ -n "${DOCKER_HOST:-}" ]; then die "DOCKER_HOST=$DOCKER_HOST does not answer; start that engine or unset DOCKER_HOST"; fi
  is_root || die "no Docker engine at /var/run/docker.sock and not root: start dockerd and run again"
  write_daemon_json
  say "starting dockerd with $DAEMON_JSON (log: $STATE_DIR/dockerd.log)"
  nohup /usr/sbin/dockerd --config-file "$DAEMON_JSON" >"$STATE_DIR/dockerd.log" 2>&1 &
  local deadline=$((SECONDS + 60))
  until engine_up; do
    [ $SECONDS -lt $deadline ] || die "dockerd did not answer within 60 s, see $STATE_DIR/dockerd.log"
    sleep 0.5
  done
  say "engine up: $(docker version --format '{{.Server.Version}}')"
}

ensure_base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  is_root || die "no base image $BASE_IMAGE and debootstrap needs root"
  local rootfs="$STATE_DIR/rootfs"
  rm -rf "$rootfs"
  say "building $BASE_IMAGE with debootstrap (about a minute)"
  debootstrap --variant=minbase --include=nginx-light bookworm "$rootfs" >"$STATE_DIR/debootstrap.log" 2>&1 \
    || die "debootstrap failed, see $STATE_DIR/debootstrap.log"
  # The apt caches and logs are not part of a serving image.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*
  tar -C "$rootfs" -c . | docker import --change 'CMD ["nginx", "-g", "daemon off;"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  say "base image $BASE_IMAGE ready"
}

ensure_packages
ensure_engine
ensure_base_image
say "ready: engine $(docker version --format '{{.Server.Version}}'), base image $BASE_IMAGE"
