#!/usr/bin/env bash
# 512-byte O_DIRECT I/O at odd sector offsets through nbdfuse and a loop
# device with direct I/O and 512-byte sectors, on every target (issue 19):
# what a kernel filesystem with 512-byte or 1 KiB blocks sends. libnbd
# refuses client-side anything below the advertised minimum block, so this
# fails wherever an export advertises more than 512 bytes.
. "$(dirname "$0")/lib.sh"
need nbdfuse losetup truncate
. "$(dirname "$0")/lib_ext4.sh"

for target in "" bow era csum "era --target bow" "csum --direct"; do
  rm -f "$IMG" "$IMG".*
  truncate -s 64M "$IMG"
  # shellcheck disable=SC2086
  start_server "$IMG" ${target:+--target $target}
  log "target: ${target:-passthrough}"
  nbdfuse "$FUSE" "$(URI)" &
  FUSE_PID=$!
  for i in $(seq 100); do [[ -e $FUSE/nbd ]] && break; sleep 0.1; done
  [[ -e $FUSE/nbd ]] || fail "nbdfuse did not expose the export"
  LOOP=$(losetup --find --show --direct-io=on --sector-size 512 "$FUSE/nbd") || fail "losetup failed"
  [[ $(blockdev --getss "$LOOP") == 512 ]] || fail "loop device does not have 512-byte sectors"
  /usr/bin/python3 "$(dirname "$0")/sectors.py" "$LOOP" || fail "sector I/O failed on ${target:-passthrough}"
  detach
  stop_server
done
pass
