# Shared helpers for functional tests. Source it first thing:
#   . "$(dirname "$0")/lib.sh"
# Provides: $WORK (per-test temp dir, removed on exit), start_server, stop_server,
# need TOOL..., fail MSG, pass. Under CI (CI=true) a missing tool fails the test
# instead of skipping it.
set -euo pipefail

: "${BOWSTACK:?set BOWSTACK to the bowstack binary}"
TEST_NAME=$(basename "$0" .sh)
WORK=$(mktemp -d "/tmp/bowstack-${TEST_NAME}.XXXXXX")
SERVER_PID=
CLEANUP_HOOKS=()
# Debian's python3 has the libnbd bindings; a pyenv python3 first on PATH does not.
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
# The server is built with ASan: make its leak report an error.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}

log() { echo "[$TEST_NAME] $*" >&2; }
fail() {
  log "FAIL: $*"
  if [[ -f $WORK/server.log ]]; then
    log "--- server log (tail) ---"
    tail -n 40 "$WORK/server.log" >&2 || true
  fi
  exit 1
}

on_exit() {
  local rc=$?
  local i
  for ((i = ${#CLEANUP_HOOKS[@]} - 1; i >= 0; i--)); do eval "${CLEANUP_HOOKS[$i]}" || true; done
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -9 "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
  exit $rc
}
trap on_exit EXIT
add_cleanup() { CLEANUP_HOOKS+=("$1"); }

# need TOOL...: skip (exit 77) when a tool is missing, or fail under CI.
need() {
  local t
  for t in "$@"; do
    if ! command -v "$t" >/dev/null 2>&1; then
      if [[ ${CI:-} == true ]]; then fail "required tool '$t' is missing"; fi
      log "SKIP: '$t' is not installed"
      exit 77
    fi
  done
}

# start_server IMAGE [serve args...] or start_server --table FILE [serve
# args...]: serves on $WORK/nbd.sock with control socket $WORK/ctl; waits
# until the control socket answers.
SOCK=
CTL=
start_server() {
  local what=("$1")
  shift
  if [[ ${what[0]} == --table ]]; then
    what+=("$1")
    shift
  fi
  SOCK=$WORK/nbd.sock
  CTL=$WORK/ctl
  rm -f "$SOCK" "$CTL"
  "$BOWSTACK" serve "${what[@]}" --unix "$SOCK" --control "$CTL" "$@" >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  local i
  for ((i = 0; i < 200; i++)); do
    if "$BOWSTACK" status --control "$CTL" >/dev/null 2>&1; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || fail "server exited during start-up"
    sleep 0.05
  done
  fail "server did not become ready"
}
URI() { echo "nbd+unix:///?socket=$SOCK"; }

# stop_server: SIGTERM, expect a clean exit 0 within 30 s.
stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  kill -TERM "$SERVER_PID"
  local rc=0
  timeout 30 tail --pid="$SERVER_PID" -f /dev/null || fail "server did not exit after SIGTERM"
  wait "$SERVER_PID" || rc=$?
  SERVER_PID=
  [[ $rc -eq 0 ]] || fail "server exited with status $rc after SIGTERM"
}

# status_field PATH: a field of `bowstack status --json`, e.g. .stats.trims
status_field() {
  "$BOWSTACK" status --control "$CTL" --json | /usr/bin/python3 -c "
import json, sys
v = json.load(sys.stdin)
for k in '$1'.strip('.').split('.'):
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v)"
}

pass() { log "PASS"; }
