#!/usr/bin/env bash
# Two more Docker engines for shipit's tests, beside the classic one that testenv.sh starts,
# and the buildx plugin that the benchmark compares shipit with:
#
#   containerd   Docker 26.1.5 (Debian trixie's docker.io + containerd 1.7.24) with the
#                containerd image store, in the network namespace shipit-ctrd,
#                socket unix:///run/shipit-ctrd.sock. What it publishes is reachable only
#                inside that namespace: run clients there (`engines.sh exec containerd CMD`).
#   remote       Docker 20.10 (this machine's dockerd) in the network namespace shipit-remote,
#                joined to this one by a veth pair (10.251.0.1 here, 10.251.0.2 there):
#                tcp://10.251.0.2:2375 (plain) and tcp://10.251.0.2:2376 (TLS, client
#                certificates in $STATE_DIR/remote-tls/client for DOCKER_CERT_PATH), and
#                ssh://root@10.251.0.2 (an sshd whose one key may only run
#                `docker system dial-stdio`; client settings in $STATE_DIR/remote-ssh/ssh_config).
#                Its daemon.json lists 10.251.0.0/30 in insecure-registries, as testenv.sh's
#                does for the classic engine: plain-HTTP registries on 10.251.0.1 for tests.
#   buildx       Debian trixie's docker-buildx 0.13.1, a docker CLI plugin linked into
#                ${DOCKER_CONFIG:-~/.docker}/cli-plugins (multi-platform builds need the
#                containerd engine's image store).
#   cosign       Debian trixie's cosign 2.5.0, unpacked in $STATE_DIR/trixie/cosign: the
#                client nobody here wrote that judges the signatures and attestations shipit
#                pushes (tests/test_signing_cosign.py finds it there).
#
# Usage: engines.sh up|down|status|env [containerd|remote|buildx|cosign|all]
#        engines.sh exec containerd|remote CMD...   (CMD in that engine's network namespace,
#                                                    with DOCKER_HOST pointing at it)
# `up` is idempotent: each step checks first. Downloaded packages stay in $STATE_DIR so a
# second `up` on the same machine needs no network. `down` stops the engines and removes the
# namespaces but keeps their data (images); `purge` removes that too. Needs root.
set -euo pipefail

STATE_DIR="${SHIPIT_TESTENV_DIR:-/var/tmp/shipit-testenv}"
BASE_IMAGE="${SHIPIT_LOCAL_BASE_IMAGE:-shipit-local/nginx:bookworm}"
PYTHON="${PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

CTRD=shipit-ctrd
CTRD_SOCK=/run/$CTRD.sock
CTRD_TRIXIE="$STATE_DIR/trixie"

REMOTE=shipit-remote
REMOTE_SOCK=/run/$REMOTE.sock
REMOTE_IP=10.251.0.2
LOCAL_IP=10.251.0.1
REMOTE_VETH=shipit-rmt0 # this namespace's end; the other end is called eth0 in there
REMOTE_TLS="$STATE_DIR/remote-tls"
REMOTE_SSH="$STATE_DIR/remote-ssh"

