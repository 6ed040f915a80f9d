#!/usr/bin/env bash
# ext4 on csum (nbdfuse + loop): mkfs through the export, files, fstrim,
# umount; then csum verify of the image is clean, e2fsck of the image
# itself (the sidecar layout leaves it a plain ext4 image) is clean, and the
# files read back through csum after a restart. A flipped byte inside a
# file's data then makes reading that file fail with EIO, not return it.
. "$(dirname "$0")/lib.sh"
need nbdfuse losetup mount umount mkfs.ext4 e2fsck fstrim truncate debugfs
. "$(dirname "$0")/lib_ext4.sh"

truncate -s 256M "$IMG"
start_server "$IMG" --target csum
attach_raw() {
  nbdfuse "$FUSE" "$(URI)" &
  FUSE_PID=$!
  for i in $(seq 100); do [[ -e $FUSE/nbd ]] && break; sleep 0.1; done
  [[ -e $FUSE/nbd ]] || fail "nbdfuse did not expose the export"
  LOOP=$(losetup --find --show "$FUSE/nbd") || fail "losetup failed"
}
attach_raw
mkfs.ext4 -q -F -b 4096 "$LOOP" || fail "mkfs.ext4 through csum"
mount -t ext4 "$LOOP" "$MNT" || fail "mount failed"
mkdir -p "$WORK/expect"
for i in $(seq 1 30); do head -c $((i * 41 * 1024 + i)) /dev/urandom >"$WORK/expect/f$i"; done
head -c 16M /dev/urandom >"$WORK/expect/big"
cp -a "$WORK/expect/." "$MNT/"
head -c 8M /dev/urandom >"$MNT/doomed"
sync
rm "$MNT/doomed"
sync
trims_before=$(status_field .stats.trims)
fstrim "$MNT" || fail "fstrim failed"
((trims_before < $(status_field .stats.trims))) || fail "fstrim did not reach csum"
[[ $(status_field .layers.0.mismatches) == 0 ]] || fail "mismatches while ext4 ran"
detach
stop_server

"$BOWSTACK" csum verify "$IMG" >"$WORK/verify.out" || fail "csum verify after ext4: $(cat "$WORK/verify.out")"
e2fsck -fn "$IMG" >"$WORK/fsck.log" 2>&1 || { cat "$WORK/fsck.log" >&2; fail "e2fsck found errors"; }
log "ok: verify and e2fsck clean"

start_server "$IMG" --target csum
attach
for f in "$WORK"/expect/*; do
  cmp -s "$f" "$MNT/$(basename "$f")" || fail "$(basename "$f") differs after the restart"
done
detach
stop_server
log "ok: files read back through csum"

# The first block of f20's data, found in the image itself.
blk=$(debugfs -R "bmap /f20 0" "$IMG" 2>/dev/null) || fail "debugfs bmap"
/usr/bin/python3 -c 'import sys; f=open(sys.argv[1],"r+b"); o=int(sys.argv[2])*4096+100; f.seek(o); b=f.read(1); f.seek(o); f.write(bytes([b[0]^4]))' "$IMG" "$blk"
start_server "$IMG" --target csum
attach
cat "$MNT/f20" >/dev/null 2>"$WORK/cat.err" && fail "a damaged file read without error"
grep -q "Input/output error" "$WORK/cat.err" || fail "reading the damaged file: $(cat "$WORK/cat.err")"
cmp -s "$WORK/expect/f19" "$MNT/f19" || fail "a neighbouring file is affected"
detach
[[ $(status_field .layers.0.mismatches) -ge 1 ]] || fail "the mismatch was not counted"
stop_server
log "ok: block $blk of f20 fails with EIO"
pass
