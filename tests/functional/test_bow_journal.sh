#!/usr/bin/env bash
# bow's resume journal (IMAGE.bowmeta) as a witness:
#  - block 0's magic damaged during a checkpoint: restore and inspect do not
#    say "nothing to do", they say what the journal shows, exit non-zero and
#    write nothing;
#  - a journal that lost its tail (cut at a record boundary, the last claim
#    gone) is refused when the server resumes, never trusted.
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
pass
