# Shared by hack/ scripts: where caches and run state live. Source it, don't run it.
# The cache lives outside the work tree so a fresh clone (CI) reuses built tools.
LOCKGATE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOCKGATE_CACHE="${LOCKGATE_CACHE:-$HOME/.cache/lockgate}"
LOCKGATE_RUN="${LOCKGATE_RUN:-/tmp/lockgate-run}"
export LOCKGATE_ROOT LOCKGATE_CACHE LOCKGATE_RUN

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
