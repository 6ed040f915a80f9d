#!/usr/bin/env bash
# mirror (docs/format/mirror.md, issue 18) with real clients and mdadm as the
# oracle:
#  A. Two blank legs written through the mirror (nbdcopy of random data)
#     read back, are equal in their data areas, and after a clean stop
#     mdadm --examine reads both as clean raid1 members (roles 0 and 1,
#     Array State AA, equal events, correct checksum); mdadm -X on a loop
#     device shows no dirty bit.
#  B. A byte flipped on leg 1 (server stopped) is found by `check`
#     (mismatch_cnt >= 1) and fixed by `repair`: legs equal again, a second
#     check finds 0, the client reads what it wrote.
#  C. kill -9 under writes: the legs say "active", the restart resyncs only
#     the regions whose bits are set (job resync: writes went to the first
#     quarter, so at most a quarter of the regions and the bits a sequential
#     stream sets ahead of itself), the legs end equal and
#     every block reads back as one of the versions written to it.
#  D. check under an fio random read/write load finds no mismatch (a copy
#     holds its region against writes) and fio sees no error.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_mirror.sh"
need truncate nbdcopy /usr/bin/nbdsh fio

A=$WORK/a.img
B=$WORK/b.img
SIZE=$((63 << 20))  # a 64 MiB leg: data from 1 MiB, 63 MiB exported
cat >"$WORK/t.json" <<EOF
{"target": "mirror", "params": {"region_size": "64K", "sync_min": "64M"},
 "devices": {"legs": [{"file": "$A", "create": "64M"}, {"file": "$B", "create": "64M"}]}}
EOF

log "A: written through the mirror, legs equal, mdadm reads them"
head -c $SIZE /dev/urandom >"$WORK/src"
start_server --table "$WORK/t.json"
[[ $(mirror_field '[l["state"] for l in m["legs"]] == ["in_sync", "in_sync"]') == True ]] ||
  fail "blank legs are not both in_sync: $(mirror_field m)"
[[ $(nbdinfo --size "$(URI)") == "$SIZE" ]] || fail "export size $(nbdinfo --size "$(URI)"), want $SIZE"
nbdcopy "$WORK/src" "$(URI)" || fail "nbdcopy to the mirror"
[[ $(mirror_field 'm["dirty_regions"] > 0 and m["state"] == "active"') == True ]] ||
  fail "after writes the array is not active with dirty regions: $(mirror_field m)"
nbdcopy "$(URI)" "$WORK/back" || fail "nbdcopy from the mirror"
cmp "$WORK/src" "$WORK/back" || fail "read back differs from what was written"
# Idle: marked clean by itself within a few seconds, bits cleared.
wait_mirror 'm["state"] == "clean"' 10 "the array to be marked clean"
[[ $(examine_field "$A" State) == clean ]] || fail "idle array: leg 0 does not say clean: $(examine "$A")"
wait_mirror 'm["dirty_regions"] == 0' 20 "the bits to be cleared"
[[ $(mirror_field 'sum(l["errors"] for l in m["legs"])') == 0 ]] || fail "leg errors counted"
stop_server
[[ $(data_offset "$A") == $((1 << 20)) ]] || fail "data offset $(data_offset "$A"), md's is 1 MiB"
legs_equal "$A" "$B" || fail "legs differ in their data areas"
cmp -n $SIZE -i $((1 << 20)):0 "$A" "$WORK/src" || fail "leg 0's data area is not what was written"
examine_ok "$A" 0 clean AA
examine_ok "$B" 1 clean AA
ea=$(examine_field "$A" Events)
eb=$(examine_field "$B" Events)
[[ -n $ea && $ea == "$eb" ]] || fail "events differ: $ea vs $eb"
[[ $(examine_field "$A" "Array UUID") == "$(examine_field "$B" "Array UUID")" ]] || fail "array uuids differ"
for leg in "$A" "$B"; do
  bits=$(mdadm_dirty_bits "$leg")
  if [[ -z $bits ]]; then
    log "losetup unavailable: mdadm -X skipped"
    break
  fi
  [[ $bits == 0 ]] || fail "mdadm -X $leg: $bits dirty bits after a clean stop"
done

log "B: a flipped byte is found by check and fixed by repair"
at=$(($(data_offset "$B") + (5 << 20) + 1234))
flip_byte "$B" $at
legs_equal "$A" "$B" && fail "the flip did not change leg 1"
scrub() {  # check|repair: runs it to the end; prints mismatch_cnt
  local out
  out=$(msg "$1") || fail "message $1 failed"
  [[ $out == "$1 started" ]] || fail "message $1 answered '$out'"
  wait_mirror "m['sync_action'] == 'idle' and (m['last_check'] or '').startswith('$1 done')" 60 "$1 to end"
  mirror_field 'm["mismatch_cnt"]'
}
start_server --table "$WORK/t.json"
n=$(scrub check)
((n >= 1)) || fail "check found no mismatch: $(mirror_field m)"
log "check: mismatch_cnt $n; $(mirror_field 'm["last_check"]')"
[[ $(mirror_field '[j["name"] for j in m.get("jobs", [])]') == *check* ]] ||
  fail "no job 'check' in the node's jobs: $(mirror_field 'm.get("jobs")')"
