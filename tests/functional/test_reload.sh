#!/usr/bin/env bash
# Live reload (docs/tables.md, "Live reload"):
#  A. Under an fio verify load over NBD (ioengine=nbd, crc32c, QD16, jobs in
#     a row), 20 reloads cycle plain -> era -> linear over era -> era -> plain,
#     with and without --noflush, plus failing reloads (unknown target, wrong
#     size, missing file, bad param, broken JSON) after which the table is
#     unchanged: fio reports no error and no verify failure. era's current era
#     survives the reloads that keep its node. The I/O hold times go to
#     $BOWSTACK_RELOAD_TIMES if set (bench/reload_bench.sh).
#  B. bow: checkpoint, commit, reload to plain, reload to bow, checkpoint
#     again, overwrite, change a param by reload (bow resumes its checkpoint
#     from the journal), overwrite, stop; restore rolls back to the second
#     checkpoint.
. "$(dirname "$0")/lib.sh"
need fio truncate cmp /usr/bin/nbdsh
py() { /usr/bin/python3 "$@"; }

IMG=$WORK/disk.img
truncate -s 64M "$IMG"
plain="{\"file\":\"$IMG\"}"
era="{\"target\":\"era\",\"devices\":{\"data\":$plain}}"
linear_era="{\"target\":\"linear\",\"devices\":{\"data\":$era}}"
echo "$plain" >"$WORK/plain.json"
echo "$era" >"$WORK/era.json"
echo "$linear_era" >"$WORK/linear-era.json"

reload() {  # FILE [--noflush]: must succeed; records the hold time
  local out
  out=$("$BOWSTACK" reload "$@" --json --control "$CTL") || fail "reload $* failed: $out"
  echo "$out" | py -c 'import json,sys; print(json.load(sys.stdin)["held_us"])' >>"$WORK/held-$([[ ${2:-} == --noflush ]] && echo noflush || echo flush)"
}
table_now() { "$BOWSTACK" table --json --control "$CTL"; }
bad_reload() {  # PATTERN FILE: must fail with PATTERN and leave the table as it was
  local before out
  before=$(table_now)
  out=$("$BOWSTACK" reload "$2" --control "$CTL" 2>&1) && fail "bad reload $2 succeeded"
  echo "$out" | grep -qE "$1" || fail "bad reload: got '$out', expected /$1/"
  [[ $(table_now) == "$before" ]] || fail "a failed reload changed the table"
}
current_era() { "$BOWSTACK" status --json --control "$CTL" | py -c '
import json,sys
def find(n):
    if n.get("target") == "era": return n["current_era"]
    for c in n.get("devices", {}).values():
        if isinstance(c, dict):
            r = find(c)
            if r is not None: return r
t = json.load(sys.stdin)["tree"]; print(find(t))'; }

log "A: reloads under an fio verify load"
printf '%s' '{"target": "era", "devices": ' >"$WORK/broken.json"
echo "{\"target\":\"quux\",\"devices\":{\"data\":$plain}}" >"$WORK/unknown.json"
echo "{\"target\":\"linear\",\"params\":{\"length\":\"1M\"},\"devices\":{\"data\":$plain}}" >"$WORK/size.json"
echo "{\"file\":\"$WORK/missing.img\"}" >"$WORK/missing.json"
echo "{\"target\":\"era\",\"params\":{\"block_size\":\"huge\"},\"devices\":{\"data\":$plain}}" >"$WORK/param.json"
start_server --table "$WORK/plain.json"
(
  for i in 1 2 3; do
    fio --name="verify$i" --ioengine=nbd --uri="$(URI)" --rw=randwrite --bs=4k --iodepth=16 --size=48M \
      --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 --randseed=$i --output="$WORK/fio$i.log" ||
      { echo "fio run $i failed" >"$WORK/fio.failed"; exit 1; }
  done
) &
fio_pid=$!
cycle=("$WORK/era.json" "$WORK/linear-era.json" "$WORK/era.json" "$WORK/plain.json")
for i in $(seq 0 19); do
  f=${cycle[$((i % 4))]}
  if ((i % 2)); then reload "$f" --noflush; else reload "$f"; fi
  if [[ $f == */era.json && $i -gt 0 && $((i % 4)) -eq 2 ]]; then
    # Coming back from linear over era: the era node was kept, and its era with it.
    [[ $(current_era) == "$era_before" ]] || fail "era's current era changed across a reload that kept it"
  fi
  if [[ $f == */era.json && $((i % 4)) -eq 0 ]]; then
    "$BOWSTACK" era checkpoint --control "$CTL" >/dev/null || fail "era checkpoint failed"
    era_before=$(current_era)
  fi
  case $((i % 5)) in
    0) bad_reload "unknown target 'quux'" "$WORK/unknown.json" ;;
    1) bad_reload "size is 1048576 bytes, the export's 67108864" "$WORK/size.json" ;;
    2) bad_reload "missing.img' does not exist" "$WORK/missing.json" ;;
    3) bad_reload '\$\.params\.block_size' "$WORK/param.json" ;;
    4) bad_reload '\$: not valid JSON' "$WORK/broken.json" ;;
  esac
  sleep 0.2
