#!/usr/bin/env bash
# Socket activation and readiness (docs/daemon.md): systemd-socket-activate
# passes a listening TCP or Unix socket (LISTEN_FDS/LISTEN_PID); the server
# serves it instead of the default 127.0.0.1:10809, tells NOTIFY_SOCKET
# READY=1 once serving and STOPPING=1 on SIGTERM, and stops cleanly. The
# contrib/ unit files pass systemd-analyze verify, and their ExecStart line
# serves a table through the socket their ListenStream names.
. "$(dirname "$0")/lib.sh"
need systemd-socket-activate systemd-analyze nbdinfo nbdcopy truncate cmp timeout

truncate -s 16M "$WORK/img"
head -c 2M /dev/urandom >"$WORK/data"
CTL=$WORK/ctl

# A service manager's notification socket: every datagram, one per line.
/usr/bin/python3 - "$WORK/notify.sock" "$WORK/notify.log" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(1)
deadline = time.time() + 120
while time.time() < deadline:
    try:
        msg = s.recv(4096).decode()
    except socket.timeout:
        continue
    with open(sys.argv[2], "a") as f:
        f.write(msg.replace("\n", " ") + "\n")
    if "STOPPING=1" in msg:
        break
PY
notify_pid=$!
add_cleanup "kill $notify_pid 2>/dev/null"
for ((i = 0; i < 100; i++)); do [[ -S $WORK/notify.sock ]] && break; sleep 0.05; done

# activate LISTEN-ADDRESS: the server under systemd-socket-activate; waits
# until its control socket answers.
activate() {
  rm -f "$CTL"
  systemd-socket-activate -l "$1" -E NOTIFY_SOCKET="$WORK/notify.sock" -E ASAN_OPTIONS="$ASAN_OPTIONS" \
    "$BOWSTACK" serve "$WORK/img" --control "$CTL" >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  # The activator starts the server at the first connection, which the
  # server then accepts from the inherited socket: read its greeting.
  /usr/bin/python3 - "$1" <<'PY' || fail "no NBD greeting through the activator"
import socket, sys, time
addr = sys.argv[1]
deadline = time.time() + 20
while True:
    try:
        if addr.startswith("/"):
            s = socket.socket(socket.AF_UNIX)
            s.connect(addr)
        else:
            host, port = addr.rsplit(":", 1)
            s = socket.create_connection((host, int(port)))
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.05)
s.settimeout(20)
greeting = b""
while len(greeting) < 8:
    chunk = s.recv(18)
    if not chunk:
        break
    greeting += chunk
assert greeting.startswith(b"NBDMAGIC"), greeting
PY
  for ((i = 0; i < 200; i++)); do
    "$BOWSTACK" status --control "$CTL" >/dev/null 2>&1 && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || fail "server exited during start-up"
    sleep 0.05
  done
  fail "the activated server did not start"
}

port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
activate "127.0.0.1:$port"
uri="nbd://127.0.0.1:$port/"
nbdinfo "$uri" >/dev/null || fail "nbdinfo through the activated TCP socket failed"
[[ $(status_field .endpoints) == "['nbd://127.0.0.1:$port']" ]] ||
  fail "endpoints are not just the inherited socket: $(status_field .endpoints)"
nbdcopy "$WORK/data" "$uri" || fail "nbdcopy to the activated server failed"
nbdcopy "$uri" "$WORK/back" || fail "nbdcopy from the activated server failed"
cmp -s -n 2M "$WORK/data" "$WORK/back" || fail "data read back differs"
grep -q "^READY=1 STATUS=serving" "$WORK/notify.log" || fail "no READY=1 notification: $(cat "$WORK/notify.log" 2>/dev/null)"
grep -q "STOPPING=1" "$WORK/notify.log" && fail "STOPPING=1 before any signal"
stop_server
for ((i = 0; i < 100; i++)); do grep -q "STOPPING=1" "$WORK/notify.log" && break; sleep 0.05; done
grep -q "STOPPING=1" "$WORK/notify.log" || fail "no STOPPING=1 notification on SIGTERM"
wait "$notify_pid" || true

# A Unix socket made by the activator: served, and left for its owner.
activate "$WORK/act.sock"
nbdinfo "nbd+unix:///?socket=$WORK/act.sock" >/dev/null || fail "nbdinfo through the activated Unix socket failed"
[[ $(status_field .endpoints) == "['nbd+unix:///?socket=$WORK/act.sock']" ]] ||
  fail "unexpected endpoints: $(status_field .endpoints)"
stop_server
[[ -S $WORK/act.sock ]] || fail "the server removed a socket it did not create"

# The contrib/ unit files: systemd's own checker accepts them (with the
# binary where the test built it), and the service's ExecStart, with %i and
# the paths of the units mapped into $WORK, serves under activation on the
# socket unit's ListenStream.
mkdir -p "$WORK/units" "$WORK/etc" "$WORK/run"
sed "s|/usr/local/bin/bowstack|$BOWSTACK|" "$BOWSTACK_SRC/contrib/bowstack@.service" >"$WORK/units/bowstack@.service"
cp "$BOWSTACK_SRC/contrib/bowstack@.socket" "$WORK/units/"
(cd "$WORK/units" && systemd-analyze verify bowstack@disk.service bowstack@disk.socket) >"$WORK/verify.log" 2>&1 ||
  fail "systemd-analyze verify failed: $(cat "$WORK/verify.log")"
[[ -s $WORK/verify.log ]] && fail "systemd-analyze verify warned: $(cat "$WORK/verify.log")"
map() { sed -e "s|%i|disk|g" -e "s|/etc/bowstack|$WORK/etc|g" -e "s|/run/bowstack|$WORK/run|g"; }
exec_start=$(sed -n 's/^ExecStart=//p' "$WORK/units/bowstack@.service" | map)
listen=$(sed -n 's/^ListenStream=\(\/.*\)/\1/p' "$BOWSTACK_SRC/contrib/bowstack@.socket" | map)
[[ -n $exec_start && -n $listen ]] || fail "cannot read ExecStart or ListenStream from the unit files"
echo '{"file": "'"$WORK/img"'"}' >"$WORK/etc/disk.json"
read -r -a argv <<<"$exec_start"
systemd-socket-activate -l "$listen" -E ASAN_OPTIONS="$ASAN_OPTIONS" "${argv[@]}" >>"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for ((i = 0; i < 200; i++)); do
  [[ -S $listen ]] && nbdinfo "nbd+unix:///?socket=$listen" >/dev/null 2>&1 && break
  sleep 0.05
done
nbdcopy "nbd+unix:///?socket=$listen" "$WORK/back2" || fail "the unit's ExecStart did not serve the table"
cmp -s -n 2M "$WORK/data" "$WORK/back2" || fail "data served by the unit's command line differs"
CTL=$WORK/run/disk.ctl
"$BOWSTACK" status --control "$CTL" >/dev/null || fail "no control socket where the unit puts it ($CTL)"
stop_server
log "contrib unit files: verified, and their command line serves a table"

pass
