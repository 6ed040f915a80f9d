# A real ext4 over the export (nbdfuse + loop), for functional tests that
# mount one. Source after lib.sh; sets IMG, MNT, FUSE and
# defines attach (mount the export at $MNT), detach (undone at exit too) and
# kill9_server (the crash: no flush, no cleanup by the server). Requires
# root and /dev/fuse: without them the test skips, except under CI where it
# fails.
[[ -e /dev/fuse ]] || { [[ ${CI:-} == true ]] && fail "/dev/fuse missing"; log "SKIP: no /dev/fuse"; exit 77; }
[[ $(id -u) -eq 0 ]] || { [[ ${CI:-} == true ]] && fail "must run as root"; log "SKIP: not root"; exit 77; }

IMG=$WORK/img
MNT=$WORK/mnt
FUSE=$WORK/fuse
mkdir -p "$MNT" "$FUSE"
LOOP=
FUSE_PID=

attach() {
  nbdfuse "$FUSE" "$(URI)" &
  FUSE_PID=$!
  for i in $(seq 100); do [[ -e $FUSE/nbd ]] && break; sleep 0.1; done
  [[ -e $FUSE/nbd ]] || fail "nbdfuse did not expose the export"
  LOOP=$(losetup --find --show "$FUSE/nbd") || fail "losetup failed"
  mount -t ext4 "$LOOP" "$MNT" || fail "mount failed"
}
detach() {
  umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
  [[ -n $LOOP ]] && { losetup -d "$LOOP" 2>/dev/null || true; }
  LOOP=
  fusermount3 -u "$FUSE" 2>/dev/null || umount -l "$FUSE" 2>/dev/null || true
  [[ -n $FUSE_PID ]] && { kill "$FUSE_PID" 2>/dev/null || true; wait "$FUSE_PID" 2>/dev/null || true; }
  FUSE_PID=
}
add_cleanup detach
kill9_server() {
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  rm -f "$SOCK" "$CTL"
}
