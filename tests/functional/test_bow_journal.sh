#!/usr/bin/env bash
# bow's resume journal (IMAGE.bowmeta) as a witness:
#  - block 0's magic damaged during a checkpoint: restore and inspect do not
#    say "nothing to do", they say what the journal shows, exit non-zero and
#    write nothing;
#  - a journal that lost its tail (cut at a record boundary, the last claim
#    gone) is refused when the server resumes, never trusted;
#  - restore removes the journal; one left behind by a finished restore (block
#    0 holds the data the checkpoint saved) is recognised and removed.
. "$(dirname "$0")/lib.sh"
need truncate cmp /usr/bin/nbdsh
py() { /usr/bin/python3 "$@"; }

IMG=$WORK/disk.img
checkpointed() {  # a checkpoint with saved data, left active by a clean stop
  rm -f "$IMG" "$IMG".*
  truncate -s 64M "$IMG"
  start_server "$IMG" --target bow
  /usr/bin/nbdsh -u "$(URI)" -c '
h.pwrite(bytes([0xa1]) * (8 << 20), 0)
h.trim(32 << 20, 32 << 20)
h.flush()'
  "$BOWSTACK" checkpoint --control "$CTL" >/dev/null || fail "checkpoint failed"
  # Overwrites (saved first) and a write into free space (claimed in the journal).
  /usr/bin/nbdsh -u "$(URI)" -c '
h.pwrite(bytes([0xb2]) * (1 << 20), 0)
h.pwrite(bytes([0xc3]) * (1 << 20), 40 << 20)
h.flush()'
  stop_server
  [[ -s $IMG.bowmeta ]] || fail "no resume journal after a checkpoint"
}

log "block 0 damaged, journal present"
checkpointed
py -c 'import sys; f=open(sys.argv[1],"r+b"); f.write(b"\0\0\0\0")' "$IMG"
cp "$IMG" "$WORK/before"
for verb in "restore" "restore --dry-run" "inspect"; do
  rc=0
  out=$("$BOWSTACK" $verb "$IMG" 2>&1) || rc=$?
  [[ $rc -ne 0 ]] || fail "$verb of a damaged checkpoint exited 0: $out"
  echo "$out" | grep -q "holds no bow log, but the resume journal '$IMG.bowmeta' records a checkpoint" ||
    fail "$verb: $out"
  echo "$out" | grep -q "nothing to do" && fail "$verb said nothing to do: $out"
done
cmp -s "$IMG" "$WORK/before" || fail "restore changed a damaged image"
log "ok: $out"

log "a journal that lost its tail"
checkpointed
cp "$IMG" "$WORK/before"
size=$(stat -c %s "$IMG.bowmeta")
truncate -s $((size - 64)) "$IMG.bowmeta"  # the last record, the claim of the write into free space
rc=0
"$BOWSTACK" serve "$IMG" --target bow --unix "$WORK/x.sock" --control "$WORK/x.ctl" >"$WORK/x.log" 2>&1 || rc=$?
[[ $rc -ne 0 ]] || fail "a server resumed from a journal that lost its tail"
grep -q "resume journal '$IMG.bowmeta' lost its tail: it holds [0-9]* valid records but its header says [0-9]* were made durable" "$WORK/x.log" ||
  fail "journal tail: $(cat "$WORK/x.log")"
cmp -s "$IMG" "$WORK/before" || fail "a refused resume changed the image"
log "ok: $(grep lost "$WORK/x.log")"
# Restore still rolls back to the checkpoint.
"$BOWSTACK" restore "$IMG" >/dev/null || fail "restore after a lost journal tail failed"
head -c 8M "$IMG" | py -c 'import sys; d=sys.stdin.buffer.read(); sys.exit(0 if d == bytes([0xa1]) * len(d) else 1)' ||
  fail "restore did not roll back to the checkpoint"

log "restore ends the checkpoint: its journal goes, and one left behind is recognised"
checkpointed
cp "$IMG.bowmeta" "$WORK/journal"
"$BOWSTACK" restore "$IMG" >/dev/null || fail "restore failed"
[[ ! -e $IMG.bowmeta ]] || fail "restore left the resume journal behind"
# As if a crash had come between the restore and the journal's removal:
# block 0 holds the data the checkpoint saved from it, so this is no damage.
cp "$WORK/journal" "$IMG.bowmeta"
out=$("$BOWSTACK" inspect "$IMG") || fail "inspect after a finished restore with its journal: $out"
out=$("$BOWSTACK" restore "$IMG") || fail "restore after a finished restore with its journal: $out"
echo "$out" | grep -q "nothing to do" || fail "second restore: $out"
[[ ! -e $IMG.bowmeta ]] || fail "restore kept a journal left behind by a finished restore"
pass
