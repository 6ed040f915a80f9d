#!/usr/bin/env bash
# nbdcopy round trip: a random image copied in and back out compares equal.
. "$(dirname "$0")/lib.sh"
need nbdcopy qemu-img truncate

head -c 48M /dev/urandom >"$WORK/src"
# Leave a hole in the middle so sparse handling is exercised too.
dd if=/dev/zero of="$WORK/src" bs=1M seek=16 count=8 conv=notrunc status=none
truncate -s 48M "$WORK/img"
start_server "$WORK/img"
nbdcopy --connections=4 --requests=16 "$WORK/src" "$(URI)" || fail "nbdcopy into the export failed"
nbdcopy "$(URI)" "$WORK/back" || fail "nbdcopy out of the export failed"
qemu-img compare -f raw -F raw "$WORK/src" "$WORK/back" || fail "copied-out image differs"
# And compare the export itself through qemu's NBD client.
qemu-img compare -f raw -F raw "$WORK/src" "$(URI)" || fail "export differs from source"
stop_server
cmp "$WORK/src" "$WORK/img" || fail "backing file differs after clean shutdown"
pass
