#!/usr/bin/env bash
# ext4 with 1 KiB blocks on bow's 4 KiB blocks (xfstests ext4/035, 054,
# generic/641 on issue 19): mkfs.ext4 -b 1024 through the export, mount,
# files, checkpoint, churn of 1 KiB writes, e2fsck -fn clean through the
# export; then an offline restore gives a clean filesystem with the files
# as at the checkpoint.
. "$(dirname "$0")/lib.sh"
need nbdfuse losetup mount umount mkfs.ext4 e2fsck truncate sha256sum
. "$(dirname "$0")/lib_ext4.sh"

snapshot() { (cd "$MNT" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$1"; }

truncate -s 128M "$IMG"
start_server "$IMG" --target bow
nbdfuse "$FUSE" "$(URI)" &
FUSE_PID=$!
for i in $(seq 100); do [[ -e $FUSE/nbd ]] && break; sleep 0.1; done
[[ -e $FUSE/nbd ]] || fail "nbdfuse did not expose the export"
LOOP=$(losetup --find --show "$FUSE/nbd") || fail "losetup failed"
mkfs.ext4 -q -F -b 1024 "$LOOP" || fail "mkfs.ext4 -b 1024 failed on bow"
mount -t ext4 "$LOOP" "$MNT" || fail "ext4 with 1 KiB blocks does not mount on bow"
mkdir "$MNT/d"
for i in $(seq 1 40); do head -c $((i * 1111)) /dev/urandom >"$MNT/d/f$i"; done
sync
snapshot "$WORK/before"
"$BOWSTACK" checkpoint --control "$CTL" || fail "checkpoint failed"
for i in $(seq 1 40 3); do dd if=/dev/urandom of="$MNT/d/f$i" bs=1k count=1 seek=$((i % 5)) conv=notrunc status=none; done
for i in $(seq 1 20); do head -c $((i * 777)) /dev/urandom >"$MNT/new$i"; done
rm -f "$MNT/d/f2"
sync
snapshot "$WORK/after"
umount "$MNT"
e2fsck -fn "$LOOP" >"$WORK/fsck.log" 2>&1 || { cat "$WORK/fsck.log" >&2; fail "e2fsck through bow found errors"; }
mount -t ext4 "$LOOP" "$MNT" || fail "second mount failed"
snapshot "$WORK/again"
diff "$WORK/after" "$WORK/again" >&2 || fail "files changed across a remount"
detach
stop_server

"$BOWSTACK" restore "$IMG" || fail "restore failed"
e2fsck -fn "$IMG" >"$WORK/fsck.log" 2>&1 || { cat "$WORK/fsck.log" >&2; fail "e2fsck after restore found errors"; }
LOOP=$(losetup --find --show --read-only "$IMG")
mount -o ro,noload "$LOOP" "$MNT" || fail "cannot mount the restored image"
snapshot "$WORK/restored"
diff "$WORK/before" "$WORK/restored" >&2 || fail "restored files differ from the checkpoint"
pass
