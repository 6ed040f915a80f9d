#!/usr/bin/env bash
# csum serving layout=integrity (docs/format/csum.md section 11) with a real
# client: a volume made by `csum format --layout integrity` is served at its
# provided size, data written reads back, RECALCULATING is set while served
# and clear after a clean stop (integritysetup dump reads the superblock;
# `csum verify --layout integrity` passes); a byte flipped in a block's data
# makes exactly that block fail with EIO; a kill -9 under writes is
# recomputed at the next start and every block reads.
. "$(dirname "$0")/lib.sh"
need truncate dd /usr/bin/nbdsh

IMG=$WORK/int.img
truncate -s 64M "$IMG"
# 4 journal sections of 392 sectors: area 0's 32 tag sectors start at
# sector 1576, its data (logical sector 0) at 1608.
"$BOWSTACK" csum format --layout integrity --journal-sections 4 "$IMG" >"$WORK/f.out" ||
  fail "format: $(cat "$WORK/f.out")"

flags() {
  command -v integritysetup >/dev/null || return 0
  local dump
  dump=$(integritysetup dump "$IMG" 2>&1) || fail "integritysetup dump refused the volume: $dump"
  grep -E '^flags:? ' <<<"$dump"
}

rc=0
timeout 20 "$BOWSTACK" serve "$IMG" --target csum:layout=integrity,mode=dual --unix "$WORK/x.sock" \
  >"$WORK/dual.out" 2>&1 || rc=$?
[[ $rc -ne 0 ]] && grep -q "cannot use mode=dual: dm-integrity keeps one tag per block" "$WORK/dual.out" ||
  fail "mode=dual (rc $rc): $(cat "$WORK/dual.out")"
rc=0
timeout 20 "$BOWSTACK" serve "$IMG" --target csum:layout=integrity,mode=journal --unix "$WORK/x.sock" \
  >"$WORK/journal.out" 2>&1 || rc=$?
[[ $rc -ne 0 ]] && grep -q "mode=journal.*not implemented" "$WORK/journal.out" ||
  fail "mode=journal (rc $rc): $(cat "$WORK/journal.out")"
log "ok: mode=dual and mode=journal refused"

start_server "$IMG" --target csum:layout=integrity
[[ ! -e $IMG.csum ]] || fail "layout=integrity created a sidecar"
f=$(flags)
[[ -z $f || $f == *recalculating* ]] || fail "RECALCULATING not set while served: $f"
/usr/bin/nbdsh -u "$(URI)" -c '
size = h.get_size()
assert size < 64 << 20 and size % 4096 == 0, size
for i in range(48):   # 48 MiB: three areas of 16 MiB
    h.pwrite(bytes([i + 1]) * (1 << 20), i << 20)
h.flush()
assert h.pread(4096, 0) == bytes([1]) * 4096
assert h.pread(8192, (16 << 20) - 4096) == bytes([16]) * 4096 + bytes([17]) * 4096  # across a tag run
assert h.pread(4096, size - 4096) == bytes(4096)  # never written: zeroes, no error
h.zero(40960, 8192)   # blocks 2..11
h.trim(1 << 20, 4096)  # blocks 1..256
assert h.pread(4096, 8192) == bytes(4096)
assert h.pread(4096, (1 << 20) + 4096) == bytes([2]) * 4096  # the trim ended at block 256
h.flush()' || fail "write/read through csum layout=integrity"
json=$("$BOWSTACK" status --control "$CTL" --json)
for want in '"layout": *"integrity"' '"mode": *"rebuild"' '"mismatches": *0' '"recalculating": *true'; do
  grep -q "$want" <<<"$json" || fail "status lacks $want: $json"
done
stop_server

f=$(flags)
[[ -z $f || $f =~ ^flags:?\ *fix_padding\ *$ ]] || fail "after a clean stop integritysetup dump shows $f"
[[ -n $f ]] && log "ok: integritysetup dump: '$f' after a clean stop"
out=$("$BOWSTACK" csum verify --layout integrity "$IMG") || fail "verify after a clean stop: $out"
grep -q " 0 mismatches, 0 unverifiable" <<<"$out" || fail "verify: $out"
log "ok: $out"

