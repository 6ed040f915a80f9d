#!/usr/bin/env bash
# The server as a daemon: SIGHUP never stops it; after kill -9 a restart on
# the same NBD and control socket paths replaces the stale sockets, while a
# live server's sockets are refused; idle control clients are dropped after
# --control-idle-timeout, so they cannot lock an operator out; an overlong
# control line gets an error; every clean exit removes both sockets.
. "$(dirname "$0")/lib.sh"
need truncate /usr/bin/nbdsh /usr/bin/python3

IMG=$WORK/disk.img
truncate -s 16M "$IMG"
start_server "$IMG" --control-idle-timeout 1
/usr/bin/nbdsh -u "$(URI)" -c 'h.pwrite(b"\x11" * 4096, 0); h.flush()' || fail "write"

log "SIGHUP: still serving"
kill -HUP "$SERVER_PID"
sleep 0.3
kill -0 "$SERVER_PID" 2>/dev/null || fail "SIGHUP stopped the server"
grep -q "SIGHUP: nothing to reload; still serving" "$WORK/server.log" || fail "SIGHUP not logged"
"$BOWSTACK" status --control "$CTL" >/dev/null || fail "status after SIGHUP"
/usr/bin/nbdsh -u "$(URI)" -c 'assert h.pread(4096, 0) == b"\x11" * 4096' || fail "read after SIGHUP"

log "a live server's sockets are refused"
rc=0
"$BOWSTACK" serve "$WORK/other.img" --create 1M --unix "$WORK/other.sock" --control "$CTL" >"$WORK/live.log" 2>&1 || rc=$?
[[ $rc -ne 0 ]] && grep -q "in use by a running server" "$WORK/live.log" || fail "second server on a live control socket (rc $rc)"
rc=0
"$BOWSTACK" serve "$WORK/other.img" --create 1M --unix "$SOCK" --control "$WORK/other.ctl" >"$WORK/live2.log" 2>&1 || rc=$?
[[ $rc -ne 0 ]] && grep -q "in use by a running server" "$WORK/live2.log" || fail "second server on a live NBD socket (rc $rc)"
[[ ! -e $WORK/other.ctl ]] || fail "a failed start left its control socket"

log "idle control clients are dropped; status still answers"
/usr/bin/python3 - "$CTL" "$BOWSTACK" <<'PY' || fail "idle clients locked the operator out"
import socket, subprocess, sys, time
ctl, bowstack = sys.argv[1], sys.argv[2]
idle = []
for _ in range(16):
    s = socket.socket(socket.AF_UNIX)
    s.connect(ctl)
    idle.append(s)
time.sleep(0.3)
r = subprocess.run([bowstack, "status", "--control", ctl], capture_output=True, text=True)
assert r.returncode != 0 and "too many control clients" in (r.stdout + r.stderr), r
time.sleep(1.5)  # past --control-idle-timeout 1
got = idle[0].recv(4096).decode()
assert "idle" in got, got
r = subprocess.run([bowstack, "status", "--control", ctl], capture_output=True, text=True)
assert r.returncode == 0, r
PY

log "an overlong control line gets an error"
/usr/bin/python3 - "$CTL" <<'PY' || fail "overlong line"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.sendall(b"x" * (2 << 20))
except OSError:
    pass
data = s.recv(4096).decode()
assert "too long" in data, data
PY

log "kill -9, then a restart on the same paths"
kill -9 "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=
[[ -S $CTL && -S $SOCK ]] || fail "kill -9 should leave both sockets behind"
SOCK_KEEP=$SOCK
"$BOWSTACK" serve "$IMG" --unix "$SOCK_KEEP" --control "$CTL" >>"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for ((i = 0; i < 100; i++)); do "$BOWSTACK" status --control "$CTL" >/dev/null 2>&1 && break; sleep 0.05; done
"$BOWSTACK" status --control "$CTL" >/dev/null || fail "restart over stale sockets"
grep -q "replaced the stale control socket" "$WORK/server.log" || fail "stale control socket not reported"
grep -q "replaced the stale NBD socket" "$WORK/server.log" || fail "stale NBD socket not reported"
/usr/bin/nbdsh -u "$(URI)" -c 'assert h.pread(4096, 0) == b"\x11" * 4096' || fail "data after kill -9"
stop_server
[[ ! -e $CTL && ! -e $SOCK ]] || fail "a clean stop left a socket behind"
pass
