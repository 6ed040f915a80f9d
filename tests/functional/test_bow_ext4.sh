#!/usr/bin/env bash
# bow under a real ext4: fstrim in TRIM, checkpoint, file churn, then
#  1. kill -9 mid-churn, offline restore -> e2fsck clean, files as at checkpoint;
#  2. commit -> files as after the churn;
#  3. resume: kill -9, serve again, more churn, restore -> checkpoint contents.
. "$(dirname "$0")/lib.sh"
need nbdfuse losetup mount umount mkfs.ext4 e2fsck fstrim truncate
. "$(dirname "$0")/lib_ext4.sh"

populate() {  # the "before" data set
  mkdir -p "$MNT/keep" "$MNT/mod"
  for i in $(seq 1 30); do head -c $((i * 23 * 1024 + i)) /dev/urandom >"$MNT/keep/f$i"; done
  for i in $(seq 1 10); do head -c $((i * 50 * 1024)) /dev/urandom >"$MNT/mod/g$i"; done
  head -c 6M /dev/urandom >"$MNT/mod/big"
  head -c 8M /dev/urandom >"$MNT/scratch"
  sync
  rm "$MNT/scratch"  # leaves free space for fstrim to find
  sync
}
churn() {  # create, overwrite, append, delete
  local tag=$1
  for i in $(seq 1 10); do head -c $((i * 31 * 1024)) /dev/urandom >"$MNT/new-$tag-$i"; done
  for i in $(seq 1 5); do dd if=/dev/urandom of="$MNT/mod/g$i" bs=4k count=3 conv=notrunc status=none; done
  for i in $(seq 6 8); do head -c 77777 /dev/urandom >>"$MNT/mod/g$i"; done
  rm -f "$MNT/mod/g9" "$MNT/keep/f7"
  dd if=/dev/urandom of="$MNT/mod/big" bs=64k count=20 seek=10 conv=notrunc status=none
}
snapshot() { (cd "$MNT" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$1"; }
check_offline() {  # IMAGE EXPECTED_SUMS
  e2fsck -fn "$1" >"$WORK/fsck.log" 2>&1 || { cat "$WORK/fsck.log" >&2; fail "e2fsck found errors"; }
  local l
  l=$(losetup --find --show --read-only "$1")
  mount -o ro,noload "$l" "$MNT" || { losetup -d "$l"; fail "cannot mount the image"; }
  snapshot "$WORK/got"
  umount "$MNT"
  losetup -d "$l"
  diff "$2" "$WORK/got" >&2 || fail "files differ from what was expected"
}
bow_field() { status_field ".layers.0.$1"; }

prepare() {
  rm -f "$IMG" "$IMG.bowmeta"
  truncate -s 256M "$IMG"
  mkfs.ext4 -q -F -b 4096 -E nodiscard "$IMG"
  start_server "$IMG" --target bow
  [[ $(bow_field state) == TRIM ]] || fail "bow does not start in TRIM"
  attach
  populate
  fstrim "$MNT" || fail "fstrim failed"
  [[ $(bow_field free_bytes) -gt $((64 << 20)) ]] || fail "fstrim did not give bow free space ($(bow_field free_bytes))"
  snapshot "$WORK/before"
  "$BOWSTACK" checkpoint --control "$CTL" || fail "checkpoint failed"
  [[ $(bow_field state) == CHECKPOINT ]] || fail "not in CHECKPOINT"
}

# 1. Crash mid-churn, then restore offline.
log "scenario 1: kill -9 mid-churn, restore"
prepare
churn a
sync
( for i in $(seq 1 200); do head -c 100000 /dev/urandom >"$MNT/late-$i" 2>/dev/null || break; done ) &
CHURN=$!
sleep 0.5
kill9_server
wait "$CHURN" 2>/dev/null || true
detach
[[ -f $IMG.bowmeta ]] || fail "no resume journal beside the image"
"$BOWSTACK" restore --dry-run "$IMG" || fail "restore --dry-run failed"
"$BOWSTACK" restore "$IMG" || fail "restore failed"
check_offline "$IMG" "$WORK/before"
"$BOWSTACK" restore "$IMG" | grep -qi "no checkpoint" || fail "second restore did not report 'no checkpoint'"

# 2. Commit keeps the changes.
log "scenario 2: commit"
prepare
churn b
sync
snapshot "$WORK/after"
"$BOWSTACK" commit --control "$CTL" || fail "commit failed"
[[ $(bow_field state) == COMMITTED ]] || fail "not COMMITTED"
"$BOWSTACK" commit --control "$CTL" 2>/dev/null && fail "a second commit succeeded"
detach
stop_server
[[ ! -e $IMG.bowmeta ]] || fail "resume journal left after commit"
check_offline "$IMG" "$WORK/after"

# 3. Resume after a crash, more churn, restore.
log "scenario 3: resume"
prepare
churn c
sync
kill9_server
detach
start_server "$IMG" --target bow
[[ $(bow_field state) == CHECKPOINT ]] || fail "serve again did not resume the checkpoint"
attach
churn d
sync
detach
kill9_server
"$BOWSTACK" restore "$IMG" || fail "restore after resume failed"
check_offline "$IMG" "$WORK/before"
pass
