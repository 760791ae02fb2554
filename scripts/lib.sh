# shellcheck shell=bash
# Shared helpers for scripts/test and scripts/demo. Source it; do not run it.
#
#   ensure_packages pkg...     install missing Debian packages (apt-get update at most once)
#   free_port                  print a free TCP port on 127.0.0.1
#   start_registry DIR PORT    run a CNCF distribution registry on 127.0.0.1:PORT, data in DIR
#   start_engine DIR           run a private Docker engine in DIR, print its unix socket path
#   stop_engine DIR            stop the engine started by start_engine DIR, unmount leftovers
#   stop_pidfile FILE          stop the process whose pid is in FILE (if any), wait for it
#   docker_cli                 print the docker client to use (Debian's /usr/bin/docker first)
#   wait_for DESC TIMEOUT CMD  retry CMD every 0.2s until it succeeds or TIMEOUT seconds pass
#
# Callers own cleanup: they `trap` a function that calls stop_pidfile on what they started.
# Everything listens on loopback only.

# Make `set -e` apply inside $(...) too (e.g. sock=$(start_engine DIR)).
shopt -s inherit_errexit 2>/dev/null || true

log() { printf '%s\n' "$*" >&2; }
section() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

_APT_UPDATED=0

_pkg_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = "installed" ]
}

ensure_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        _pkg_installed "$pkg" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0

    command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get to install them"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "missing packages (${missing[*]}); run as root or install them"
        sudo=(sudo)
    fi
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Never let a package's maintainer scripts start a system service (docker.io would
    # otherwise start a system dockerd with a bridge and iptables rules). Only add the
    # policy if the machine has none, and remove it again afterwards.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod +x "$policy"
        added_policy=1
    fi
    local rc=0
    if [ "$_APT_UPDATED" -eq 0 ]; then
        "${sudo[@]}" apt-get update -q </dev/null >&2 || rc=$?
        _APT_UPDATED=1
    fi
    if [ "$rc" -eq 0 ]; then
        "${sudo[@]}" apt-get install -y -q --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${missing[@]}" </dev/null >&2 || rc=$?
    fi
    [ "$added_policy" -eq 1 ] && "${sudo[@]}" rm -f "$policy"
    [ "$rc" -eq 0 ] || die "apt-get failed (exit $rc) installing: ${missing[*]}"
    for pkg in "${missing[@]}"; do
        _pkg_installed "$pkg" || die "package $pkg is still not installed after apt-get install"
    done
}

free_port() {
    python3 - 2>/dev/null <<'PY' && return 0
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
    # Fallback without python: pick random high ports until one is not listening.
    local port
    for _ in $(seq 1 100); do
        port=$(( 20000 + RANDOM % 30000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    die "could not find a free port"
}

wait_for() {
    local desc=$1 timeout=$2
    shift 2
    local deadline=$(( SECONDS + timeout ))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "timed out after ${timeout}s waiting for $desc"
            return 1
        fi
        sleep 0.2
    done
}

stop_pidfile() {
    local file=$1 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file" 2>/dev/null || true)
    rm -f "$file"
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do          # up to 15s for a clean shutdown
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "pid $pid (from $file) ignored SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

start_registry() {
    local dir=$1 port=$2
    command -v docker-registry >/dev/null || die "docker-registry not found (apt-get install docker-registry)"
    mkdir -p "$dir/data"
    cat >"$dir/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
YAML
    # No shell wrapper between us and the registry: $! is the registry itself.
    docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 </dev/null &
    echo $! >"$dir/registry.pid"
    if ! wait_for "registry on 127.0.0.1:$port" 20 curl -fsS "http://127.0.0.1:$port/v2/"; then
        log "--- $dir/registry.log ---"
        cat "$dir/registry.log" >&2 || true
        stop_pidfile "$dir/registry.pid"
        die "registry did not start on 127.0.0.1:$port"
    fi
    log "registry listening on 127.0.0.1:$port (data: $dir/data, pid $(cat "$dir/registry.pid"))"
}

docker_cli() {
    if [ -x /usr/bin/docker ]; then
        echo /usr/bin/docker
    elif command -v docker >/dev/null; then
        command -v docker
    else
        die "no docker client found (apt-get install docker.io)"
    fi
}

start_engine() {
    local dir=$1
    local sock="$dir/docker.sock" cli
    command -v dockerd >/dev/null || [ -x /usr/sbin/dockerd ] || die "dockerd not found (apt-get install docker.io)"
    cli=$(docker_cli)
    # unix socket paths are limited to 107 bytes
    [ "${#sock}" -lt 100 ] || die "engine dir path too long for a unix socket: $sock"
    mkdir -p "$dir/data" "$dir/exec"
    PATH="$PATH:/usr/sbin:/sbin" dockerd \
        --host "unix://$sock" \
        --data-root "$dir/data" \
        --exec-root "$dir/exec" \
        --pidfile "$dir/docker.pid" \
        --bridge=none --iptables=false \
        >"$dir/dockerd.log" 2>&1 </dev/null &
    # dockerd writes its own pidfile once up; record $! now so an early failure is cleanable.
    echo $! >"$dir/dockerd.pid"
    if ! wait_for "docker engine at $sock" 60 "$cli" -H "unix://$sock" version; then
        log "--- $dir/dockerd.log (last 50 lines) ---"
        tail -n 50 "$dir/dockerd.log" >&2 || true
        stop_engine "$dir"
        die "docker engine did not start (see $dir/dockerd.log)"
    fi
    log "docker engine up at unix://$sock (pid $(cat "$dir/dockerd.pid"))"
    echo "$sock"
}

stop_engine() {
    local dir=$1
    stop_pidfile "$dir/dockerd.pid"
    rm -f "$dir/docker.pid"
    # dockerd leaves mounts behind in its data root if it dies hard; unmount before rm -rf.
    local m
    if command -v findmnt >/dev/null; then
        for m in $(findmnt -rn -o TARGET | grep -F "$dir/" | sort -r || true); do
            umount -l "$m" 2>/dev/null || true
        done
    fi
    return 0
}
