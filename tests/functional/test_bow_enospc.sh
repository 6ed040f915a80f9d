#!/usr/bin/env bash
# bow over a sparse image on a filesystem that fills up during a checkpoint
# (a size-limited tmpfs): writes that need backup space fail with ENOSPC,
# reads of flushed data and overwrites that need no backup go on, writes
# resume once space returns, SIGTERM still exits 0, and restore rolls back.
. "$(dirname "$0")/lib.sh"
need truncate mount umount /usr/bin/nbdsh
[[ $(id -u) -eq 0 ]] || {
  log "SKIP: needs root to mount a tmpfs"
  exit 77
}

FS=$WORK/fs
mkdir -p "$FS"
mount -t tmpfs -o size=48M tmpfs "$FS" || {
  log "SKIP: cannot mount a tmpfs here"
  exit 77
}
add_cleanup "umount -l '$FS'"
IMG=$FS/disk.img
truncate -s 64M "$IMG"

start_server "$IMG" --target bow
# 16 MiB of data; the rest of the 64 MiB image is free (and sparse).
/usr/bin/nbdsh -u "$(URI)" -c '
h.pwrite(bytes([0xa1]) * (16 << 20), 0)
h.trim(48 << 20, 16 << 20)
h.flush()'
"$BOWSTACK" checkpoint --control "$CTL" >/dev/null || fail "checkpoint failed"
# Fill the filesystem but for about 2 MiB.
avail=$(df --output=avail -B1 "$FS" | tail -n 1)
fallocate -l $((avail - (2 << 20))) "$FS/filler" || fail "cannot fill the tmpfs"

log "first overwrites until the filesystem is full"
out=$(/usr/bin/nbdsh -u "$(URI)" -c '
import errno
ok = 0
err = None
for i in range(1, 4096):  # 4 KiB blocks of the data; each needs a saved copy
    try:
        h.pwrite(bytes([0xb2]) * 4096, i * 4096)
        ok += 1
    except nbd.Error as e:
        err = e
        break
assert err is not None, "no error although the filesystem is full"
assert err.args[1] == errno.ENOSPC, "expected ENOSPC, got %r" % (err,)
# An overwrite of a block already saved needs no backup space.
h.pwrite(bytes([0xc3]) * 4096, 4096)
h.flush()
# Flushed data reads back, old and new.
assert h.pread(4096, 4096) == bytes([0xc3]) * 4096
assert h.pread(4096, 2 * 4096) == bytes([0xb2]) * 4096
assert h.pread(1 << 20, 15 << 20) == bytes([0xa1]) * (1 << 20)
print(ok)') || fail "writes on a full filesystem: $out"
[[ $out -gt 10 ]] || fail "only $out overwrites before ENOSPC"
log "ok: $out overwrites, then ENOSPC; reads, saved-block overwrites and flushes work"

log "space returns: writes resume"
rm -f "$FS/filler"
/usr/bin/nbdsh -u "$(URI)" -c '
for i in range(1, 2048):
    h.pwrite(bytes([0xd4]) * 4096, i * 4096)
h.flush()
assert h.pread(4096, 2047 * 4096) == bytes([0xd4]) * 4096' || fail "writes did not resume after space returned"
stop_server
grep -q "device failed earlier\|all further I/O fails" "$WORK/server.log" && fail "bow failed: $(cat "$WORK/server.log")"

log "restore rolls back to the checkpoint"
"$BOWSTACK" restore "$IMG" >/dev/null || fail "restore failed"
head -c 16M "$IMG" | /usr/bin/python3 -c 'import sys; d=sys.stdin.buffer.read(); sys.exit(0 if d == bytes([0xa1]) * len(d) else 1)' ||
  fail "restore did not roll back to the checkpoint"
pass
