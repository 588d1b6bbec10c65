#!/usr/bin/env bash
# Brings up what shipit's tests and `make run` need on this machine:
# a Docker engine, the registry and htpasswd tools, a local nginx base image, qemu for
# arm64 binaries, and a multi-platform nginx base (linux/amd64 and linux/arm64) as an OCI
# image layout in $STATE_DIR/nginx-bookworm-oci, which harness/platform_base.py pushes.
# Safe to run again: every step checks first and does nothing when already done.
set -euo pipefail

BASE_IMAGE="${SHIPIT_LOCAL_BASE_IMAGE:-shipit-local/nginx:bookworm}"
STATE_DIR="${SHIPIT_TESTENV_DIR:-/var/tmp/shipit-testenv}"
PYTHON="${PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
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
  # The assets bench: requests per second for a stylesheet (bench/assets.py).
  command -v wrk >/dev/null || missing+=(wrk)
  # Outside clients that judge the images shipit uploads (tests/test_blob_store.py).
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v umoci >/dev/null || missing+=(umoci)
  # arm64 binaries under emulation: the arm64 root filesystem, and its containers.
  [ -x /usr/bin/qemu-aarch64-static ] || missing+=(qemu-user-static)
  command -v update-binfmts >/dev/null || missing+=(binfmt-support)
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

ROOTFS_COMMAND=(debootstrap --variant=minbase --include=nginx-light bookworm)

rootfs_tar() { printf '%s/rootfs-%s.tar\n' "$STATE_DIR" "$1"; }

ensure_rootfs_tar() { # ensure_rootfs_tar ARCH: a bookworm nginx root filesystem, as a tar
  local arch=$1 tar rootfs="$STATE_DIR/rootfs-$1"
  tar=$(rootfs_tar "$arch")
  [ -s "$tar" ] && return
  is_root || die "no $tar and debootstrap needs root"
  rm -rf "$rootfs"
  say "debootstrap of the $arch root filesystem (a minute or two; longer under emulation)"
  local started=$SECONDS
  "${ROOTFS_COMMAND[0]}" --arch="$arch" "${ROOTFS_COMMAND[@]:1}" "$rootfs" >"$STATE_DIR/debootstrap-$arch.log" 2>&1 \
    || die "debootstrap --arch=$arch failed, see $STATE_DIR/debootstrap-$arch.log"
  # The apt caches and logs are not part of a serving image.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*
  tar -C "$rootfs" -cf "$tar.partial" . && mv "$tar.partial" "$tar"
  rm -rf "$rootfs"
  say "$arch root filesystem ready in $((SECONDS - started)) s: $tar"
}

ensure_base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  is_root || die "no base image $BASE_IMAGE and debootstrap needs root"
  ensure_rootfs_tar amd64
  say "importing $BASE_IMAGE"
  docker import --change 'CMD ["nginx", "-g", "daemon off;"]' "$(rootfs_tar amd64)" "$BASE_IMAGE" >/dev/null
  say "base image $BASE_IMAGE ready"
}

BINFMT=/proc/sys/fs/binfmt_misc
ARM64_HANDLER=$BINFMT/qemu-aarch64

ensure_arm64_emulation() {
  # F (fix binary): the kernel opens qemu when the handler is registered, so it also runs
  # arm64 binaries inside containers, whose root filesystems have no qemu.
  if grep -qx enabled "$ARM64_HANDLER" 2>/dev/null && grep -q '^flags:.*F' "$ARM64_HANDLER"; then return; fi
  is_root || die "arm64 emulation is not enabled ($ARM64_HANDLER) and not root: run this script as root"
  [ -e "$BINFMT/register" ] || mount -t binfmt_misc binfmt_misc "$BINFMT" \
    || die "cannot mount binfmt_misc on $BINFMT (a container needs --privileged for it)"
  update-binfmts --enable qemu-aarch64 >>"$STATE_DIR/apt.log" 2>&1 \
    || die "update-binfmts --enable qemu-aarch64 failed, see $STATE_DIR/apt.log"
  grep -qx enabled "$ARM64_HANDLER" 2>/dev/null || die "qemu-aarch64 is not enabled in $BINFMT"
  grep -q '^flags:.*F' "$ARM64_HANDLER" \
    || die "qemu-aarch64 is registered without the F flag (see $ARM64_HANDLER): remove that handler (echo -1 > $ARM64_HANDLER) and run this script again"
  say "arm64 emulation enabled ($ARM64_HANDLER)"
}

PLATFORM_BASE_LAYOUT="$STATE_DIR/nginx-bookworm-oci"
LAYOUT_WRITER="$HERE/write_oci_layout.py"

layout_inputs() { # what the layout is made of: the writer and both root filesystems
  sha256sum "$LAYOUT_WRITER" | cut -d' ' -f1
  stat -c '%n %s %Y' "$(rootfs_tar amd64)" "$(rootfs_tar arm64)"
}

ensure_platform_base_layout() {
  local stamp="$PLATFORM_BASE_LAYOUT.inputs"
  if [ -s "$PLATFORM_BASE_LAYOUT/index.json" ] && [ -s "$stamp" ] \
    && [ "$(layout_inputs 2>/dev/null)" = "$(cat "$stamp")" ]; then return; fi
  ensure_rootfs_tar amd64
  ensure_rootfs_tar arm64
  say "writing the linux/amd64 + linux/arm64 nginx base layout in $PLATFORM_BASE_LAYOUT"
  "$PYTHON" "$LAYOUT_WRITER" "$PLATFORM_BASE_LAYOUT" \
    --platform "linux/amd64=$(rootfs_tar amd64)" \
    --platform "linux/arm64/v8=$(rootfs_tar arm64)" \
    --cmd '["nginx", "-g", "daemon off;"]' \
    --created-by "${ROOTFS_COMMAND[*]}" >/dev/null \
    || die "writing the layout in $PLATFORM_BASE_LAYOUT failed"
  layout_inputs >"$stamp"
  say "multi-platform base layout ready ($(du -sh "$PLATFORM_BASE_LAYOUT" | cut -f1))"
}

ensure_packages
ensure_engine
ensure_base_image
ensure_arm64_emulation
ensure_platform_base_layout
say "ready: engine $(docker version --format '{{.Server.Version}}'), base image $BASE_IMAGE"