done
wait "$fio_pid" || true
[[ ! -e $WORK/fio.failed ]] || { cat "$WORK"/fio*.log >&2; fail "$(cat "$WORK/fio.failed")"; }
for i in 1 2 3; do
  grep -q "err= 0" "$WORK/fio$i.log" || { cat "$WORK/fio$i.log" >&2; fail "fio run $i reported an error"; }
  grep -qi "verify.*fail\|bad magic\|crc32c.*mismatch" "$WORK/fio$i.log" && fail "fio run $i: verify failure"
done
[[ $(status_field .stats.errors) == 0 ]] || fail "the server counted request errors"
stop_server
py - "$WORK/held-flush" "$WORK/held-noflush" <<'EOF'
import sys
for path in sys.argv[1:]:
    v = sorted(int(x) for x in open(path))
    p = lambda q: v[min(len(v) - 1, int(q * len(v)))]
    print(f"[test_reload] held I/O {path.rsplit('-', 1)[1]}: n={len(v)} p50={p(0.5)/1000:.1f} ms p99={p(0.99)/1000:.1f} ms max={v[-1]/1000:.1f} ms", file=sys.stderr)
EOF
if [[ -n ${BOWSTACK_RELOAD_TIMES:-} ]]; then cat "$WORK"/held-flush >>"$BOWSTACK_RELOAD_TIMES.flush"; cat "$WORK"/held-noflush >>"$BOWSTACK_RELOAD_TIMES.noflush"; fi

log "B: bow, a second checkpoint after a commit, without a restart"
rm -f "$IMG" "$IMG".*
truncate -s 64M "$IMG"
bow="{\"target\":\"bow\",\"devices\":{\"data\":$plain}}"
echo "$bow" >"$WORK/bow.json"
start_server --table "$WORK/plain.json"
fill() {  # BYTE: the first 8 MiB, then trim the second half (bow's free space) and flush
  /usr/bin/nbdsh -u "$(URI)" -c "
h.pwrite(bytes([$1]) * (8 << 20), 0)
h.trim(32 << 20, 32 << 20)
h.flush()"
}
fill 0xa1
reload "$WORK/bow.json"
fill 0xa1
"$BOWSTACK" checkpoint --control "$CTL" >/dev/null || fail "first checkpoint failed"
/usr/bin/nbdsh -u "$(URI)" -c 'h.pwrite(bytes([0xb2]) * (8 << 20), 0); h.flush()'
"$BOWSTACK" commit --control "$CTL" >/dev/null || fail "commit failed"
reload "$WORK/plain.json"
reload "$WORK/bow.json"
[[ $(status_field .tree.state) == TRIM ]] || fail "bow after reload is not in TRIM: $(status_field .tree.state)"
fill 0xb2
"$BOWSTACK" checkpoint --control "$CTL" >/dev/null || fail "second checkpoint failed"
/usr/bin/nbdsh -u "$(URI)" -c 'h.pwrite(bytes([0xc3]) * (4 << 20), 0)'
# Change a param mid-checkpoint: the old bow goes (flushed, its journal
# durable), the new one takes over the journal and resumes the checkpoint.
echo "{\"target\":\"bow\",\"params\":{\"gather_us\":0},\"devices\":{\"data\":$plain}}" >"$WORK/bow-nogather.json"
reload "$WORK/bow-nogather.json"
[[ $(status_field .tree.state) == CHECKPOINT ]] || fail "bow after a param change is not in CHECKPOINT"
[[ $(status_field .table.params.gather_us) == 0 ]] || fail "the new param is not in the table"
/usr/bin/nbdsh -u "$(URI)" -c 'h.pwrite(bytes([0xc3]) * (4 << 20), 4 << 20); h.flush()'
stop_server
out=$("$BOWSTACK" restore "$IMG" 2>&1) || fail "restore failed: $out"
head -c 8M "$IMG" | py -c 'import sys; d=sys.stdin.buffer.read(); sys.exit(0 if d == bytes([0xb2]) * len(d) else 1)' ||
  fail "restore did not roll back to the second checkpoint"
pass
