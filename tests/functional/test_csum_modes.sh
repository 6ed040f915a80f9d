#!/usr/bin/env bash
# csum's three modes with a real client: for journal and rebuild, writes
# read back, kill -9 under random writes, restart (journal replay or
# region rebuild), every flushed write reads back and nothing reads as EIO,
# verify is clean after a clean stop; the recorded mode is kept without a
# mode param. Also: `csum format --journal-size` gives an existing volume a
# journal, and mode=journal over metadata without one is refused clearly.
. "$(dirname "$0")/lib.sh"
need truncate /usr/bin/nbdsh

crash_and_check() {  # MODE
  local mode=$1 img=$WORK/$1.img
  truncate -s 64M "$img"
  start_server "$img" --target "csum:mode=$mode"
  /usr/bin/nbdsh -u "$(URI)" -c '
import random
r = random.Random(7)
h.pwrite(bytes([0xa5]) * (4 << 20), 8 << 20)
h.flush()
for i in range(600):
    h.aio_pwrite(bytes([r.randrange(1, 256)]) * 4096, r.randrange(2048) * 4096)
    while h.aio_in_flight() > 32: h.poll(-1)
' || fail "$mode: writes before the kill"
  [[ $(status_field .layers.0.mode) == "$mode" ]] || fail "$mode: status mode $(status_field .layers.0.mode)"
  kill -9 "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  start_server "$img" --target csum
  [[ $(status_field .layers.0.mode) == "$mode" ]] || fail "$mode: the recorded mode was not kept"
  /usr/bin/nbdsh -u "$(URI)" -c '
assert h.pread(4 << 20, 8 << 20) == bytes([0xa5]) * (4 << 20), "flushed data lost"
bad = []
for b in range(0, 16384, 256):
    try:
        h.pread(256 * 4096, b * 4096)
    except nbd.Error:
        bad.append(b)
assert bad == [], "unreadable after the crash: %r" % bad' || fail "$mode: after kill -9"
  stop_server
  "$BOWSTACK" csum verify "$img" >"$WORK/v.out" || fail "$mode: verify after the restart: $(cat "$WORK/v.out")"
  log "ok: mode $mode survives kill -9"
}
crash_and_check journal
grep -q "replayed [0-9]* journal records" "$WORK/server.log" || fail "journal: no replay logged"
crash_and_check rebuild
grep -q "recomputing the checksums of [0-9]* regions" "$WORK/server.log" || fail "rebuild: no recompute logged"

log "mode=journal needs a journal; csum format --journal-size makes one"
IMG=$WORK/dual.img
truncate -s 16M "$IMG"
start_server "$IMG" --target csum
/usr/bin/nbdsh -u "$(URI)" -c 'h.pwrite(b"\x42" * 65536, 0); h.flush()' || fail "dual writes"
stop_server
rc=0
"$BOWSTACK" serve "$IMG" --target csum:mode=journal --unix "$WORK/j.sock" --control "$WORK/j.ctl" \
  >"$WORK/refused.log" 2>&1 || rc=$?
[[ $rc -ne 0 ]] && grep -q "journal-size" "$WORK/refused.log" || fail "journal over a journal-less volume (rc $rc)"
"$BOWSTACK" csum format --force --journal-size 4M "$IMG" >/dev/null || fail "format --journal-size"
start_server "$IMG" --target csum
[[ $(status_field .layers.0.mode) == journal ]] || fail "the formatted journal mode was not recorded"
/usr/bin/nbdsh -u "$(URI)" -c 'assert h.pread(65536, 0) == b"\x42" * 65536' || fail "data after format"
stop_server
pass
