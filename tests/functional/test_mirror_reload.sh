#!/usr/bin/env bash
# mirror live leg add and removal by reload (issue 18):
#  A. Under an fio verify load over NBD (ioengine=nbd, crc32c, QD16, runs in
#     a row), a reload adds a blank third leg to a 2-leg mirror full of
#     data: the new leg is recovering with a sync mark that moves up (job
#     recover, 8M/s under load, 16M/s at most), ends in_sync, and fio
#     reports no error and no verify failure. After the stop the three
#     legs are equal and mdadm reads the new one as active device 2 of
#     AAA.
#  B. A reload back to two legs drops the third: I/O goes on, the two
#     legs stay equal.
#  C. kill -9 during a recovery (sync_max 4M, so it takes ~15 s): the new
#     leg's superblock holds a recovery offset (mdadm: Recovery Offset),
#     the restart goes on from there rather than from 0, and the legs end
#     equal.
#  D. A reload that fails during a recovery (its fourth leg is too small)
#     leaves the old mirror serving and recovering on its own: the sync
#     mark keeps moving with no client I/O, and the recovery ends.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_mirror.sh"
need fio truncate nbdcopy

A=$WORK/a.img
B=$WORK/b.img
C=$WORK/c.img
SIZE=$((63 << 20))
leg() { echo "{\"file\": \"$1\", \"create\": \"64M\"}"; }
table() {  # LEG...
  local legs
  legs=$(IFS=,; echo "$*")
  echo "{\"target\": \"mirror\", \"params\": {\"region_size\": \"64K\", \"sync_min\": \"8M\", \"sync_max\": \"16M\"},
 \"devices\": {\"legs\": [$legs]}}"
}
table "$(leg "$A")" "$(leg "$B")" >"$WORK/two.json"
table "$(leg "$A")" "$(leg "$B")" "$(leg "$C")" >"$WORK/three.json"

log "A: a leg added under an fio verify load"
start_server --table "$WORK/two.json"
# Non-sparse data everywhere, so the recovery copies all 63 MiB.
head -c $SIZE /dev/urandom | nbdcopy - "$(URI)" || fail "fill"
rm -f "$WORK/fio.stop"
# fio runs in a row (each a second or so) until told to stop, so the whole
# recovery happens under client I/O.
(
  for i in $(seq 1 120); do
    [[ -e $WORK/fio.stop ]] && break
    fio --name="verify$i" --ioengine=nbd --uri="$(URI)" --rw=randwrite --bs=4k --iodepth=16 --size=32M \
      --offset=$((8 << 20)) --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 \
      --randseed="$i" --output="$WORK/fio$i.log" || { echo "fio run $i failed" >"$WORK/fio.failed"; exit 1; }
  done
) &
fio_pid=$!
add_cleanup "kill $fio_pid 2>/dev/null"
w0=$(status_field .stats.writes)
for i in $(seq 100); do
  (($(status_field .stats.writes) > w0 + 1000)) && break
  [[ -e $WORK/fio.failed ]] && break
  sleep 0.1
done
(($(status_field .stats.writes) > w0 + 1000)) || fail "fio did not start writing"
out=$("$BOWSTACK" reload --control "$CTL" "$WORK/three.json" 2>&1) || fail "reload adding a leg: $out"
[[ $(mirror_field 'len(m["legs"])') == 3 ]] || fail "the reloaded mirror does not have 3 legs"
state=$(mirror_field 'm["legs"][2]["state"]')
[[ $state == recovering || $state == stale ]] || fail "the new leg is $state, not being recovered"
[[ $(mirror_field 'm["sync_action"]') == recover ]] || fail "sync_action is not recover: $(mirror_field m)"
[[ $(mirror_field '[l["state"] for l in m["legs"][:2]]') == '["in_sync", "in_sync"]' ]] ||
  fail "the old legs are not in_sync after the reload"
# The sync mark moves up while fio runs, and never past the array.
marks=()
for i in $(seq 1 600); do
  st=$(mirror_field '"%s %d %d" % (m["legs"][2]["state"], m["legs"][2]["sync_mark"], len([j for j in m.get("jobs", []) if j["name"] == "recover"]))')
  read -r state mark njobs <<<"$st"
  ((mark <= SIZE)) || fail "sync mark $mark past the array's $SIZE"
  [[ $state == in_sync ]] && break
  [[ $state == recovering || $state == stale ]] || fail "the new leg went $state"
  marks+=("$mark")
  [[ -e $WORK/fio.failed ]] && break
  sleep 0.1