say() { printf 'engines: %s\n' "$*" >&2; }
die() { printf 'engines: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces and dockerd)"
mkdir -p "$STATE_DIR"

answers() { timeout 10 docker -H "$1" info >/dev/null 2>&1; }

wait_for() { # wait_for WHAT LOG COMMAND...
  local what=$1 log=$2 deadline=$((SECONDS + 90))
  shift 2
  until "$@"; do
    [ $SECONDS -lt $deadline ] || die "$what did not answer within 90 s, see $log"
    sleep 0.5
  done
}

ensure_netns() {
  local name=$1
  [ -e "/var/run/netns/$name" ] || ip netns add "$name"
  nsenter --net="/var/run/netns/$name" ip link set lo up
}

running() { # running PIDFILE: the process named there is alive
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop_pidfile() {
  local pidfile=$1 pid
  running "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid=$(cat "$pidfile")
  kill "$pid"
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then kill -9 "$pid" 2>/dev/null || true; break; fi
    sleep 0.3
  done
  rm -f "$pidfile"
}

load_base_image() { # load_base_image DOCKER_HOST
  if docker -H "$1" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 \
    || die "the classic engine has no $BASE_IMAGE: run scripts/testenv.sh first"
  say "loading $BASE_IMAGE into $1"
  docker save "$BASE_IMAGE" | docker -H "$1" load >/dev/null
}

# --- the containerd image store engine ------------------------------------------------------

trixie_mirror() {
  # The same mirror as this machine's apt configuration (deb822 or one-line format).
  local uri
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | grep -v security | sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}' | head -n1 || true)
  fi
  [ -n "$uri" ] || die "cannot find the Debian mirror in /etc/apt"
  printf '%s\n' "$uri"
}

trixie_download() { # trixie_download PACKAGE...: their .debs from Debian trixie into $CTRD_TRIXIE/debs
  local apt_dir="$CTRD_TRIXIE/apt" debs="$CTRD_TRIXIE/debs" package missing=()
  for package in "$@"; do
    ls "$debs/${package}"_*.deb >/dev/null 2>&1 || missing+=("$package")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$debs"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s trixie main\n' \
    "$(trixie_mirror)" >"$apt_dir/trixie.list"
  local opts=(-o "Dir::Etc::SourceList=$apt_dir/trixie.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")
  say "downloading ${missing[*]} from Debian trixie"
  apt-get "${opts[@]}" update -qq >"$CTRD_TRIXIE/apt.log" 2>&1 \
    || die "apt-get update (trixie) failed, see $CTRD_TRIXIE/apt.log"
  (cd "$debs" && apt-get "${opts[@]}" download "${missing[@]}" >>"$CTRD_TRIXIE/apt.log" 2>&1) \
    || die "apt-get download ${missing[*]} failed, see $CTRD_TRIXIE/apt.log"
}

ensure_trixie_binaries() {
  local bin="$CTRD_TRIXIE/bin"
  if [ -x "$bin/dockerd" ] && [ -x "$bin/containerd" ] && [ -x "$bin/ctr" ] && [ -x "$bin/runc" ]; then return; fi
  local debs="$CTRD_TRIXIE/debs" root="$CTRD_TRIXIE/root"
  trixie_download docker.io containerd
  rm -rf "$root" "$bin"
  mkdir -p "$root" "$bin"
  for deb in "$debs"/docker.io_*.deb "$debs"/containerd_*.deb; do dpkg-deb -x "$deb" "$root"; done
  local tool found
  for tool in dockerd docker-proxy containerd containerd-shim-runc-v2 ctr; do
    found=$(find "$root/usr/bin" "$root/usr/sbin" -name "$tool" -type f 2>/dev/null | head -n1)
    [ -n "$found" ] || die "$tool is not in the trixie packages (see $root)"
    ln -sf "$found" "$bin/$tool"
  done
  # trixie's runc needs glibc 2.38; bookworm's works with this containerd.
  [ -x /usr/sbin/runc ] || die "/usr/sbin/runc missing: apt-get install runc"
  ln -sf /usr/sbin/runc "$bin/runc"
}

containerd_up() {
  if answers "unix://$CTRD_SOCK"; then load_base_image "unix://$CTRD_SOCK"; return; fi
  ensure_trixie_binaries
  ensure_netns "$CTRD"
  local dir="$STATE_DIR/$CTRD"
  mkdir -p "$dir"
  printf '{"features": {"containerd-snapshotter": true}}\n' >"$dir/daemon.json"
  stop_pidfile "/run/$CTRD.pid"
  rm -f "$CTRD_SOCK"
  say "starting the containerd-store engine at unix://$CTRD_SOCK (log: $dir/dockerd.log)"
  # nsenter, not `ip netns exec`: that remounts /sys and dockerd then finds no devices cgroup.
  setsid nsenter --net="/var/run/netns/$CTRD" \
    env PATH="$CTRD_TRIXIE/bin:$PATH" dockerd \
    --config-file "$dir/daemon.json" \
    --data-root "/var/lib/$CTRD" \
    --exec-root "/run/$CTRD" \
    --pidfile "/run/$CTRD.pid" \
    -H "unix://$CTRD_SOCK" \
    --cgroup-parent "$CTRD" \
    >"$dir/dockerd.log" 2>&1 </dev/null &
  wait_for "the containerd-store engine" "$dir/dockerd.log" answers "unix://$CTRD_SOCK"
  [[ "$(docker -H "unix://$CTRD_SOCK" info 2>/dev/null)" == *io.containerd.snapshotter* ]] \
    || die "the engine at $CTRD_SOCK does not use the containerd image store"
  load_base_image "unix://$CTRD_SOCK"
}

containerd_down() {
  stop_pidfile "/run/$CTRD.pid"
  rm -f "$CTRD_SOCK"
  [ -e "/var/run/netns/$CTRD" ] && ip netns del "$CTRD"
  return 0
}

# --- docker buildx -------------------------------------------------------------------------

BUILDX_VERSION=0.13.1
BUILDX_ROOT="$CTRD_TRIXIE/buildx"
BUILDX_PLUGIN="$BUILDX_ROOT/usr/libexec/docker/cli-plugins/docker-buildx"
# Where the docker CLI looks for plugins: the engines' clients use this machine's config.
BUILDX_PLUGIN_DIR="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"

buildx_answers() { [[ "$(docker buildx version 2>/dev/null)" == *" $BUILDX_VERSION"* ]]; }

buildx_up() {
  # Debian trixie's buildx, for `docker buildx build --platform ...` on the containerd-store
  # engine; a CLI plugin only, so nothing to start.
  if buildx_answers; then return; fi
  if [ ! -x "$BUILDX_PLUGIN" ]; then
    trixie_download docker-buildx
    rm -rf "$BUILDX_ROOT"
    dpkg-deb -x "$CTRD_TRIXIE"/debs/docker-buildx_*.deb "$BUILDX_ROOT"
    [ -x "$BUILDX_PLUGIN" ] || die "no docker-buildx in the trixie package (see $BUILDX_ROOT)"
  fi
  mkdir -p "$BUILDX_PLUGIN_DIR"
  ln -sf "$BUILDX_PLUGIN" "$BUILDX_PLUGIN_DIR/docker-buildx"
  buildx_answers \
    || die "docker buildx version does not say $BUILDX_VERSION: $(docker buildx version 2>&1 | head -n1)"
  say "docker buildx $BUILDX_VERSION in $BUILDX_PLUGIN_DIR"
}

buildx_down() { rm -f "$BUILDX_PLUGIN_DIR/docker-buildx"; }

# --- cosign ---------------------------------------------------------------------------------

COSIGN_VERSION=2.5.0
COSIGN_ROOT="$CTRD_TRIXIE/cosign"
COSIGN="$COSIGN_ROOT/usr/bin/cosign"

# Debian's build says "GitVersion: devel": the package's version is the one to check.
cosign_answers() {
  [ -x "$COSIGN" ] && "$COSIGN" version >/dev/null 2>&1 \
    && [[ "$(dpkg-deb -f "$CTRD_TRIXIE"/debs/cosign_*.deb Version 2>/dev/null)" == "$COSIGN_VERSION"-* ]]
}

cosign_up() {
  # A statically linked Go program: unpacking the package is all it needs, nothing to start.
  if cosign_answers; then return; fi
  trixie_download cosign
  rm -rf "$COSIGN_ROOT"
  dpkg-deb -x "$CTRD_TRIXIE"/debs/cosign_*.deb "$COSIGN_ROOT"
  cosign_answers || die "$COSIGN does not run, or the package is not cosign $COSIGN_VERSION"
  say "cosign $COSIGN_VERSION at $COSIGN"
}

cosign_down() { :; }

# --- the remote engine ----------------------------------------------------------------------

ensure_socat() {
  command -v socat >/dev/null && return
  say "installing socat"
  apt-get update -qq >"$STATE_DIR/apt-socat.log" 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat >>"$STATE_DIR/apt-socat.log" 2>&1 \
    || die "apt-get install socat failed, see $STATE_DIR/apt-socat.log"
}

ensure_remote_certs() {
  [ -s "$REMOTE_TLS/client/key.pem" ] && [ -s "$REMOTE_TLS/server/key.pem" ] && return
  "$PYTHON" -c 'import cryptography' 2>/dev/null \
    || die "$PYTHON has no cryptography module: run make venv (or set PYTHON)"
  "$PYTHON" "$HERE/make_test_certs.py" "$REMOTE_TLS" "$REMOTE_IP"
}

ensure_remote_link() {
  ensure_netns "$REMOTE"
  if ! ip link show "$REMOTE_VETH" >/dev/null 2>&1; then
    ip link add "$REMOTE_VETH" type veth peer name eth0 netns "$REMOTE"
    ip addr add "$LOCAL_IP/30" dev "$REMOTE_VETH"
    nsenter --net="/var/run/netns/$REMOTE" ip addr add "$REMOTE_IP/30" dev eth0
  fi
  ip link set "$REMOTE_VETH" up
  nsenter --net="/var/run/netns/$REMOTE" ip link set eth0 up
}

ensure_sshd_binary() {
  [ -x "$REMOTE_SSH/root/usr/sbin/sshd" ] && return
  mkdir -p "$REMOTE_SSH/debs"
  if ! ls "$REMOTE_SSH"/debs/openssh-server_*.deb >/dev/null 2>&1; then
    # Downloaded, not installed: an installed openssh-server would also serve this machine.
    (cd "$REMOTE_SSH/debs" && apt-get download openssh-server >"$REMOTE_SSH/apt.log" 2>&1) || {
      apt-get update -qq >>"$REMOTE_SSH/apt.log" 2>&1
      (cd "$REMOTE_SSH/debs" && apt-get download openssh-server >>"$REMOTE_SSH/apt.log" 2>&1)
    } || die "apt-get download openssh-server failed, see $REMOTE_SSH/apt.log"
  fi
  dpkg-deb -x "$REMOTE_SSH"/debs/openssh-server_*.deb "$REMOTE_SSH/root"
}

ensure_remote_sshd() {
  # ssh://root@10.251.0.2: an sshd in the remote namespace whose one key may only run
  # `docker system dial-stdio` against the remote engine. Clients use $REMOTE_SSH/ssh_config.
  local pidfile=/run/$REMOTE-sshd.pid
  running "$pidfile" && return
  command -v ssh-keygen >/dev/null || die "ssh-keygen missing: apt-get install openssh-client"
  ensure_sshd_binary
  getent passwd sshd >/dev/null \
    || useradd --system --no-create-home --home-dir /run/sshd --shell /usr/sbin/nologin sshd
  mkdir -p /run/sshd "$REMOTE_SSH"
  chmod 0755 /run/sshd
  [ -s "$REMOTE_SSH/host_key" ] || ssh-keygen -q -t ed25519 -N '' -C shipit-remote-host -f "$REMOTE_SSH/host_key"
  [ -s "$REMOTE_SSH/client_key" ] || ssh-keygen -q -t ed25519 -N '' -C shipit-tests -f "$REMOTE_SSH/client_key"
  printf 'command="DOCKER_HOST=unix://%s exec docker system dial-stdio",restrict %s\n' \
    "$REMOTE_SOCK" "$(cat "$REMOTE_SSH/client_key.pub")" >"$REMOTE_SSH/authorized_keys"
  printf '%s %s\n' "$REMOTE_IP" "$(cut -d' ' -f1,2 "$REMOTE_SSH/host_key.pub")" >"$REMOTE_SSH/known_hosts"
  cat >"$REMOTE_SSH/sshd_config" <<EOF2
ListenAddress $REMOTE_IP:22
HostKey $REMOTE_SSH/host_key
AuthorizedKeysFile $REMOTE_SSH/authorized_keys
PidFile $pidfile
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
EOF2
  cat >"$REMOTE_SSH/ssh_config" <<EOF2
Host $REMOTE_IP
  User root
  IdentityFile $REMOTE_SSH/client_key
  IdentitiesOnly yes
  UserKnownHostsFile $REMOTE_SSH/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
EOF2
  nsenter --net="/var/run/netns/$REMOTE" "$REMOTE_SSH/root/usr/sbin/sshd" \
    -f "$REMOTE_SSH/sshd_config" -E "$REMOTE_SSH/sshd.log" \
    || die "sshd did not start, see $REMOTE_SSH/sshd.log"
  wait_for "sshd on $REMOTE_IP:22" "$REMOTE_SSH/sshd.log" remote_sshd_listens
}

remote_sshd_listens() { timeout 2 bash -c "</dev/tcp/$REMOTE_IP/22" 2>/dev/null; }

remote_tls_answers() {
  DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH="$REMOTE_TLS/client" answers "tcp://$REMOTE_IP:2376"
}

REMOTE_INSECURE_REGISTRIES='["10.251.0.0/30"]'

remote_config_current() { # the running remote engine has the insecure-registries we want
  [[ "$(timeout 10 docker -H "unix://$REMOTE_SOCK" info --format '{{json .RegistryConfig.InsecureRegistryCIDRs}}' 2>/dev/null)" == *10.251.0.0/30* ]]
}

remote_up() {
  if answers "tcp://$REMOTE_IP:2375" && remote_tls_answers && running "/run/$REMOTE-sshd.pid" \
    && remote_config_current; then
    load_base_image "unix://$REMOTE_SOCK"
    return
  fi
  ensure_socat
  ensure_remote_certs
  ensure_remote_link
  local dir="$STATE_DIR/$REMOTE" ns="/var/run/netns/$REMOTE"
  mkdir -p "$dir"
  printf '{"insecure-registries": %s}\n' "$REMOTE_INSECURE_REGISTRIES" >"$dir/daemon.json"
  if answers "unix://$REMOTE_SOCK" && ! remote_config_current; then
    say "restarting the remote engine for its insecure-registries ($dir/daemon.json)"
    stop_pidfile "/run/$REMOTE.pid"
  fi
  if ! answers "unix://$REMOTE_SOCK"; then
    stop_pidfile "/run/$REMOTE.pid"
    rm -f "$REMOTE_SOCK"
    say "starting the remote engine at tcp://$REMOTE_IP:2376 (TLS) (log: $dir/dockerd.log)"
    # dockerd puts TLS on every tcp listener, so the plain port is a forwarder to its socket.
    setsid nsenter --net="$ns" /usr/sbin/dockerd \
      --config-file "$dir/daemon.json" \
      --data-root "/var/lib/$REMOTE" \
      --exec-root "/run/$REMOTE" \
      --pidfile "/run/$REMOTE.pid" \
      -H "unix://$REMOTE_SOCK" \
      -H "tcp://$REMOTE_IP:2376" \
      --tlsverify \
      --tlscacert "$REMOTE_TLS/server/ca.pem" \
      --tlscert "$REMOTE_TLS/server/cert.pem" \
      --tlskey "$REMOTE_TLS/server/key.pem" \
      --cgroup-parent "$REMOTE" \
      >"$dir/dockerd.log" 2>&1 </dev/null &
    wait_for "the remote engine" "$dir/dockerd.log" answers "unix://$REMOTE_SOCK"
  fi
  if ! running "$dir/socat.pid"; then
    setsid nsenter --net="$ns" socat \
      "TCP-LISTEN:2375,bind=$REMOTE_IP,reuseaddr,fork" "UNIX-CONNECT:$REMOTE_SOCK" \
      >"$dir/socat.log" 2>&1 </dev/null &
    echo $! >"$dir/socat.pid"
  fi
  wait_for "tcp://$REMOTE_IP:2375" "$dir/socat.log" answers "tcp://$REMOTE_IP:2375"
  wait_for "tcp://$REMOTE_IP:2376" "$dir/dockerd.log" remote_tls_answers
  ensure_remote_sshd
  load_base_image "unix://$REMOTE_SOCK"
}

remote_down() {
  stop_pidfile "/run/$REMOTE-sshd.pid"
  stop_pidfile "$STATE_DIR/$REMOTE/socat.pid"
  stop_pidfile "/run/$REMOTE.pid"
  rm -f "$REMOTE_SOCK"
  ip link show "$REMOTE_VETH" >/dev/null 2>&1 && ip link del "$REMOTE_VETH"
  [ -e "/var/run/netns/$REMOTE" ] && ip netns del "$REMOTE"
  return 0
}

# --- commands -------------------------------------------------------------------------------

status() {
  local state
  state=down
  answers "unix://$CTRD_SOCK" && state="up ($(docker -H "unix://$CTRD_SOCK" version --format '{{.Server.Version}}'))"
  printf 'containerd  unix://%s  netns %s  %s\n' "$CTRD_SOCK" "$CTRD" "$state"
  state=down
  answers "tcp://$REMOTE_IP:2375" && state="up ($(docker -H "tcp://$REMOTE_IP:2375" version --format '{{.Server.Version}}'))"
  printf 'remote      tcp://%s:2375, tcp://%s:2376 (TLS, DOCKER_CERT_PATH=%s/client), ssh://root@%s (ssh -F %s/ssh_config)  %s\n' \
    "$REMOTE_IP" "$REMOTE_IP" "$REMOTE_TLS" "$REMOTE_IP" "$REMOTE_SSH" "$state"
  state=missing
  buildx_answers && state="$BUILDX_VERSION"
  printf 'buildx      %s/docker-buildx  %s\n' "$BUILDX_PLUGIN_DIR" "$state"
  state=missing
  cosign_answers && state="$COSIGN_VERSION"
  printf 'cosign      %s  %s\n' "$COSIGN" "$state"
}

print_env() { # shell lines that point docker (and shipit) at one engine
  case $1 in
    containerd) printf 'export DOCKER_HOST=unix://%s\n# run clients with: nsenter --net=/var/run/netns/%s\n' "$CTRD_SOCK" "$CTRD" ;;
    remote) printf 'export DOCKER_HOST=tcp://%s:2375\n' "$REMOTE_IP" ;;
    remote-tls) printf 'export DOCKER_HOST=tcp://%s:2376 DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=%s/client\n' "$REMOTE_IP" "$REMOTE_TLS" ;;
    *) die "env: containerd, remote or remote-tls" ;;
  esac
}

run_in() { # run_in ENGINE CMD...
  local which=$1
  shift
  case $which in
    containerd) exec nsenter --net="/var/run/netns/$CTRD" env DOCKER_HOST="unix://$CTRD_SOCK" "$@" ;;
    remote) exec nsenter --net="/var/run/netns/$REMOTE" env DOCKER_HOST="unix://$REMOTE_SOCK" "$@" ;;
    *) die "exec: containerd or remote" ;;
  esac
}

command=${1:-up}
which=${2:-all}
case $command in
  up)
    case $which in
      containerd) containerd_up ;;
      remote) remote_up ;;
      buildx) buildx_up ;;
      cosign) cosign_up ;;
      all) containerd_up; remote_up; buildx_up; cosign_up ;;
      *) die "unknown engine $which (containerd, remote, buildx, cosign or all)" ;;
    esac
    status
    ;;
  down | purge)
    case $which in
      containerd) containerd_down ;;
      remote) remote_down ;;
      buildx) buildx_down ;;
      cosign) cosign_down ;;
      all) containerd_down; remote_down; buildx_down; cosign_down ;;
      *) die "unknown engine $which (containerd, remote, buildx, cosign or all)" ;;
    esac
    if [ "$command" = purge ]; then
      case $which in containerd | all) rm -rf "/var/lib/$CTRD" "/run/$CTRD" ;; esac
      case $which in remote | all) rm -rf "/var/lib/$REMOTE" "/run/$REMOTE" ;; esac
    fi
    ;;
  status) status ;;
  env) print_env "$which" ;;
  exec) shift 2; run_in "$which" "$@" ;;
  *) die "usage: engines.sh up|down|purge|status|env|exec [containerd|remote|all]" ;;
esac
