#!/usr/bin/python3
"""512-byte O_DIRECT writes and reads at odd sector offsets on a block
device (a loop device over nbdfuse): fills a region with a known pattern in
4 KiB writes, then writes single and multi-sector runs at odd sectors, and
checks that each reads back and that every other sector is untouched.
Usage: sectors.py DEVICE"""
import mmap
import os
import random
import sys

dev = sys.argv[1]
fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
SECTOR, REGION = 512, 256 * 1024


def buf(data):
    m = mmap.mmap(-1, max(len(data), 4096))  # page-aligned, as O_DIRECT wants
    m[: len(data)] = data
    return m


def pwrite(data, off):
    b = buf(data)
    n = os.pwritev(fd, [memoryview(b)[: len(data)]], off)
    assert n == len(data), (n, len(data))


def pread(n, off):
    b = buf(bytes(n))
    got = os.preadv(fd, [memoryview(b)[:n]], off)
    assert got == n, (got, n)
    return bytes(b[:n])


rng = random.Random(512)
base = 1 << 20  # away from the start (bow keeps its log in block 0)
model = bytearray(rng.randbytes(REGION))
for off in range(0, REGION, 4096):
    pwrite(bytes(model[off:off + 4096]), base + off)
for i in range(300):
    sector = rng.randrange(REGION // SECTOR - 8) | 1  # odd sectors
    count = rng.choice([1, 1, 1, 2, 3, 7])
    data = rng.randbytes(count * SECTOR)
    pwrite(data, base + sector * SECTOR)
    model[sector * SECTOR:(sector + count) * SECTOR] = data
    if i % 10 == 0:
        back = pread(count * SECTOR, base + sector * SECTOR)
        assert back == data, f"sectors {sector}+{count} did not read back"
        s = rng.randrange(REGION // SECTOR - 3) | 1
        assert pread(3 * SECTOR, base + s * SECTOR) == bytes(model[s * SECTOR:(s + 3) * SECTOR]), f"sector {s}"
os.fsync(fd)
got = pread(REGION, base)
bad = [s for s in range(REGION // SECTOR) if got[s * SECTOR:(s + 1) * SECTOR] != model[s * SECTOR:(s + 1) * SECTOR]]
if bad:
    raise SystemExit(f"{len(bad)} sectors differ, first {bad[0]}")
os.close(fd)
print("ok")
