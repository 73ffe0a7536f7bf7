# Shared helpers for the pi-fleet scripts; source it, do not run it.
# shellcheck shell=bash
PI_FLEET_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PI_FLEET_ROOT
# podman reads the project's settings (runc, ulimits below the machine's hard limit), not the
# machine's own /etc/containers/containers.conf.
export CONTAINERS_CONF="$PI_FLEET_ROOT/testbed/containers.conf"
export PI_FLEET_IMAGE="localhost/pi-fleet/rpios-bookworm:latest"
export PI_FLEET_VENV="${PI_FLEET_VENV:-$PI_FLEET_ROOT/.venv}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# stage NAME COMMAND...: run one stage and print how long it took.
declare -a PI_FLEET_TIMINGS=()
stage() {
  local name=$1 start rc=0
  shift
  log "$name"
  start=$(date +%s)
  "$@" || rc=$?
  PI_FLEET_TIMINGS+=("$(printf '%-28s %5ss  %s' "$name" "$(($(date +%s) - start))" "$([ $rc = 0 ] && echo ok || echo FAILED)")")
  return $rc
}
print_timings() {
  [ ${#PI_FLEET_TIMINGS[@]} -gt 0 ] || return 0
  log "stage timings"
  printf '  %s\n' "${PI_FLEET_TIMINGS[@]}" >&2
}

activate_venv() {
  # shellcheck disable=SC1091
  source "$PI_FLEET_VENV/bin/activate"
}
