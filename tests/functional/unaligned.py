#!/usr/bin/python3
"""Byte-granular reads, writes, zeroes and trims at random offsets against a
model. Usage: unaligned.py URI MIN_BLOCK [IMAGE]
MIN_BLOCK is the NBD minimum block size the export must advertise; with 1,
libnbd's strict mode stays on (the requests are compliant); otherwise it is
turned off, since every export serves any byte range. With IMAGE (a plain
file export), the file is compared with the model once disconnected."""
import random
import sys

import nbd

uri, want_min = sys.argv[1], int(sys.argv[2])
image = sys.argv[3] if len(sys.argv) > 3 else None

h = nbd.NBD()
h.connect_uri(uri)
got_min = h.get_block_size(nbd.SIZE_MINIMUM)
if got_min != want_min:
    raise SystemExit(f"minimum block size {got_min}, want {want_min}")
if want_min > 1:
    h.set_strict_mode(0)
size = h.get_size()

# The example from the issue: 5 bytes at offset 3, neighbours untouched.
before = h.pread(16, 0)
h.pwrite(b"hello", 3)
after = h.pread(16, 0)
assert after == before[:3] + b"hello" + before[8:], (before, after)

# Random ops in a window at the start and one at the end of the export.
rng = random.Random(19)
windows = [(0, 96 * 1024), (size - 40 * 1024, 40 * 1024)]
model = {}
known = {}
for base, n in windows:
    model[base] = bytearray(h.pread(n, base))
    known[base] = bytearray(b"\1" * n)
for i in range(600):
    base, n = windows[i % 2]
    off = rng.randrange(n)
    length = 1 + rng.randrange(min(n - off, rng.choice([7, 600, 5000, 20000])))
    op = rng.randrange(10)
    m, k = model[base], known[base]
    if op < 4:
        data = rng.randbytes(length)
        h.pwrite(data, base + off, nbd.CMD_FLAG_FUA if i % 13 == 0 else 0)
        m[off:off + length] = data
        k[off:off + length] = b"\1" * length
    elif op < 6:
        h.zero(length, base + off)
        m[off:off + length] = bytes(length)
        k[off:off + length] = b"\1" * length
    elif op < 7 and h.can_trim():
        h.trim(length, base + off)  # a hint: afterwards the bytes are unknown
        k[off:off + length] = bytes(length)
    else:
        got = h.pread(length, base + off)
        for j in range(length):
            if k[off + j] and got[j] != m[off + j]:
                raise SystemExit(f"op {i}: byte {base + off + j} is {got[j]}, want {m[off + j]}")
h.flush()
for base, n in windows:
    got = h.pread(n, base)
    m, k = model[base], known[base]
    bad = [j for j in range(n) if k[j] and got[j] != m[j]]
    if bad:
        raise SystemExit(f"after flush: {len(bad)} bytes differ, first at {base + bad[0]}")
h.shutdown()

if image:
    with open(image, "rb") as f:
        for base, n in windows:
            f.seek(base)
            got = f.read(n)
            m, k = model[base], known[base]
            bad = [j for j in range(n) if k[j] and got[j] != m[j]]
            if bad:
                raise SystemExit(f"image file: {len(bad)} bytes differ, first at {base + bad[0]}")
print("ok")
