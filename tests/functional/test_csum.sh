#!/usr/bin/env bash
# csum over NBD with a real client: data written through it reads back
# after a restart; a byte flipped in the image makes exactly that block fail
# with EIO (counted in status) while its neighbours read fine; a kill -9
# under writes loses nothing flushed and leaves no block unreadable.
. "$(dirname "$0")/lib.sh"
need truncate /usr/bin/nbdsh

IMG=$WORK/disk.img
truncate -s 64M "$IMG"
start_server "$IMG" --target csum
[[ -s $IMG.csum ]] || fail "no checksum sidecar $IMG.csum"
/usr/bin/nbdsh -u "$(URI)" -c '
import os
for i in range(64):
    h.pwrite(bytes([i]) * 65536, i * 65536)
h.flush()
assert h.pread(4096, 0) == bytes([0]) * 4096
assert h.pread(65536, 63 * 65536) == bytes([63]) * 65536
assert h.pread(4096, 32 << 20) == bytes(4096)  # never written: zeroes, no error' || fail "write/read through csum"
json=$("$BOWSTACK" status --control "$CTL" --json)
echo "$json" | grep -q '"mismatches": *0' || fail "status: $json"
stop_server

out=$("$BOWSTACK" csum verify "$IMG") || fail "csum verify of a clean volume: $out"
echo "$out" | grep -q "16384 blocks of 4096 bytes verified, 0 mismatches" || fail "verify: $out"
rc=0
start_server "$IMG" --target csum
"$BOWSTACK" csum verify "$IMG" >"$WORK/v.out" 2>&1 || rc=$?
[[ $rc -eq 2 ]] && grep -q "in use\|PID\|locked\|busy" "$WORK/v.out" || fail "verify of a served image (rc $rc): $(cat "$WORK/v.out")"
stop_server

log "one flipped byte in block 300 (in the 64 KiB run written with byte 18)"
/usr/bin/python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(300*4096+123); b=f.read(1); f.seek(300*4096+123); f.write(bytes([b[0]^0x40]))' "$IMG"
start_server "$IMG" --target csum
out=$(/usr/bin/nbdsh -u "$(URI)" -c '
import errno
try:
    h.pread(4096, 300 * 4096)
    print("no error")
except nbd.Error as e:
    print("errno", e.args[1])
assert h.pread(4096, 299 * 4096) == bytes([18]) * 4096
assert h.pread(4096, 301 * 4096) == bytes([18]) * 4096') || fail "neighbours of the damaged block: $out"
[[ $out == "errno 5" ]] || fail "reading the damaged block gave: $out"
json=$("$BOWSTACK" status --control "$CTL" --json)
echo "$json" | grep -q '"mismatches": *1' || fail "status does not count the mismatch: $json"
grep -q "block 300 (bytes 1228800..1232895) does not match its checksum" "$WORK/server.log" ||
  fail "the server did not log the damaged block"
log "ok: EIO for block 300 only, counted and logged"
stop_server
rc=0
out=$("$BOWSTACK" csum verify "$IMG") || rc=$?
[[ $rc -eq 1 ]] || fail "csum verify exited $rc on a damaged volume: $out"
echo "$out" | grep -q "^mismatch: block 300 (byte offset 1228800)$" || fail "verify did not name the block: $out"
out=$("$BOWSTACK" csum verify --json "$IMG") || true
echo "$out" | grep -q '"block": 300' || fail "verify --json: $out"
log "ok: csum verify names block 300 and exits 1"

log "kill -9 under writes: flushed data reads back, nothing unreadable"
start_server "$IMG" --target csum
/usr/bin/nbdsh -u "$(URI)" -c '
h.pwrite(bytes([0xdd]) * 4096, 300 * 4096)  # rewriting the damaged block repairs it
h.pwrite(bytes([0xee]) * (1 << 20), 8 << 20)
h.flush()
import random
r = random.Random(5)
for i in range(400):
    h.aio_pwrite(bytes([r.randrange(256)]) * 4096, r.randrange(2048) * 4096)
    if i % 64 == 0:
        while h.aio_in_flight() > 32: h.poll(-1)
' || fail "writes before the kill"
kill -9 "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=
start_server "$IMG" --target csum
/usr/bin/nbdsh -u "$(URI)" -c '
assert h.pread(1 << 20, 8 << 20) == bytes([0xee]) * (1 << 20)
bad = []
for b in range(0, 16384, 256):
    try:
        h.pread(256 * 4096, b * 4096)
    except nbd.Error as e:
        bad.append(b)
assert bad == [], "unreadable after the crash: %r" % bad' || fail "after kill -9"
grep -q "last stop was not clean" "$WORK/server.log" || fail "the unclean stop went unnoticed"
stop_server
out=$("$BOWSTACK" csum verify "$IMG") || fail "csum verify after the crash and a clean stop: $out"
log "ok: $out"
pass