log "one flipped byte in block 300 (written with byte 2)"
off=$(((1608 + 300 * 8) * 512 + 123))
printf '\x5a' | dd of="$IMG" bs=1 seek="$off" conv=notrunc status=none
rc=0
out=$("$BOWSTACK" csum verify --layout integrity "$IMG") || rc=$?
[[ $rc -eq 1 ]] && grep -q "^mismatch: block 300 " <<<"$out" || fail "verify of the flipped byte (rc $rc): $out"
cat >"$WORK/t.json" <<EOF
{"target": "csum", "params": {"layout": "integrity"},
 "devices": {"data": {"file": "$IMG"}, "metadata": null}}
EOF
start_server --table "$WORK/t.json"
out=$(/usr/bin/nbdsh -u "$(URI)" -c '
try:
    h.pread(4096, 300 * 4096)
    print("no error")
except nbd.Error as e:
    print("errno", e.args[1])
assert h.pread(4096, 299 * 4096) == bytes([2]) * 4096
assert h.pread(4096, 301 * 4096) == bytes([2]) * 4096') || fail "neighbours of the damaged block: $out"
[[ $out == "errno 5" ]] || fail "reading the damaged block gave: $out"
json=$("$BOWSTACK" status --control "$CTL" --json)
grep -q '"mismatches": *1' <<<"$json" || fail "status does not count the mismatch: $json"
grep -q "block 300 (bytes 1228800..1232895) does not match its dm-integrity tag" "$WORK/server.log" ||
  fail "the server did not log the damaged block"
log "ok: EIO for block 300 only, counted and logged"

log "kill -9 under writes: the restart recomputes every tag, every block reads"
/usr/bin/nbdsh -u "$(URI)" -c '
h.pwrite(bytes([0xdd]) * 4096, 300 * 4096)  # rewriting the damaged block repairs it
h.pwrite(bytes([0xee]) * (1 << 20), 8 << 20)
h.flush()
import random
r = random.Random(5)
for i in range(600):
    h.aio_pwrite(bytes([r.randrange(1, 256)]) * 8192, r.randrange(4096, 12000) * 4096)  # 16 MiB up
    if i % 64 == 0:
        while h.aio_in_flight() > 32: h.poll(-1)
' || fail "writes before the kill"
kill -9 "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=
f=$(flags)
[[ -z $f || $f == *recalculating* ]] || fail "RECALCULATING not left set by the kill: $f"
rc=0
out=$("$BOWSTACK" csum verify --layout integrity "$IMG") || rc=$?
[[ $rc -eq 1 ]] && grep -q "^unverifiable: blocks 0\.\." <<<"$out" || fail "offline verify after the kill (rc $rc): $out"
start_server "$IMG" --target csum:layout=integrity
grep -q "recomputing the tags of sectors 0\.\..*damage the crash did there cannot be detected" "$WORK/server.log" ||
  fail "the restart did not log the recomputation"
/usr/bin/nbdsh -u "$(URI)" -c '
assert h.pread(1 << 20, 8 << 20) == bytes([0xee]) * (1 << 20)  # flushed before the kill
assert h.pread(4096, 300 * 4096) == bytes([0xdd]) * 4096
size = h.get_size()
for off in range(0, size, 1 << 20):
    h.pread(min(1 << 20, size - off), off)   # raises on any EIO
' || fail "a block failed to read after the recomputation"
json=$("$BOWSTACK" status --control "$CTL" --json)
grep -q '"mismatches": *0' <<<"$json" || fail "mismatches after the restart: $json"
grep -qE '"recomputed_blocks": *[1-9]' <<<"$json" || fail "nothing recomputed: $json"
stop_server
out=$("$BOWSTACK" csum verify --layout integrity "$IMG") || fail "verify after the recomputation: $out"
f=$(flags)
[[ -z $f || $f =~ ^flags:?\ *fix_padding\ *$ ]] || fail "after the restart's clean stop: $f"
log "ok: recomputed after kill -9, every block reads, verify clean: $out"
pass
