#!/usr/bin/env bash
# Byte-granular I/O through libnbd (issue 19): a plain file export and
# linear advertise a minimum block of 1 (like nbdkit) and serve any byte
# range with strict mode on (pwrite of 5 bytes at offset 3, random ranges
# checked against a model and, for the plain export, against the file);
# bow, era and csum advertise 512 and serve any byte range too (bow by its
# own read-modify-write, csum through the core's sub-block adapter).
. "$(dirname "$0")/lib.sh"
need nbdsh truncate
/usr/bin/python3 -c "import nbd" 2>/dev/null || need python3-libnbd-module
PY="$(dirname "$0")/unaligned.py"

run() {  # MIN_BLOCK [IMAGE] -- SERVE ARGS...
  local min=$1 img=
  shift
  [[ $1 != -- ]] && { img=$1; shift; }
  shift
  rm -f "$WORK/img" "$WORK/img".*
  truncate -s 64M "$WORK/img"
  start_server "$WORK/img" "$@"
  log "serve $* (want minimum block $min)"
  /usr/bin/python3 "$PY" "$(URI)" "$min" $img || fail "byte-granular I/O failed: serve $*"
  stop_server
}

run 1 "$WORK/img" --
run 1 -- --target linear:offset=1M
run 1 -- --target era  # era passes I/O through: the file's 1
run 512 -- --target bow
run 512 -- --target csum
run 512 -- --direct  # O_DIRECT needs 4 KiB: the core's sub-block adapter serves the rest
pass
