#!/usr/bin/env bash
# Bad arguments and bad environments: one clear line, non-zero exit, nothing harmed.
. "$(dirname "$0")/lib.sh"
need truncate

# expect_error PATTERN CMD...: CMD must exit non-zero with PATTERN on stderr.
expect_error() {
  local pattern=$1
  shift
  local out rc=0
  out=$("$@" 2>&1 >/dev/null) || rc=$?
  [[ $rc -ne 0 ]] || fail "'$*' succeeded; expected failure matching '$pattern'"
  echo "$out" | grep -qE -- "$pattern" || fail "'$*' said '$out'; expected '$pattern'"
  log "ok: $(echo "$out" | head -n 1)"
}
S=$WORK/s.sock
C=$WORK/c.ctl

truncate -s 8M "$WORK/img"
expect_error "unknown target 'nosuch' \(valid targets: .*linear" \
  "$BOWSTACK" serve "$WORK/img" --unix "$S" --control "$C" --target nosuch
expect_error "target 'linear' has no key 'colour' \(valid keys: offset, length\)" \
  "$BOWSTACK" serve "$WORK/img" --unix "$S" --control "$C" --target linear:colour=red
expect_error "expected key=value" "$BOWSTACK" serve "$WORK/img" --unix "$S" --control "$C" --target linear:offset
expect_error "'$WORK/missing' does not exist \(create it with --create SIZE" \
  "$BOWSTACK" serve "$WORK/missing" --unix "$S" --control "$C"
expect_error "too small" "$BOWSTACK" serve "$WORK/img" --unix "$S" --control "$C" --target linear:length=16M
expect_error "Is a directory|neither a regular file nor a block device" "$BOWSTACK" serve "$WORK" --unix "$S" --control "$C"
expect_error "exists with size" "$BOWSTACK" serve "$WORK/img" --create 4M --unix "$S" --control "$C"
expect_error "invalid --create size" "$BOWSTACK" serve "$WORK/new" --create 12Q --unix "$S" --control "$C"
[[ ! -e $WORK/new ]] || fail "a failed --create left a file behind"
expect_error "HOST:PORT" "$BOWSTACK" serve "$WORK/img" --listen nonsense --control "$C"
expect_error "port must be" "$BOWSTACK" serve "$WORK/img" --listen 127.0.0.1:99999 --control "$C"
[[ $(stat -c %s "$WORK/img") -eq $((8 << 20)) ]] || fail "image size changed"

# Port in use: hold a port with a listener, then ask bowstack for it.
port=$(/usr/bin/python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 0)); s.listen(1)
import subprocess, sys, os
print(s.getsockname()[1], flush=True)
os.system(sys.argv[1] + " serve " + sys.argv[2] + " --listen 127.0.0.1:%d --control %s 2>&1 | head -1" % (s.getsockname()[1], sys.argv[3]))
' "$BOWSTACK" "$WORK/img" "$C" | tail -n +2)
echo "$port" | grep -q "already in use" || fail "port in use not reported clearly: $port"
log "ok: $port"
[[ ! -e $C ]] || fail "control socket left behind after a failed start"

# (A stale control socket, one nobody listens on, is replaced: test_daemon.sh.)
# A control path that is a regular file.
touch "$C"
expect_error "exists and is not a socket" "$BOWSTACK" serve "$WORK/img" --unix "$S" --control "$C"
rm -f "$C"

# Client verbs with no server.
expect_error "cannot connect to control socket" "$BOWSTACK" status --control "$WORK/none.ctl"
expect_error "cannot connect to control socket" "$BOWSTACK" message hello --control "$WORK/none.ctl"

# A live server's control socket cannot be taken over, and its NBD socket neither.
start_server "$WORK/img"
truncate -s 8M "$WORK/img2"
expect_error "in use by a running server" "$BOWSTACK" serve "$WORK/img2" --unix "$WORK/other.sock" --control "$CTL"
# The image itself is held: a second server on it refuses, naming the holder.
expect_error "'$WORK/img' is in use by process $SERVER_PID \(bowstack\)" \
  "$BOWSTACK" serve "$WORK/img" --unix "$WORK/other.sock" --control "$WORK/other.ctl"
expect_error "no node understands .frobnicate." "$BOWSTACK" message frobnicate --control "$CTL"
expect_error "no node of target 'bow' in the table" "$BOWSTACK" message checkpoint --target bow --control "$CTL"
stop_server

# Usage errors from the parser itself.
expect_error "required|Expected|RequiredError|subcommand" "$BOWSTACK"
expect_error "Expected|extra|unknown|not expected|RequiredError|ExtrasError|following argument" \
  "$BOWSTACK" serve --nosuchflag
"$BOWSTACK" --help | grep -q "Examples" || fail "--help has no examples"
for verb in serve status message suspend resume targets; do
  "$BOWSTACK" "$verb" --help | grep -q "Example" || fail "$verb --help has no example"
done
pass
