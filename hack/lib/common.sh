# Shared by hack/ scripts: where caches and run state live. Source it, don't run it.
# The cache lives outside the work tree so a fresh clone (CI) reuses built tools.
LOCKGATE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOCKGATE_CACHE="${LOCKGATE_CACHE:-$HOME/.cache/lockgate}"
LOCKGATE_RUN="${LOCKGATE_RUN:-/tmp/lockgate-run}"
export LOCKGATE_ROOT LOCKGATE_CACHE LOCKGATE_RUN

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Installs Debian packages (apt-get arguments). On a fresh machine several test workers and
# scripts install at once, and dpkg takes one at a time (the others failed at once on its
# lock): ours take turns, and wait for any other apt too.
apt_install() { # [apt-get install option]... package...
  (
    flock 9
    if [[ ! -f /tmp/.lockgate-apt-updated ]]; then
      apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 && touch /tmp/.lockgate-apt-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >&2
  ) 9>/tmp/lockgate-apt.lock
}

# Installs a Debian package when its command is missing (a fresh CI machine may lack it).
ensure_cmd() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2 (for $1)"
  apt_install "$2"
}
