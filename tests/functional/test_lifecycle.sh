#!/usr/bin/env bash
# Control socket (status, message, suspend/resume, malformed JSON), the
# default image, and SIGTERM draining in-flight requests before exit 0.
. "$(dirname "$0")/lib.sh"
need truncate nbdinfo
/usr/bin/python3 -c "import nbd" 2>/dev/null || need python3-libnbd-module

# Default image: no IMAGE argument creates ./bowstack.img (1 GiB) in the cwd.
(
  cd "$WORK"
  "$BOWSTACK" serve --listen 127.0.0.1:0 --control "$WORK/d.ctl" >"$WORK/default.log" 2>&1 &
  pid=$!
  for i in $(seq 100); do "$BOWSTACK" status --control "$WORK/d.ctl" >/dev/null 2>&1 && break; sleep 0.05; done
  "$BOWSTACK" status --control "$WORK/d.ctl" | grep -q "1.0 GiB" || { kill $pid; exit 1; }
  kill -TERM $pid
  wait $pid
) || fail "default image not served"
[[ $(stat -c %s "$WORK/bowstack.img") -eq $((1 << 30)) ]] || fail "default image has the wrong size"
[[ ! -e $WORK/d.ctl ]] || fail "control socket not removed on exit"
grep -q "created image" "$WORK/default.log" || fail "creation not reported"

truncate -s 32M "$WORK/img"
start_server "$WORK/img" --target linear:offset=1M
[[ $(stat -c %a "$CTL") == 600 ]] || fail "control socket mode is $(stat -c %a "$CTL"), want 600"
"$BOWSTACK" status --control "$CTL" | grep -q "linear" || fail "status text lacks the stack"
[[ $(status_field .layers.0.kind) == linear ]] || fail "top layer is not linear"
[[ $(status_field .layers.1.kind) == file ]] || fail "bottom layer is not file"
[[ $(status_field .size) -eq $((31 << 20)) ]] || fail "linear size wrong"

# Malformed control requests get error objects; the socket stays up.
/usr/bin/python3 - "$CTL" <<'PY' || fail "malformed control JSON"
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
f = s.makefile("rwb")
def ask(line):
    f.write(line + b"\n"); f.flush()
    return json.loads(f.readline())
for bad in [b"{", b"[1,2]", b"\"status\"", b"{\"cmd\": 7}", b"{\"nocmd\": 1}", b"\xff\xfe",
            b"{\"cmd\":\"message\"}", b"{\"cmd\":\"message\",\"text\":\"\"}", b"{\"cmd\":\"bogus\"}"]:
    r = ask(bad)
    assert r["ok"] is False and r["error"], (bad, r)
r = ask(b'{"cmd":"status"}')
assert r["ok"] is True and r["size"] == 31 << 20, r
print("control: malformed requests answered with errors")
PY

# Suspend: new I/O waits; resume lets it go.
"$BOWSTACK" suspend --control "$CTL" || fail "suspend failed"
[[ $(status_field .suspended) == True ]] || fail "status does not show suspended"
/usr/bin/python3 - "$(URI)" "$CTL" "$BOWSTACK" <<'PY' || fail "suspend/resume"
import nbd, subprocess, sys, time
uri, ctl, exe = sys.argv[1:4]
h = nbd.NBD(); h.connect_uri(uri)
c = h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(b"\x33" * 4096)), 0)
deadline = time.time() + 0.5
while time.time() < deadline:
    h.poll(50)
assert not h.aio_command_completed(c), "write completed while suspended"
subprocess.check_call([exe, "resume", "--control", ctl])
while not h.aio_command_completed(c):
    h.poll(-1)
assert h.pread(4096, 0) == b"\x33" * 4096
h.shutdown()
print("suspend held the write; resume released it")
PY

# SIGTERM with requests in flight: they complete, data is flushed, exit 0.
/usr/bin/python3 - "$(URI)" "$SERVER_PID" "$WORK/acked" <<'PY' || fail "drain on SIGTERM"
import nbd, os, signal, sys, time
uri, pid = sys.argv[1], int(sys.argv[2])
h = nbd.NBD(); h.connect_uri(uri)
cmds = [h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray([i]) * (256 << 10)), i * (256 << 10)) for i in range(32)]
index = {c: i for i, c in enumerate(cmds)}
pending, acked = set(cmds), []
def reap():
    for c in list(pending):
        try:
            if h.aio_command_completed(c):
                pending.discard(c)
                acked.append(index[c])
        except nbd.Error:  # failed or cut off by the shutdown: not acknowledged
            pending.discard(c)
# Let the first few complete so the rest are really on the wire, then stop the server.
while len(acked) < 4:
    h.poll(1000)
    reap()
os.kill(pid, signal.SIGTERM)
deadline = time.time() + 30
while pending and time.time() < deadline:
    try:
        if h.aio_in_flight() == 0:
            break
        h.poll(1000)
    except nbd.Error:
        break
    reap()
reap()
print(f"{len(acked)} of {len(cmds)} writes acknowledged before shutdown")
open(sys.argv[3], "w").write(" ".join(map(str, acked)))
PY
timeout 30 tail --pid="$SERVER_PID" -f /dev/null || fail "server did not exit after SIGTERM"
rc=0; wait "$SERVER_PID" || rc=$?
SERVER_PID=
[[ $rc -eq 0 ]] || fail "exit status $rc after SIGTERM"
[[ ! -e $CTL ]] || fail "control socket left after SIGTERM"
[[ ! -e $SOCK ]] || fail "NBD socket left after SIGTERM"
/usr/bin/python3 - "$WORK/img" $(cat "$WORK/acked") <<'PY' || fail "an acknowledged write is missing"
import sys
img = open(sys.argv[1], "rb")
for i in map(int, sys.argv[2:]):
    img.seek((1 << 20) + i * (256 << 10))
    assert img.read(256 << 10) == bytes([i]) * (256 << 10), f"write {i} acknowledged but not in the image"
print("every acknowledged write is in the image")
PY
pass
