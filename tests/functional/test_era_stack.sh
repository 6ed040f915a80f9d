#!/usr/bin/env bash
# era stacked with bow, both orders, under a real ext4 (nbdfuse + loop):
#  A. era over bow (image -> bow -> era): fstrim, bow checkpoint, era
#     checkpoint, full copy, file churn, bow commit; offline era export since
#     the checkpoint era, apply to the copy: e2fsck clean, same files.
#  B. bow over era (image -> era -> bow): era checkpoint, full copy, bow
#     checkpoint, churn, kill -9, offline bow restore; the era metadata
#     recovered everything bow wrote, so export/apply makes the copy equal the
#     restored image byte for byte, and the files are those at the checkpoint.
. "$(dirname "$0")/lib.sh"
need nbdfuse nbdcopy losetup mount umount mkfs.ext4 e2fsck fstrim truncate cmp
. "$(dirname "$0")/lib_ext4.sh"
populate() {
  mkdir -p "$MNT/keep" "$MNT/mod"
  for i in $(seq 1 20); do head -c $((i * 29 * 1024 + i)) /dev/urandom >"$MNT/keep/f$i"; done
  for i in $(seq 1 8); do head -c $((i * 40 * 1024)) /dev/urandom >"$MNT/mod/g$i"; done
  head -c 4M /dev/urandom >"$MNT/mod/big"
  head -c 6M /dev/urandom >"$MNT/scratch"
  sync
  rm "$MNT/scratch"
  sync
}
churn() {
  local tag=$1
  for i in $(seq 1 8); do head -c $((i * 31 * 1024)) /dev/urandom >"$MNT/new-$tag-$i"; done
  for i in $(seq 1 4); do dd if=/dev/urandom of="$MNT/mod/g$i" bs=4k count=3 conv=notrunc status=none; done
  for i in 5 6; do head -c 77777 /dev/urandom >>"$MNT/mod/g$i"; done
  rm -f "$MNT/mod/g7" "$MNT/keep/f3"
  dd if=/dev/urandom of="$MNT/mod/big" bs=64k count=10 seek=5 conv=notrunc status=none
}
snapshot() { (cd "$MNT" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$1"; }
files_of() {  # IMAGE SUMS: e2fsck clean, then the file checksums
  e2fsck -fn "$1" >"$WORK/fsck.log" 2>&1 || { cat "$WORK/fsck.log" >&2; fail "e2fsck found errors in $1"; }
  local l
  l=$(losetup --find --show --read-only "$1")
  mount -o ro,noload "$l" "$MNT" || { losetup -d "$l"; fail "cannot mount $1"; }
  snapshot "$2"
  umount "$MNT"
  losetup -d "$l"
}
layer() { status_field ".layers.$1.$2"; }
fresh() {
  rm -f "$IMG" "$IMG".* "$WORK/copy" "$WORK/changes"
  truncate -s 128M "$IMG"
  mkfs.ext4 -q -F -b 4096 -E nodiscard "$IMG"
}

log "A: era over bow"
fresh
start_server "$IMG" --target bow --target era
[[ $(layer 0 kind) == era && $(layer 1 kind) == bow ]] || fail "stack is not era over bow"
attach
populate
fstrim "$MNT" || fail "fstrim failed"
"$BOWSTACK" checkpoint --control "$CTL" >/dev/null || fail "bow checkpoint failed"
since=$("$BOWSTACK" era checkpoint --control "$CTL" | awk '{print $3}')
sync
nbdcopy "$(URI)" "$WORK/copy" || fail "full copy failed"
churn a
sync
snapshot "$WORK/after-a"
detach
"$BOWSTACK" commit --control "$CTL" >/dev/null || fail "bow commit failed"
stop_server
"$BOWSTACK" era check "$IMG.era" >/dev/null || fail "era metadata not clean"
"$BOWSTACK" era export "$IMG.era" "$IMG" --since "$since" --output "$WORK/changes" >/dev/null || fail "export failed"
"$BOWSTACK" era apply --input "$WORK/changes" "$WORK/copy" >/dev/null || fail "apply failed"
files_of "$WORK/copy" "$WORK/copy-a"
diff "$WORK/after-a" "$WORK/copy-a" >&2 || fail "A: the copy's files differ from the device's after apply"
files_of "$IMG" "$WORK/img-a"
diff "$WORK/after-a" "$WORK/img-a" >&2 || fail "A: the device's files changed after commit"

log "B: bow over era"
fresh
start_server "$IMG" --target era --target bow
[[ $(layer 0 kind) == bow && $(layer 1 kind) == era ]] || fail "stack is not bow over era"
attach
populate
fstrim "$MNT" || fail "fstrim failed"
snapshot "$WORK/before-b"
sync
since=$("$BOWSTACK" era checkpoint --control "$CTL" | awk '{print $3}')
nbdcopy "$(URI)" "$WORK/copy" || fail "full copy failed"
"$BOWSTACK" checkpoint --control "$CTL" >/dev/null || fail "bow checkpoint failed"
churn b
sync
( for i in $(seq 1 100); do head -c 100000 /dev/urandom >"$MNT/late-$i" 2>/dev/null || break; done ) &
CHURN=$!
sleep 0.5
kill9_server
wait "$CHURN" 2>/dev/null || true
detach
"$BOWSTACK" restore "$IMG" >/dev/null || fail "bow restore failed"
files_of "$IMG" "$WORK/img-b"
diff "$WORK/before-b" "$WORK/img-b" >&2 || fail "B: restore did not bring back the checkpoint's files"
"$BOWSTACK" era check "$IMG.era" >/dev/null || fail "era metadata not clean after kill -9"
"$BOWSTACK" era export "$IMG.era" "$IMG" --since "$since" --output "$WORK/changes" >/dev/null || fail "export failed"
"$BOWSTACK" era apply --input "$WORK/changes" "$WORK/copy" >/dev/null || fail "apply failed"
cmp "$WORK/copy" "$IMG" || fail "B: era missed blocks bow changed: the copy differs from the restored image"
# Serving again recovers the writeset left by kill -9 into an archived era.
start_server "$IMG" --target era --target bow
[[ $(layer 1 current_era) -eq $((since + 1)) ]] || fail "era did not archive the crashed writeset"
stop_server
pass
