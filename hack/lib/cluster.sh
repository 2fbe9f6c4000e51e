# shellcheck shell=bash
# Shared by hack/cluster, hack/traefik and hack/prometheus: ports, paths and process helpers.
# Source it after common.sh. Every port is on 127.0.0.1 and can be moved by its environment
# variable.
LOCKGATE_ETCD_PORT="${LOCKGATE_ETCD_PORT:-23790}"
LOCKGATE_ETCD_PEER_PORT="${LOCKGATE_ETCD_PEER_PORT:-23800}"
LOCKGATE_APISERVER_PORT="${LOCKGATE_APISERVER_PORT:-16443}"
LOCKGATE_KCM_PORT="${LOCKGATE_KCM_PORT:-16257}"
LOCKGATE_SCHEDULER_PORT="${LOCKGATE_SCHEDULER_PORT:-16259}"
LOCKGATE_TRAEFIK_WEB_PORT="${LOCKGATE_TRAEFIK_WEB_PORT:-18080}"
LOCKGATE_TRAEFIK_API_PORT="${LOCKGATE_TRAEFIK_API_PORT:-18081}"
LOCKGATE_TRAEFIK_METRICS_PORT="${LOCKGATE_TRAEFIK_METRICS_PORT:-18082}"
LOCKGATE_PROMETHEUS_PORT="${LOCKGATE_PROMETHEUS_PORT:-19090}"
# These two listen on the bridge address (10.244.0.1), not on 127.0.0.1: metrics-server scrapes
# the Node's InternalIP, and an EndpointSlice (for the aggregation layer) refuses loopback.
LOCKGATE_KUBELET_PORT="${LOCKGATE_KUBELET_PORT:-16250}"
LOCKGATE_METRICS_SERVER_PORT="${LOCKGATE_METRICS_SERVER_PORT:-16251}"

CLUSTER_DIR="$LOCKGATE_RUN/cluster"
TRAEFIK_DIR="$LOCKGATE_RUN/traefik"
PROMETHEUS_DIR="$LOCKGATE_RUN/prometheus"
METRICS_SERVER_DIR="$LOCKGATE_RUN/metrics-server"
KUBECONFIG_ADMIN="$LOCKGATE_RUN/kubeconfig"
APISERVER_URL="https://127.0.0.1:$LOCKGATE_APISERVER_PORT"
BUILD_TOOLS="$LOCKGATE_ROOT/hack/build-tools"

# A zombie counts as gone: our processes are reparented to PID 1, which may reap them late.
pid_running() { # pid
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z ]]
}

# Process bookkeeping: <dir>/<name>.pid holds the PID, <dir>/<name>.log the output.
# A PID counts as ours only if the process still runs the binary we started (PIDs get reused).
proc_alive() { # dir name
  local pid exe
  pid="$(cat "$1/$2.pid" 2>/dev/null)" || return 1
  [[ -n "$pid" ]] && pid_running "$pid" || return 1
  exe="$(cat "$1/$2.exe" 2>/dev/null)" || return 1
  [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]]
}

proc_start() { # dir name binary args... ; detached, so it outlives the calling shell
  local dir="$1" name="$2" bin="$3"
  shift 3
  mkdir -p "$dir"
  echo "=== $(date -u +%FT%TZ) $bin $*" >>"$dir/$name.log"
  # 3>&- .. 9>&-: the callers' lock descriptors must not live on in the component, or the
  # lock would be held as long as the component runs: ours (8, 9) and a caller's such as
  # `flock FILE hack/cluster up`, whose lock is on descriptor 3.
  setsid "$bin" "$@" >>"$dir/$name.log" 2>&1 </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
  local pid=$! exe i
  exe="$(readlink -f "$bin")"
  echo "$pid" >"$dir/$name.pid"
  echo "$exe" >"$dir/$name.exe"
  # Until the background shell has exec'd the binary, /proc/PID/exe names bash (then setsid),
  # and proc_alive would call a component that is only starting dead (seen once in CI, on
  # Prometheus, whose log was still empty). Up to 10 s; a failed exec ends the process.
  for ((i = 0; i < 200; i++)); do
    [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" != "$exe" ]] || return 0
    pid_running "$pid" || return 0
    sleep 0.05
  done
}

proc_stop() { # dir name ; TERM, wait up to 10 s, then KILL, and wait until it is gone
  local dir="$1" name="$2" pid i
  if ! proc_alive "$dir" "$name"; then
    rm -f "$dir/$name.pid"
    return 0
  fi
  pid="$(cat "$dir/$name.pid")"
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    pid_running "$pid" || break
    sleep 0.05
  done
  if pid_running "$pid"; then
    log "$name did not stop in 10 s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    while pid_running "$pid"; do sleep 0.05; done
  fi
  # Only our own record: a concurrent `up` may already have written its successor's.
  [[ "$(cat "$dir/$name.pid" 2>/dev/null)" != "$pid" ]] || rm -f "$dir/$name.pid"
}

proc_whatis() { # dir name ; what its PID is now, when that is not the process we started
  local pid
  pid="$(cat "$1/$2.pid" 2>/dev/null)" || return 0
  if pid_running "$pid"; then
    echo " (pid $pid runs $(readlink "/proc/$pid/exe" 2>/dev/null), not $(cat "$1/$2.exe" 2>/dev/null))"
  else
    echo " (pid $pid is gone)"
  fi
}

proc_fail() { # dir name message ; the component's own words are the best diagnosis
  log "error: $3"
  log "last lines of $1/$2.log (this start only):"
  # Each start appends a "=== time command" line; earlier runs would only mislead.
  awk '/^=== /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$1/$2.log" | tail -n 40 >&2 || true
  exit 1
}

# Waits until `check` succeeds, failing early with the log if the process died.
proc_wait() { # dir name timeout_s check...
  local dir="$1" name="$2" timeout="$3" deadline
  shift 3
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    proc_alive "$dir" "$name" || proc_fail "$dir" "$name" "$name exited during startup$(proc_whatis "$dir" "$name")"
    ((SECONDS < deadline)) || proc_fail "$dir" "$name" "$name not ready after ${timeout}s"
    sleep 0.2
  done
}

# Serialises up and down of one environment (two test sessions, a developer's shell): a
# `down` racing an `up` would otherwise lose track of what the `up` started.
lock_env() { # name
  mkdir -p "$LOCKGATE_RUN"
  exec 8>"$LOCKGATE_RUN/$1-up.lock"
  flock -w 300 8 || die "another hack/$1 up/down has held $LOCKGATE_RUN/$1-up.lock for 5 minutes"
}

# Checks a port is free before starting something on it, so a stranger's server there is
# reported as such instead of as a mysterious startup failure.
port_free() { # port
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