stop_server
legs_equal "$A" "$B" && fail "check changed a leg"
start_server --table "$WORK/t.json"
n=$(scrub repair)
((n >= 1)) || fail "repair found no mismatch"
n=$(scrub check)
[[ $n == 0 ]] || fail "a check after the repair found $n mismatched sectors"
nbdcopy "$(URI)" "$WORK/back" || fail "nbdcopy after repair"
cmp "$WORK/src" "$WORK/back" || fail "data after repair differs from what was written"
stop_server
legs_equal "$A" "$B" || fail "legs differ after repair"
examine_ok "$B" 1 clean AA

log "C: kill -9 under writes, resync, legs equal"
# Every 4 KiB block b holds version v: 8 bytes b, 8 bytes v, then byte
# (b * 7 + v) % 251 + 1. Version 0 everywhere first (flushed).
/usr/bin/nbdsh -u "$(URI)" -c '' 2>/dev/null && fail "the server should be stopped"
start_server --table "$WORK/t.json"
cat >"$WORK/blocks.py" <<'EOF'
import struct
BLOCKS = (63 << 20) // 4096
def block(b, v):
    return struct.pack("<QQ", b, v) + bytes([(b * 7 + v) % 251 + 1]) * 4080
def version(data, b):
    if len(data) != 4096: return None
    bb, v = struct.unpack_from("<QQ", data)
    return v if bb == b and data == block(b, v) else None
EOF
/usr/bin/nbdsh -u "$(URI)" -c "
import sys; sys.path.insert(0, '$WORK'); from blocks import *
for c in range(0, BLOCKS, 256):
    h.pwrite(b''.join(block(b, 0) for b in range(c, c + 256)), c * 4096)
h.flush()" || fail "version 0"
wait_mirror 'm["state"] == "clean" and m["dirty_regions"] == 0' 20 "clean before the crash load"
# Writers: random blocks of the first quarter, ever higher versions, 32 in
# flight, until killed. Only their regions may need a resync.
/usr/bin/nbdsh -u "$(URI)" -c "
import random, sys; sys.path.insert(0, '$WORK'); from blocks import *
r = random.Random(11)
v = 0
while True:
    v += 1
    b = r.randrange(BLOCKS // 4)
    h.aio_pwrite(block(b, v), b * 4096)
    while h.aio_in_flight() > 32: h.poll(-1)
" >/dev/null 2>&1 &
writer=$!
add_cleanup "kill $writer 2>/dev/null"
sleep 3
[[ $(mirror_field 'm["state"]') == active ]] || fail "not active under writes"
kill -9 "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=
wait "$writer" 2>/dev/null || true
[[ $(examine_field "$A" State) == active ]] || fail "after kill -9 leg 0 is not 'active': $(examine "$A")"
[[ $(examine_field "$B" State) == active ]] || fail "after kill -9 leg 1 is not 'active'"
start_server --table "$WORK/t.json"
line=$(grep "the last stop was not clean" "$WORK/server.log" | tail -n 1) || fail "no unclean-stop resync logged"
read -r pending total < <(sed -n 's/.*clean; \([0-9]*\) of \([0-9]*\) regions.*/\1 \2/p' <<<"$line")
log "resync after kill -9: $pending of $total regions"
# A quarter, plus the 8 MiB of bits a sequential stream sets ahead of itself.
ahead=$(((8 << 20) / (64 << 10)))
((pending > 0 && pending <= total / 4 + ahead)) ||
  fail "resync of $pending of $total regions; writes went to a quarter (and $ahead regions ahead)"
wait_mirror 'm["resync_pending_regions"] == 0 and m["sync_action"] == "idle"' 60 "the resync to end"
[[ $(mirror_field '[j["state"] for j in m.get("jobs", []) if j["name"] == "resync"]') == *done* ]] ||
  fail "no finished job 'resync': $(mirror_field 'm.get("jobs")')"
/usr/bin/nbdsh -u "$(URI)" -c "
import sys; sys.path.insert(0, '$WORK'); from blocks import *
bad = []
for c in range(0, BLOCKS, 256):
    d = h.pread(256 * 4096, c * 4096)
    for i in range(256):
        if version(d[i * 4096:(i + 1) * 4096], c + i) is None: bad.append(c + i)
assert not bad, 'blocks that hold no written version: %r' % bad[:10]" || fail "read back after the resync"
stop_server
legs_equal "$A" "$B" || fail "legs differ after the resync"
examine_ok "$A" 0 clean AA
examine_ok "$B" 1 clean AA

log "D: check under writes finds no mismatch"
start_server --table "$WORK/t.json"
fio --name=rw --ioengine=nbd --uri="$(URI)" --rw=randrw --bs=4k --iodepth=16 --size=60M --runtime=30 \
  --time_based --numjobs=2 --group_reporting --output="$WORK/fio.log" &
fio_pid=$!
add_cleanup "kill $fio_pid 2>/dev/null"
sleep 1
for i in 1 2; do
  n=$(scrub check)
  [[ $n == 0 ]] || fail "check $i under writes found $n mismatched sectors"
  kill -0 $fio_pid 2>/dev/null || fail "fio ended before check $i did"
done
kill -INT $fio_pid
wait $fio_pid || true
grep -q "err= 0" "$WORK/fio.log" || { cat "$WORK/fio.log" >&2; fail "fio reported an error"; }
stop_server
legs_equal "$A" "$B" || fail "legs differ after the load"
pass
