#!/usr/bin/env bash
# mirror re-add (md's bitmap-guided recovery of a leg that comes back):
#  A. Two file legs full of data; `message fail 1`, writes into 3 regions
#     through NBD, stop. The restart with both legs re-adds leg 1: status
#     says rebuild "bitmap" with 3 regions, mdadm --examine shows it being
#     rebuilt (Feature Map 0x83, a Recovery Offset), the job copies 3
#     regions only, and the legs end equal, both clean members of AA.
#  B. The same leg failed again and re-added by a reload that rebuilds the
#     mirror (sync_min changed): guided as well, legs equal.
#  C. kill -9 in the middle of a guided copy: the restart goes on guided,
#     reads are right meanwhile, the legs end equal.
#  D. A leg dropped by the table and added back is rebuilt in full, and the
#     log says why (events below events_cleared).
#  E. `message re-add 1` (md's hot re-add) while the server runs: the
#     faulty leg gets its 2 missed regions copied, no restart or reload.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_mirror.sh"
need nbdcopy /usr/bin/nbdsh

SIZE=$((63 << 20))
A=$WORK/a.img
B=$WORK/b.img
REGION=65536
head -c $SIZE /dev/urandom >"$WORK/src"
table() {  # SYNC LEG...
  local sync=$1 legs
  shift
  legs=$(for l in "$@"; do echo "{\"file\": \"$l\", \"create\": \"64M\"}"; done | paste -sd,)
  echo "{\"target\": \"mirror\", \"params\": {\"region_size\": \"64K\", \"sync_min\": \"$sync\", \"sync_max\": \"$sync\"},
 \"devices\": {\"legs\": [$legs]}}"
}
table 0 "$A" "$B" >"$WORK/t.json"
table 64K "$A" "$B" >"$WORK/slow.json"  # a region a second: watch a copy under way
table 8M "$A" "$B" >"$WORK/reload.json"
table 0 "$A" >"$WORK/one.json"

# write_regions SEED OFFSET...: 4 KiB of SEED at each offset, through NBD
# and into $WORK/src.
write_regions() {
  local seed=$1
  shift
  /usr/bin/nbdsh -u "$(URI)" -c "
for off in [$(IFS=,; echo "$*")]:
    h.pwrite(bytes([$seed]) * 4096, off)
h.flush()" || fail "writes while leg 1 is out"
  /usr/bin/python3 -c "
import sys
with open(sys.argv[1], 'r+b') as f:
    for off in [int(x) for x in sys.argv[2:]]:
        f.seek(off); f.write(bytes([$seed]) * 4096)" "$WORK/src" "$@"
}
same_data() {
  nbdcopy "$(URI)" "$WORK/back" || fail "reading the array"
  cmp "$WORK/src" "$WORK/back" || fail "the array does not read back what was written ($1)"
}
recover_total() { mirror_field '[j["total_bytes"] for j in m.get("jobs", []) if j["name"] == "recover"][-1]'; }
all_in_sync='[l["state"] for l in m["legs"]] == ["in_sync", "in_sync"] and m["sync_action"] == "idle"'

log "A: a failed leg comes back at a restart: only the 3 regions written meanwhile are copied"
start_server --table "$WORK/t.json"
nbdcopy "$WORK/src" "$(URI)" || fail "fill"
stop_server # clean, no leg missing: every bit cleared
start_server --table "$WORK/t.json"
msg "fail 1" >/dev/null || fail "fail 1"
write_regions 0x5a $((1 << 20)) $((9 << 20)) $((30 << 20))
stop_server
legs_equal "$A" "$B" && fail "leg 1 got the writes made while it was failed"
ev_b=$(examine_field "$B" Events)
start_server --table "$WORK/slow.json"
[[ $(mirror_field 'm["legs"][1].get("rebuild")') == bitmap ]] || fail "leg 1 is not re-added: $(mirror_field 'm["legs"][1]')"
[[ $(mirror_field 'm["legs"][1]["rebuild_regions"]') == 3 ]] ||
  fail "leg 1 lacks $(mirror_field 'm["legs"][1]["rebuild_regions"]') regions, not 3"
grep -q "$B (stale): .*re-added: recovered only where the bitmap has bits set (3 of" "$WORK/server.log" ||
  fail "the log does not say leg 1 is re-added"
out=$(examine "$B")
grep -q "Feature Map : 0x83" <<<"$out" || fail "mdadm does not see a guided rebuild on leg 1: $out"
grep -q "Recovery Offset : " <<<"$out" || fail "no Recovery Offset on leg 1: $out"
grep -q "Checksum : [0-9a-f]* - correct" <<<"$out" || fail "leg 1's checksum: $out"
grep -q "Device Role : Active device 1$" <<<"$out" || fail "leg 1 lost its role: $out"
(($(examine_field "$B" Events) > ev_b)) || fail "leg 1's superblock still has its old events"
same_data "while leg 1 is copied"
msg "sync_max=0" >/dev/null && msg "sync_min=0" >/dev/null || fail "sync limits"
wait_mirror "$all_in_sync" 60 "leg 1 to be re-added"
[[ $(recover_total) == $((3 * REGION)) ]] || fail "the recovery copied $(recover_total) bytes, not 3 regions"
same_data "after the re-add"
stop_server
legs_equal "$A" "$B" || fail "legs differ after the re-add"
examine_ok "$A" 0 clean AA
examine_ok "$B" 1 clean AA
[[ $(examine_field "$A" Events) == "$(examine_field "$B" Events)" ]] || fail "events differ after the re-add"
[[ $(examine_field "$B" "Feature Map") == 0x1 ]] || fail "leg 1 still says it is being rebuilt"

