#!/usr/bin/env bash
# mirror faults (issue 18):
#  A. A leg whose writes fail for real (its file on a 4 MiB tmpfs: ENOSPC
#     once the file outgrows it) goes faulty while the client sees no
#     error; the data reads back from the other leg; mdadm --examine on the
#     good leg says the array lost role 1 (Array State A.), events moved on.
#  B. `message fail 1` marks a leg faulty by hand, `fail 0` (the last
#     in-sync leg) is refused; writes go on; a restart finds leg 1 stale
#     (lower events) and recovers it (job recover); legs equal.
#  C. A mirror of two csum legs heals a corrupted block on read: a byte
#     flipped in leg 1's data file (server stopped) makes csum return EIO
#     there; every read succeeds with the right data, leg 1 counts
#     corrected_reads >= 1, and its raw file holds the right bytes again.
#  D. The same damage met by the resync after kill -9 (the block sits in a
#     region whose bit is set, on leg 0, the resync's source): the block is
#     corrected from leg 1, both legs stay in_sync, and the legs end equal.
#  E. And met by a recovery: a third csum leg is added while leg 0, its
#     source, has a corrupted block: corrected from leg 1, no leg fails,
#     the three legs end equal.
#  F. A leg file truncated while serving: the first read that meets the
#     cut fails that leg (its data past the cut is gone) instead of
#     rewriting into the hole, and every read still returns the data.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_mirror.sh"
need truncate nbdcopy /usr/bin/nbdsh mount umount
[[ $(id -u) -eq 0 ]] || { [[ ${CI:-} == true ]] && fail "must run as root"; log "SKIP: not root"; exit 77; }

SIZE=$((63 << 20))
A=$WORK/a.img
B=$WORK/b.img
head -c $SIZE /dev/urandom >"$WORK/src"

log "A: ENOSPC on leg 1 makes it faulty; the client sees no error"
SMALL=$WORK/small
mkdir -p "$SMALL"
mount -t tmpfs -o size=4M tmpfs "$SMALL" || fail "mount tmpfs"
add_cleanup "umount '$SMALL' 2>/dev/null"
C=$SMALL/c.img
truncate -s 64M "$A" "$C"
cat >"$WORK/enospc.json" <<EOF
{"target": "mirror", "params": {"region_size": "64K"},
 "devices": {"legs": [{"file": "$A"}, {"file": "$C"}]}}
EOF
start_server --table "$WORK/enospc.json"
nbdcopy "$WORK/src" "$(URI)" || fail "a client write failed while leg 1 ran out of space"
nbdcopy "$(URI)" "$WORK/back" || fail "a client read failed"
cmp "$WORK/src" "$WORK/back" || fail "read back differs"
[[ $(mirror_field 'm["legs"][1]["state"]') == faulty ]] || fail "leg 1 is not faulty: $(mirror_field m)"
[[ $(mirror_field 'm["legs"][0]["state"]') == in_sync ]] || fail "leg 0 is not in_sync"
(($(mirror_field 'm["legs"][1]["errors"]') >= 1)) || fail "leg 1 counted no error"
[[ $(mirror_field 'm["degraded"]') == True ]] || fail "not degraded"
[[ $(status_field .stats.errors) == 0 ]] || fail "the server answered a request with an error"
grep -q "$C" "$WORK/server.log" || fail "the failing leg is not named in the log"
stop_server
out=$(examine "$A")
grep -q "Array State : A\. " <<<"$out" || fail "leg 0 does not record leg 1 as gone: $out"
grep -q "Checksum : [0-9a-f]* - correct" <<<"$out" || fail "leg 0 checksum: $out"
ea=$(examine_field "$A" Events)
ec=$(examine_field "$C" Events)
((ea > ec)) || fail "leg 0's events $ea are not past the failed leg's $ec"
cmp -n $SIZE -i $((1 << 20)):0 "$A" "$WORK/src" || fail "leg 0 does not hold the data"
# Bits stay set while a leg is missing (what it needs when it comes back).
bits=$(mdadm_dirty_bits "$A")
[[ -z $bits || $bits -gt 0 ]] || fail "degraded array: mdadm -X shows no dirty bit on leg 0"
umount "$SMALL"
rm -f "$A"

log "B: message fail; a stale leg is recovered at the next start"
cat >"$WORK/t.json" <<EOF
{"target": "mirror", "params": {"region_size": "64K", "sync_min": "64M"},
 "devices": {"legs": [{"file": "$A", "create": "64M"}, {"file": "$B", "create": "64M"}]}}