done
[[ ! -e $WORK/fio.failed ]] || { cat "$WORK"/fio*.log >&2; fail "$(cat "$WORK/fio.failed")"; }
wait_mirror 'm["legs"][2]["state"] == "in_sync" and m["sync_action"] == "idle"' 90 "the new leg to be in sync"
((njobs >= 1)) || fail "no job 'recover' seen"
((${#marks[@]} >= 2)) || fail "recovery under load was too quick to watch (${#marks[@]} samples)"
((${marks[-1]} > ${marks[0]})) || fail "the sync mark did not move: ${marks[0]} .. ${marks[-1]}"
log "recovery watched over ${#marks[@]} samples, mark ${marks[0]} .. ${marks[-1]}"
# Let the running fio finish its verify pass, then no more runs.
touch "$WORK/fio.stop"
wait "$fio_pid" || true
[[ ! -e $WORK/fio.failed ]] || { cat "$WORK"/fio*.log >&2; fail "$(cat "$WORK/fio.failed")"; }
runs=0
for f in "$WORK"/fio*.log; do
  grep -q "err= 0" "$f" || { cat "$f" >&2; fail "$f reported an error"; }
  grep -qi "verify.*fail\|bad magic\|crc32c.*mismatch" "$f" && fail "$f: verify failure"
  runs=$((runs + 1))
done
((runs >= 1)) || fail "no fio run finished"
[[ $(status_field .stats.errors) == 0 ]] || fail "the server counted request errors"
[[ $(mirror_field 'sum(l["errors"] for l in m["legs"])') == 0 ]] || fail "leg errors counted"
nbdcopy "$(URI)" "$WORK/back" || fail "nbdcopy after the recovery"
stop_server
legs_equal "$A" "$C" || fail "the new leg differs from leg 0"
legs_equal "$A" "$B" || fail "leg 1 differs from leg 0"
cmp -n $SIZE -i "$(data_offset "$C"):0" "$C" "$WORK/back" || fail "the new leg does not hold what the client reads"
examine_ok "$A" 0 clean AAA
examine_ok "$C" 2 clean AAA
[[ $(examine_field "$A" Events) == "$(examine_field "$C" Events)" ]] || fail "events differ"

log "B: a reload drops the third leg"
start_server --table "$WORK/three.json"
[[ $(mirror_field '[l["state"] for l in m["legs"]]') == '["in_sync", "in_sync", "in_sync"]' ]] ||
  fail "three legs are not in sync at start"
out=$("$BOWSTACK" reload --control "$CTL" "$WORK/two.json" 2>&1) || fail "reload dropping a leg: $out"
[[ $(mirror_field 'len(m["legs"])') == 2 ]] || fail "the mirror does not have 2 legs"
[[ $(mirror_field '[l["state"] for l in m["legs"]]') == '["in_sync", "in_sync"]' ]] ||
  fail "after dropping a leg: $(mirror_field m)"
head -c $((4 << 20)) /dev/urandom >"$WORK/4m"
nbdcopy "$WORK/4m" "$(URI)" || fail "write after dropping a leg"
stop_server
legs_equal "$A" "$B" || fail "the two legs differ"
cmp -n $((4 << 20)) -i "$(data_offset "$B"):0" "$B" "$WORK/4m" || fail "leg 1 lacks the last write"
out=$(examine "$A")
grep -q "Checksum : [0-9a-f]* - correct" <<<"$out" || fail "leg 0 checksum: $out"
grep -q "Device Role : Active device 0$" <<<"$out" || fail "leg 0 role: $out"
log "after dropping a leg, leg 0 says: $(examine_field "$A" "Array State") (raid devices $(examine_field "$A" "Raid Devices"))"

log "C: kill -9 during a recovery, the restart goes on from the sync mark"
rm -f "$C"
table "$(leg "$A")" "$(leg "$B")" "$(leg "$C")" | sed 's/"sync_min": "8M", "sync_max": "16M"/"sync_min": "4M", "sync_max": "4M"/' \
  >"$WORK/slow.json"
start_server --table "$WORK/two.json"
out=$("$BOWSTACK" reload --control "$CTL" "$WORK/slow.json" 2>&1) || fail "reload adding a leg: $out"
sleep 7  # the mark is written every 5 s
[[ $(mirror_field 'm["legs"][2]["state"]') == recovering ]] || fail "not recovering: $(mirror_field m)"
kill -9 "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=
rec=$(examine_field "$C" "Recovery Offset" | awk '{print $1}')
[[ $rec =~ ^[0-9]+$ ]] && ((rec > 0 && rec * 512 < SIZE)) || fail "no recovery offset on the new leg: $(examine "$C")"
log "killed with the new leg's recovery offset at $((rec * 512)) bytes"
start_server --table "$WORK/slow.json"
grep -q "was being rebuilt, $((rec * 512)) of $SIZE bytes copied" "$WORK/server.log" ||
  fail "the restart did not take up the recovery at $((rec * 512))"
mark=$(mirror_field 'm["legs"][2]["sync_mark"]')
((mark >= rec * 512)) || fail "the sync mark went back: $mark < $((rec * 512))"
msg sync_max=0 >/dev/null || fail "message sync_max=0"
wait_mirror 'm["legs"][2]["state"] == "in_sync" and m["sync_action"] == "idle"' 60 "the recovery to end"
stop_server
legs_equal "$A" "$C" || fail "the new leg differs from leg 0 after the resumed recovery"
examine_ok "$C" 2 clean AAA

log "D: a failed reload during a recovery: the old mirror goes on recovering"
rm -f "$C"
start_server --table "$WORK/two.json"
out=$("$BOWSTACK" reload --control "$CTL" "$WORK/slow.json" 2>&1) || fail "reload adding a leg: $out"
sleep 1
table "$(leg "$A")" "$(leg "$B")" "$(leg "$C")" "{\"file\": \"$WORK/d.img\", \"create\": \"1M\"}" |
  sed 's/"sync_min": "8M", "sync_max": "16M"/"sync_min": "4M", "sync_max": "4M"/' >"$WORK/bad.json"
if out=$("$BOWSTACK" reload --control "$CTL" "$WORK/bad.json" 2>&1); then
  fail "a reload with a 1 MiB leg succeeded: $out"
fi
log "refused as it should be: $out"
m1=$(mirror_field 'm["legs"][2]["sync_mark"]')
sleep 2
m2=$(mirror_field 'm["legs"][2]["sync_mark"]')
((m2 > m1)) || fail "no client I/O, and the recovery stopped after the failed reload: mark $m1 -> $m2: $(mirror_field m)"
msg sync_max=0 >/dev/null || fail "message sync_max=0"
wait_mirror 'm["legs"][2]["state"] == "in_sync" and m["sync_action"] == "idle"' 60 "the recovery to end"
stop_server
legs_equal "$A" "$C" || fail "the new leg differs from leg 0 after the failed reload"
pass
