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

# timing NAME SECONDS NOTE: one line of the stage table.
timing() { PI_FLEET_TIMINGS+=("$(printf '%-28s %5ss  %s' "$1" "$2" "$3")"); }
# stage NAME COMMAND...: run one stage and print how long it took.
declare -a PI_FLEET_TIMINGS=()
stage() {
  local name=$1 start rc=0
  shift
  log "$name"
  start=$(date +%s)
  "$@" || rc=$?
  timing "$name" "$(($(date +%s) - start))" "$([ $rc = 0 ] && echo ok || echo FAILED)"
  return $rc
}
# The machine's speed beside the stage table: the hosts this suite runs on differ (a CPU of one kind one day, another
# the next), and a stage's seconds compare across runs only with it. Native Python, best of three, on the idle machine.
machine_line() {
  local model seconds
  model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
  seconds=$(python3 -c 'import time
def once():
    start = time.perf_counter(); sum(i * i for i in range(10**7)); return time.perf_counter() - start
print("%.2f" % min(once() for _ in range(3)))')
  timing "machine: reference loop" "$seconds" "(sum(i*i for i in range(10**7)), best of 3; $(nproc) x ${model:-unknown CPU})"
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