log "B: a failed leg comes back by a reload that rebuilds the mirror"
start_server --table "$WORK/t.json"
msg "fail 1" >/dev/null || fail "fail 1"
write_regions 0x6b $((2 << 20)) $((40 << 20))
out=$("$BOWSTACK" reload --control "$CTL" "$WORK/reload.json" 2>&1) || fail "reload: $out"
[[ $(mirror_field 'm["legs"][1].get("rebuild")') == bitmap ]] ||
  [[ $(mirror_field 'm["legs"][1]["state"]') == in_sync ]] || fail "leg 1 is not re-added: $(mirror_field 'm["legs"][1]')"
wait_mirror "$all_in_sync" 60 "leg 1 to be re-added by the reload"
[[ $(recover_total) == $((2 * REGION)) ]] || fail "the recovery copied $(recover_total) bytes, not 2 regions"
same_data "after the reload"
stop_server
legs_equal "$A" "$B" || fail "legs differ after the reload's re-add"
examine_ok "$B" 1 clean AA

log "C: kill -9 during a guided copy"
start_server --table "$WORK/t.json"
msg "fail 1" >/dev/null || fail "fail 1"
write_regions 0x7c $((3 << 20)) $((11 << 20)) $((22 << 20)) $((33 << 20)) $((44 << 20)) $((55 << 20))
stop_server
start_server --table "$WORK/slow.json"
wait_mirror 'm["legs"][1]["state"] == "recovering"' 30 "the guided copy to start"
kill -9 "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=
out=$(examine "$B")
grep -q "Feature Map : 0x83" <<<"$out" || fail "after kill -9, leg 1 is not marked as being rebuilt: $out"
start_server --table "$WORK/slow.json"
[[ $(mirror_field 'm["legs"][1].get("rebuild")') == bitmap ]] || fail "the guided copy did not go on as one: $(mirror_field 'm["legs"][1]')"
same_data "while the guided copy goes on after kill -9"
msg "sync_max=0" >/dev/null && msg "sync_min=0" >/dev/null || fail "sync limits"
wait_mirror "$all_in_sync" 60 "leg 1 to be re-added after kill -9"
same_data "after kill -9 and the re-add"
stop_server
legs_equal "$A" "$B" || fail "legs differ after kill -9 and the re-add"
examine_ok "$A" 0 clean AA
examine_ok "$B" 1 clean AA

log "D: a leg dropped by the table and added back is rebuilt in full"
start_server --table "$WORK/t.json"
out=$("$BOWSTACK" reload --control "$CTL" "$WORK/one.json" 2>&1) || fail "reload to one leg: $out"
write_regions 0x11 $((5 << 20))
out=$("$BOWSTACK" reload --control "$CTL" "$WORK/t.json" 2>&1) || fail "reload back to two legs: $out"
[[ $(mirror_field 'm["legs"][1].get("rebuild")') == full ]] ||
  [[ $(mirror_field 'm["legs"][1]["state"]') == in_sync ]] || fail "leg 1 not rebuilt in full: $(mirror_field 'm["legs"][1]')"
grep -q "rebuilt from sector 0: its events [0-9]* are below the bitmap's events_cleared" "$WORK/server.log" ||
  fail "the log does not say why leg 1 gets a full rebuild"
wait_mirror "$all_in_sync" 60 "leg 1 to be rebuilt"
same_data "after the full rebuild"
stop_server
legs_equal "$A" "$B" || fail "legs differ after the full rebuild"

log "E: a faulty leg re-added by message while the server runs"
start_server --table "$WORK/t.json"
out=$(msg "re-add 1" 2>&1) && fail "re-add of an in-sync leg accepted: $out"
grep -q "only a faulty leg can be re-added" <<<"$out" || fail "re-add of an in-sync leg: $out"
msg "fail 1" >/dev/null || fail "fail 1"
write_regions 0x22 $((7 << 20)) $((50 << 20))
out=$(msg "re-add 1") || fail "re-add 1: $out"
[[ $out == "$B re-added: bitmap recovery of 2 of "* ]] || fail "re-add 1 answered '$out'"
wait_mirror "$all_in_sync" 60 "leg 1 to be re-added by message"
[[ $(recover_total) == $((2 * REGION)) ]] || fail "the recovery copied $(recover_total) bytes, not 2 regions"
same_data "after the re-add by message"
stop_server
legs_equal "$A" "$B" || fail "legs differ after the re-add by message"
examine_ok "$B" 1 clean AA
pass
