#!/usr/bin/env bash
# 64 concurrent connections, each with requests in flight, each writing its
# own region; all data checked afterwards, and status counts the connections.
. "$(dirname "$0")/lib.sh"
need truncate
/usr/bin/python3 -c "import nbd" 2>/dev/null || need python3-libnbd-module

truncate -s 64M "$WORK/img"
start_server "$WORK/img"
/usr/bin/python3 - "$(URI)" "$CTL" "$BOWSTACK" <<'PY' || fail "concurrent connections"
import json, subprocess, sys, nbd
uri, ctl, exe = sys.argv[1:4]
N, REGION, CHUNK = 64, 1 << 20, 64 << 10
handles = []
for i in range(N):
    h = nbd.NBD()
    h.connect_uri(uri)
    handles.append(h)
st = json.loads(subprocess.check_output([exe, "status", "--control", ctl, "--json"]))
assert st["connections"] == N, f"status reports {st['connections']} connections, want {N}"
# Each connection queues 16 writes before any completes.
bufs = {}
for i, h in enumerate(handles):
    for j in range(REGION // CHUNK):
        b = nbd.Buffer.from_bytearray(bytearray([(i * 7 + j) & 0xff]) * CHUNK)
        bufs[(i, j)] = b
        h.aio_pwrite(b, i * REGION + j * CHUNK)
for h in handles:
    while h.aio_in_flight() > 0:
        h.poll(-1)
    h.flush()
# Read everything back through a different connection than wrote it.
for i in range(N):
    h = handles[(i + 1) % N]
    data = h.pread(REGION, i * REGION)
    for j in range(REGION // CHUNK):
        want = bytes([(i * 7 + j) & 0xff]) * CHUNK
        assert data[j * CHUNK:(j + 1) * CHUNK] == want, f"region {i} chunk {j} wrong"
for h in handles:
    h.shutdown()
print("64 connections: all data correct")
PY
[[ $(status_field .connections_total) -ge 64 ]] || fail "total connections not counted"
stop_server
pass
