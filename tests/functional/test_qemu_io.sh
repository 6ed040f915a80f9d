#!/usr/bin/env bash
# qemu-io: writes, reads with pattern checks, discards and write-zeroes.
. "$(dirname "$0")/lib.sh"
need qemu-io truncate

truncate -s 32M "$WORK/img"
start_server "$WORK/img"
q() { qemu-io -f raw "$(URI)" "$@"; }
out=$(q -c "write -P 0xab 0 1M" -c "write -P 0xcd 4M 64k" -c "aio_write -P 0x11 8M 128k" -c "aio_flush" \
  -c "read -P 0xab 0 1M" -c "read -P 0xcd 4M 64k" -c "read -P 0x11 8M 128k" \
  -c "discard 0 512k" -c "write -z 4M 64k" -c "read -P 0 4M 64k" -c "read -P 0xab 512k 512k" \
  -c "write -P 0x77 -f 12M 4k" -c "read -P 0x77 12M 4k" -c "flush" 2>&1) || fail "qemu-io failed: $out"
echo "$out" | grep -qiE "pattern verification failed|error|failed" && fail "qemu-io reported: $out"
[[ $(status_field .stats.trims) -ge 1 ]] || fail "discard not counted"
stop_server
# The backing file holds what was written.
cmp -n 4096 <(head -c 4096 /dev/zero | tr '\0' '\167') <(dd if="$WORK/img" bs=4k skip=3072 count=1 status=none) ||
  fail "FUA write not in backing file"
pass
