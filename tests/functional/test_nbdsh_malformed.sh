#!/usr/bin/env bash
# Non-compliant requests (out of range, unknown flags, oversized)
# get error replies; the server stays up and data stays intact. Then raw
# garbage on the socket: the server drops that connection and keeps serving.
. "$(dirname "$0")/lib.sh"
need nbdsh nbdinfo truncate
/usr/bin/python3 -c "import nbd" 2>/dev/null || need python3-libnbd-module

truncate -s 64M "$WORK/img"  # larger than the maximum request, so oversize is not out of range
start_server "$WORK/img"
/usr/bin/python3 "$(dirname "$0")/malformed.py" "$(URI)" $((64 << 20)) || fail "malformed request checks"

# Raw garbage at every stage of the handshake and in transmission.
/usr/bin/python3 - "$SOCK" <<'PY' || fail "raw garbage checks"
import socket, struct, sys, os
path = sys.argv[1]
def conn():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    hello = s.recv(18)
    assert hello[:8] == b"NBDMAGIC", hello
    return s
def closed(s):
    try:
        return s.recv(4096) == b""
    except (ConnectionResetError, socket.timeout):
        return True
# 1. unknown client flags -> disconnect
s = conn(); s.sendall(struct.pack(">I", 0xFFFFFFFF)); assert closed(s), "unknown client flags accepted"
# 2. bad option magic -> disconnect
s = conn(); s.sendall(struct.pack(">I", 3) + b"\x00" * 16); assert closed(s)
# 3. huge option length: the server must not allocate it; it refuses or disconnects
s = conn(); s.sendall(struct.pack(">IQII", 3, 0x49484156454F5054, 7, 0xFFFFFFF0) + os.urandom(1024))
s.close()
# 4. random bytes
for _ in range(20):
    s = conn(); s.sendall(os.urandom(256)); s.close()
# 5. a good handshake, then a request with a bad magic -> disconnect
s = conn()
s.sendall(struct.pack(">I", 3))
name = b""
s.sendall(struct.pack(">QII", 0x49484156454F5054, 1, len(name)) + name)  # EXPORT_NAME
hdr = b""
while len(hdr) < 10:
    chunk = s.recv(10 - len(hdr)); assert chunk; hdr += chunk
def reply(s):
    r = b""
    while len(r) < 16:
        chunk = s.recv(16 - len(r)); assert chunk, "connection closed"; r += chunk
    magic, err, handle = struct.unpack(">IIQ", r)
    assert magic == 0x67446698, hex(magic)
    return err, handle
# unknown command type 99 -> EINVAL, connection stays up
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 99, 7, 0, 512))
assert reply(s) == (22, 7), "unknown command not refused with EINVAL"
# a simple-reply read still works
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 8, 0, 512))
assert reply(s) == (0, 8)
data = b""
while len(data) < 512:
    chunk = s.recv(512 - len(data)); assert chunk; data += chunk
s.sendall(struct.pack(">IHHQQI", 0xdeadbeef, 0, 0, 1, 0, 512))
assert closed(s), "bad request magic accepted"
print("raw garbage: connections dropped, server alive")
PY
kill -0 "$SERVER_PID" || fail "server died"
nbdinfo --size "$(URI)" >/dev/null || fail "server no longer answers"
stop_server
pass