EOF
start_server --table "$WORK/t.json"
nbdcopy "$WORK/src" "$(URI)" || fail "nbdcopy"
out=$(msg "fail 1") || fail "message 'fail 1' failed"
[[ $out == *"$B is faulty"* ]] || fail "fail 1 answered '$out'"
[[ $(mirror_field 'm["legs"][1]["state"]') == faulty ]] || fail "leg 1 not faulty after 'fail 1'"
out=$(msg "fail 0" 2>&1) && fail "failing the last in-sync leg was accepted: $out"
grep -q "last in-sync leg" <<<"$out" || fail "fail 0 refused with '$out'"
[[ $(mirror_field 'm["legs"][0]["state"]') == in_sync ]] || fail "leg 0 changed state"
out=$(msg "fail 7" 2>&1) && fail "failing leg 7 of 2 was accepted: $out"
# Written while leg 1 is out: only leg 0 has it.
/usr/bin/nbdsh -u "$(URI)" -c 'h.pwrite(b"\x5a" * (2 << 20), 16 << 20); h.flush()' || fail "write while degraded"
python3_patch() { /usr/bin/python3 -c "
import sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(16 << 20); f.write(b'\x5a' * (2 << 20))" "$1"; }
python3_patch "$WORK/src"
stop_server
grep -q "Array State : A\. " <<<"$(examine "$A")" || fail "leg 0 does not record leg 1 as failed"
legs_equal "$A" "$B" && fail "leg 1 got writes after it failed"
start_server --table "$WORK/t.json"
grep -q "stale\|recover" <<<"$(mirror_field 'm["legs"][1]["state"]') $(mirror_field 'm["sync_action"]')" ||
  grep -q "$B (stale)" "$WORK/server.log" || fail "leg 1 was not found stale: $(mirror_field m)"
wait_mirror '[l["state"] for l in m["legs"]] == ["in_sync", "in_sync"] and m["sync_action"] == "idle"' 60 \
  "leg 1 to be recovered"
[[ $(mirror_field '[j["state"] for j in m.get("jobs", []) if j["name"] == "recover"]') == *done* ]] ||
  fail "no finished job 'recover': $(mirror_field 'm.get("jobs")')"
nbdcopy "$(URI)" "$WORK/back" || fail "nbdcopy after recovery"
cmp "$WORK/src" "$WORK/back" || fail "data after recovery"
stop_server
legs_equal "$A" "$B" || fail "legs differ after recovery"
examine_ok "$A" 0 clean AA
examine_ok "$B" 1 clean AA
[[ $(examine_field "$A" Events) == "$(examine_field "$B" Events)" ]] || fail "events differ after recovery"

log "C: two csum legs: a corrupted block is healed on read"
rm -f "$WORK"/*.img "$WORK"/*.img.csum
cat >"$WORK/csum.json" <<EOF
{"target": "mirror", "params": {"region_size": "64K", "read_policy": "round-robin"},
 "devices": {"legs": [
   {"target": "csum", "devices": {"data": {"file": "$A", "create": "64M"}}},
   {"target": "csum", "devices": {"data": {"file": "$B", "create": "64M"}}}]}}
EOF
start_server --table "$WORK/csum.json"
# csum's export is its whole data file: the md data offset is the same.
[[ $(nbdinfo --size "$(URI)") == "$SIZE" ]] || fail "csum legs: export size $(nbdinfo --size "$(URI)")"
[[ $(mirror_field '[l["verified_reads"] for l in m["legs"]]') == "[true, true]" ]] ||
  fail "csum legs do not report verified reads: $(mirror_field m)"
nbdcopy "$WORK/src" "$(URI)" || fail "nbdcopy to csum legs"
stop_server
off=$(data_offset "$B")
at=$((off + (9 << 20) + 4096 * 3 + 77))  # array byte 9 MiB + 12365: block 2307
flip_byte "$B" $at
legs_equal "$A" "$B" && fail "the flip did not change leg 1"
start_server --table "$WORK/csum.json"
# Round-robin: of two reads of the block, one goes to leg 1.
/usr/bin/nbdsh -u "$(URI)" -c "
want = open('$WORK/src', 'rb').read()[(9 << 20):(9 << 20) + 65536]
for i in range(4):
    assert h.pread(65536, 9 << 20) == want, 'read %d of the healed range differs' % i
" || fail "reading the corrupted range"
(($(mirror_field 'm["legs"][1]["corrected_reads"]') >= 1)) || fail "leg 1 counted no corrected read: $(mirror_field m)"
[[ $(mirror_field 'm["legs"][0]["corrected_reads"]') == 0 ]] || fail "leg 0 counted a corrected read"
[[ $(mirror_field '[l["state"] for l in m["legs"]]') == '["in_sync", "in_sync"]' ]] ||
  fail "a healed read error changed a leg's state: $(mirror_field m)"
grep -q "rewrote .* after a read error" "$WORK/server.log" || fail "the correction was not logged"
nbdcopy "$(URI)" "$WORK/back" || fail "a read through the csum mirror failed"
cmp "$WORK/src" "$WORK/back" || fail "csum mirror read back differs"
[[ $(status_field .stats.errors) == 0 ]] || fail "the server answered a request with an error"
# Leg 1 alone: leg 0 failed by hand, every read comes from the healed leg.
msg "fail 0" >/dev/null || fail "fail 0 with two in-sync legs"
nbdcopy "$(URI)" "$WORK/back" || fail "reading leg 1 alone failed"
cmp "$WORK/src" "$WORK/back" || fail "leg 1 alone reads wrong data"
stop_server
cmp -n $SIZE -i "$off:0" "$B" "$WORK/src" || fail "leg 1's raw file was not rewritten"
"$BOWSTACK" csum verify "$B" >"$WORK/verify.out" 2>&1 || fail "csum verify of leg 1: $(cat "$WORK/verify.out")"

log "D: a corrupted block in a region the resync copies is corrected, not the leg failed"
start_server --table "$WORK/csum.json"
# Leg 0 was failed by hand in C: recovered first, then it is the primary.
wait_mirror '[l["state"] for l in m["legs"]] == ["in_sync", "in_sync"] and m["sync_action"] == "idle"' 60 \
  "leg 0 to be recovered"
# A write into the region of array byte 9 MiB leaves its bit set at the kill.
/usr/bin/nbdsh -u "$(URI)" -c "
h.pwrite(open('$WORK/src', 'rb').read()[(9 << 20):(9 << 20) + 4096], 9 << 20)
h.flush()" || fail "write before the kill"
kill -9 "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=
[[ $(examine_field "$A" State) == active ]] || fail "leg 0 is not active after kill -9"
flip_byte "$A" $((off + (9 << 20) + 4096 * 3 + 77))  # leg 0, the same 64 KiB region
start_server --table "$WORK/csum.json"
grep -q "the last stop was not clean; [0-9]* of" "$WORK/server.log" || fail "no resync after kill -9"
wait_mirror 'm["resync_pending_regions"] == 0 and m["sync_action"] == "idle"' 30 "the resync to end"
[[ $(mirror_field '[l["state"] for l in m["legs"]]') == '["in_sync", "in_sync"]' ]] ||
  fail "a read error in the resync failed a leg: $(mirror_field m)"
(($(mirror_field 'm["legs"][0]["corrected_reads"]') >= 1)) || fail "leg 0 counted no corrected read"
nbdcopy "$(URI)" "$WORK/back" || fail "read after the resync"
cmp "$WORK/src" "$WORK/back" || fail "data after the resync"
stop_server
legs_equal "$A" "$B" || fail "legs differ after the resync"
"$BOWSTACK" csum verify "$A" >"$WORK/verify.out" 2>&1 || fail "csum verify of leg 0: $(cat "$WORK/verify.out")"

log "E: a corrupted block on the recovery's source is corrected, not the leg failed"
C=$WORK/c.img
flip_byte "$A" $((off + (20 << 20) + 4096 * 5 + 9))
sed "s|\]}}\$|, {\"target\": \"csum\", \"devices\": {\"data\": {\"file\": \"$C\", \"create\": \"64M\"}}}]}}|" \
  "$WORK/csum.json" >"$WORK/csum3.json"
grep -q "$C" "$WORK/csum3.json" || fail "no third leg in $(cat "$WORK/csum3.json")"
start_server --table "$WORK/csum3.json"
wait_mirror 'm["legs"][2]["state"] != "stale" and m["sync_action"] == "idle"' 60 "the recovery to end"
[[ $(mirror_field '[l["state"] for l in m["legs"]]') == '["in_sync", "in_sync", "in_sync"]' ]] ||
  fail "a read error in the recovery failed a leg: $(mirror_field '[(l["state"], l["errors"]) for l in m["legs"]]')"
(($(mirror_field 'm["legs"][0]["corrected_reads"]') >= 1)) || fail "leg 0 counted no corrected read"
nbdcopy "$(URI)" "$WORK/back" || fail "read after the recovery"
cmp "$WORK/src" "$WORK/back" || fail "data after the recovery"
stop_server
legs_equal "$A" "$C" || fail "the recovered leg differs from leg 0"
legs_equal "$A" "$B" || fail "legs 0 and 1 differ"
"$BOWSTACK" csum verify "$A" >"$WORK/verify.out" 2>&1 || fail "csum verify of leg 0: $(cat "$WORK/verify.out")"

log "F: a leg truncated while serving goes faulty; reads stay right"
rm -f "$A" "$B"
truncate -s 64M "$A" "$B"
cat >"$WORK/trunc.json" <<EOF
{"target": "mirror", "params": {"region_size": "64K", "read_policy": "round-robin"},
 "devices": {"legs": [{"file": "$A"}, {"file": "$B"}]}}
EOF
start_server --table "$WORK/trunc.json"
nbdcopy "$WORK/src" "$(URI)" || fail "write"
truncate -s 2M "$B"
nbdcopy "$(URI)" "$WORK/back" || fail "a read failed after leg 1 was truncated"
cmp "$WORK/src" "$WORK/back" || fail "wrong data read after leg 1 was truncated"
[[ $(mirror_field 'm["legs"][1]["state"]') == faulty ]] || fail "the truncated leg is not faulty: $(mirror_field m)"
nbdcopy "$(URI)" "$WORK/back" || fail "a second read failed"
cmp "$WORK/src" "$WORK/back" || fail "wrong data on the second read"
stop_server
pass
