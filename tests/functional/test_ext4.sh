#!/usr/bin/env bash
# A real kernel filesystem on the export: mkfs.ext4 -> serve -> nbdfuse ->
# losetup -> mount -> write files -> fstrim (trims counted in status) ->
# umount -> e2fsck -fn clean -> contents compared.
. "$(dirname "$0")/lib.sh"
need nbdfuse losetup mount umount mkfs.ext4 e2fsck fstrim truncate
[[ -e /dev/fuse ]] || { [[ ${CI:-} == true ]] && fail "/dev/fuse missing"; log "SKIP: no /dev/fuse"; exit 77; }
[[ $(id -u) -eq 0 ]] || { [[ ${CI:-} == true ]] && fail "must run as root"; log "SKIP: not root"; exit 77; }

truncate -s 256M "$WORK/img"
mkfs.ext4 -q -F -b 4096 -E nodiscard "$WORK/img"
start_server "$WORK/img"

mkdir -p "$WORK/fuse" "$WORK/mnt"
nbdfuse "$WORK/fuse" "$(URI)" &
FUSE_PID=$!
add_cleanup 'fusermount3 -u "$WORK/fuse" 2>/dev/null || umount -l "$WORK/fuse" 2>/dev/null; kill $FUSE_PID 2>/dev/null'
for i in $(seq 100); do [[ -e $WORK/fuse/nbd ]] && break; sleep 0.1; done
[[ -e $WORK/fuse/nbd ]] || fail "nbdfuse did not expose the export"

LOOP=$(losetup --find --show "$WORK/fuse/nbd") || fail "losetup failed"
add_cleanup 'losetup -d "$LOOP" 2>/dev/null'
mount -t ext4 "$LOOP" "$WORK/mnt" || fail "mount failed"
add_cleanup 'umount "$WORK/mnt" 2>/dev/null'

# Files of many sizes, some overwritten, some deleted (so fstrim finds space).
mkdir -p "$WORK/expect"
for i in $(seq 1 40); do
  head -c $((i * 37 * 1024 + i)) /dev/urandom >"$WORK/expect/f$i"
done
head -c 24M /dev/urandom >"$WORK/expect/big"
cp -a "$WORK/expect/." "$WORK/mnt/"
head -c 8M /dev/urandom >"$WORK/mnt/doomed"
sync
rm "$WORK/mnt/doomed"
dd if=/dev/urandom of="$WORK/expect/f3" bs=1k count=5 conv=notrunc status=none
cp "$WORK/expect/f3" "$WORK/mnt/f3"
sync

trims_before=$(status_field .stats.trims)
fstrim -v "$WORK/mnt" || fail "fstrim failed"
trims_after=$(status_field .stats.trims)
((trims_after > trims_before)) || fail "fstrim did not reach the server as trims ($trims_before -> $trims_after)"
log "fstrim: $((trims_after - trims_before)) NBD trims"

umount "$WORK/mnt"
losetup -d "$LOOP"
fusermount3 -u "$WORK/fuse" 2>/dev/null || umount "$WORK/fuse"
wait $FUSE_PID 2>/dev/null || true
stop_server

e2fsck -fn "$WORK/img" || fail "e2fsck found errors"

# Mount the image directly (loop on the file) and compare contents.
LOOP2=$(losetup --find --show --read-only "$WORK/img")
add_cleanup 'losetup -d "$LOOP2" 2>/dev/null'
mount -o ro "$LOOP2" "$WORK/mnt"
for f in "$WORK"/expect/*; do
  cmp "$f" "$WORK/mnt/$(basename "$f")" || fail "$(basename "$f") differs"
done
[[ ! -e $WORK/mnt/doomed ]] || fail "deleted file came back"
umount "$WORK/mnt"
losetup -d "$LOOP2"
pass
