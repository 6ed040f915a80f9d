#!/usr/bin/env bash
# nbdinfo sees the capabilities we promise, the block sizes, and a real allocation map.
. "$(dirname "$0")/lib.sh"
need nbdinfo truncate

truncate -s 64M "$WORK/img"
start_server "$WORK/img"
for cap in flush fua trim zero multi-conn cache fast-zero; do
  nbdinfo --can "$cap" "$(URI)" || fail "nbdinfo --can $cap says no"
done
nbdinfo --is read-only "$(URI)" && fail "export claims to be read-only"
info=$(nbdinfo --json "$(URI)")
echo "$info" | /usr/bin/python3 -c '
import json, sys
i = json.load(sys.stdin)
e = i["exports"][0]
assert e["export-size"] == 64 << 20, e
assert e["block_size_minimum"] == 1, e  # any byte range, like nbdkit
assert e["block_size_preferred"] == 4096, e
assert e["block_size_maximum"] >= 1 << 20, e
assert "base:allocation" in e.get("contexts", []), e
' || fail "nbdinfo --json: unexpected export info: $info"

# Map: a fresh sparse image is one hole; after writing 1 MiB at 8 MiB that range is data.
map=$(nbdinfo --map "$(URI)")
echo "$map" | grep -q "hole,zero" || fail "fresh image not reported as a hole: $map"
/usr/bin/python3 - "$(URI)" <<'PY' || fail "write through nbdsh failed"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"\x5a" * (1 << 20), 8 << 20)
h.flush()
h.shutdown()
PY
map=$(nbdinfo --map --totals "$(URI)")
log "map totals: $(echo "$map" | tr '\n' ' ')"
nbdinfo --map "$(URI)" | grep -E "^ *8388608 +1048576 +0 +data" >/dev/null ||
  fail "written range not reported as data: $(nbdinfo --map "$(URI)")"
stop_server

# Read-only export.
start_server "$WORK/img" --read-only
nbdinfo --is read-only "$(URI)" || fail "--read-only export not read-only"
nbdinfo --can trim "$(URI)" && fail "read-only export offers trim"
stop_server
pass
