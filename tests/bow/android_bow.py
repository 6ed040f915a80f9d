#!/usr/bin/python3
"""An independent implementation of Android's dm-bow log, for compatibility
tests. Written from docs/format/bow.md and the shared reference, not from
bowstack's C++ code, so that agreement between the two means something.

  make-image  emulate Android's kernel target: checkpoint an image, then
              apply writes the way dm-bow 1.2 does (multi-block entries,
              backups that move, the live block 0 that moves with a
              checksum-0 entry and a sector0 that is only updated with the
              next log write, several log blocks)
  restore     Android vold's rollback: validate through a relocation map,
              restore in reverse with the WOB protocol, roll forward if
              validation fails
  compare     compare two images on a list of blocks
"""
import argparse
import json
import os
import random
import struct
import sys
import zlib

MAGIC, WOB = 0x00574F42, 0x00424F57
HDR = struct.Struct("<IHHIIIQ")   # magic, version, header_size, block_size, count, sequence, sector0
ENT = struct.Struct("<QQII")      # source, dest, size, checksum


def raw_crc(seed, data):
    """The kernel's crc32_le: no pre/post inversion."""
    return (~zlib.crc32(data, (~seed) & 0xFFFFFFFF)) & 0xFFFFFFFF


def entry_crc(source_sector, bs, data):
    c = (source_sector // (bs // 512)) & 0xFFFFFFFF
    for i in range(0, len(data), bs):
        c = raw_crc(c, data[i:i + bs])
    return c


class Disk:
    def __init__(self, path):
        self.f = open(path, "r+b")
        self.f.seek(0, 2)
        self.size = self.f.tell()

    def read(self, off, n):
        self.f.seek(off)
        d = self.f.read(n)
        assert len(d) == n, f"short read at {off}"
        return d

    def write(self, off, data):
        self.f.seek(off)
        self.f.write(data)

    def sync(self):
        self.f.flush()
        os.fsync(self.f.fileno())


# ---------------------------------------------------------------- writer ----

UNCHANGED, FREE, CHANGED, BACKUP, SECTOR0, S0C = range(6)


class KernelBow:
    """Per-block emulation of dm-bow 1.2's CHECKPOINT state."""

    def __init__(self, disk, bs, free_blocks):
        self.d, self.bs, self.spb = disk, bs, bs // 512
        self.n = disk.size // bs
        self.t = [UNCHANGED] * self.n
        for b in free_blocks:
            self.t[b] = FREE
        self.free = sorted(free_blocks)  # allocation order: lowest first
        self.cap = (bs - HDR.size) // ENT.size
        # prepare_log
        self.t[0] = SECTOR0
        s0c = self.alloc(1)[0]
        self.t[s0c] = S0C
        b0 = disk.read(0, bs)
        disk.write(s0c * bs, b0)
        self.sector0 = s0c * self.spb
        dest = self.alloc(1)[0]
        disk.write(dest * bs, b0)
        self.seq, self.entries = 0, []
        self.add_entry(0, dest * self.spb, bs, entry_crc(0, bs, b0))
        self.t[dest] = BACKUP

    def alloc(self, want):
        """A run of up to `want` contiguous free blocks from the first free run."""
        if not self.free:
            raise RuntimeError("out of free space")
        start = self.free[0]
        run = [start]
        while len(run) < want and len(self.free) > len(run) and self.free[len(run)] == start + len(run):
            run.append(start + len(run))
        del self.free[:len(run)]
        return run

    def write_log(self):
        blk = bytearray(self.d.read(0, self.bs))
        blk[:HDR.size] = HDR.pack(MAGIC, 0x0100, HDR.size, self.bs, len(self.entries), self.seq, self.sector0)
        for i, e in enumerate(self.entries):
            blk[HDR.size + i * ENT.size:HDR.size + (i + 1) * ENT.size] = ENT.pack(*e)
        self.d.write(0, bytes(blk))

    def add_entry(self, source, dest, size, crc):
        if HDR.size + ENT.size * (len(self.entries) + 1) > self.bs:
            # backup_log_sector: save the (on-disk) log block, start the next
            saved = self.alloc(1)[0]
            blk = self.d.read(0, self.bs)
            self.d.write(saved * self.bs, blk)
            self.t[saved] = BACKUP
            self.seq += 1
            self.entries = [(0, saved * self.spb, self.bs, raw_crc(0, blk))]
        self.entries.append((source, dest, size, crc))
        self.write_log()

    def write(self, block, data):
        """One write of len(data)//bs blocks at `block` (never block 0 here)."""
        nblocks = len(data) // self.bs
        b = block
        while b < block + nblocks:
            kind = self.t[b]
            run = 1
            while b + run < block + nblocks and self.t[b + run] == kind and kind != S0C:
                run += 1
            if kind == FREE:
                for x in range(b, b + run):
                    self.free.remove(x)
                    self.t[x] = CHANGED
            elif kind in (UNCHANGED, BACKUP, S0C):
                dest = self.alloc(run)
                run = len(dest)  # the backup may be smaller than asked
                old = self.d.read(b * self.bs, run * self.bs)
                self.d.write(dest[0] * self.bs, old)
                crc = 0 if kind == S0C else entry_crc(b * self.spb, self.bs, old)
                for x in dest:
                    self.t[x] = S0C if kind == S0C else BACKUP
                self.add_entry(b * self.spb, dest[0] * self.spb, run * self.bs, crc)
                # as shipped: sector0 changes in memory only after the log write
                if kind == S0C:
                    self.sector0 = dest[0] * self.spb
                for x in range(b, b + run):
                    self.t[x] = CHANGED
            b += run
        self.d.write(block * self.bs, data)

    def write_block0(self, data):
        # Logical block 0 is redirected to its live copy; no backup needed.
        self.d.write(self.live0() * self.bs, data)

    def live0(self):
        return [i for i, k in enumerate(self.t) if k == S0C][0]


def make_image(a):
    rnd = random.Random(a.seed)
    bs, n = a.block_size, a.blocks
    base = bytes(rnd.getrandbits(8) for _ in range(bs * n))
    with open(a.output, "wb") as f:
        f.write(base)
    with open(a.expected, "wb") as f:
        f.write(base)
    # Free space: the top 45% and scattered single blocks below it.
    free = set(range(int(n * 0.55), n)) | {b for b in range(1, int(n * 0.55)) if rnd.random() < 0.1}
    in_use = [b for b in range(n) if b not in free]
    k = KernelBow(Disk(a.output), bs, sorted(free))
    for _ in range(a.writes):
        if len(k.free) < 16:
            break
        r = rnd.random()
        if r < 0.05:
            k.write_block0(bytes(rnd.getrandbits(8) for _ in range(bs)))
            continue
        if r < 0.15:  # the filesystem writes into the block holding the live block 0
            b = k.live0()
        elif r < 0.3:  # ... or into a block holding a backup
            backups = [i for i, t in enumerate(k.t) if t == BACKUP]
            b = rnd.choice(backups)
        else:
            b = rnd.randrange(1, n)
        cnt = min(rnd.choice([1, 1, 2, 3, 5, 8]), n - b)
        k.write(b, bytes(rnd.getrandbits(8) for _ in range(cnt * bs)))
    k.d.sync()
    json.dump({"block_size": bs, "in_use": in_use, "log_blocks": k.seq + 1}, open(a.meta, "w"))
    print(f"made {a.output}: {k.seq + 1} log blocks, block size {bs}")


# --------------------------------------------------------------- restore ----

class Relocations:
    def __init__(self):
        self.m = {0: 0}

    def lookup(self, s):
        k = max(x for x in self.m if x <= s)
        return self.m[k] + (s - k)

    def relocate(self, source, dest, count):
        keys = sorted(self.m)
        new = {}
        pos = dest
        while pos < dest + count:
            k = max(x for x in keys if x <= pos)
            nxt = [x for x in keys if x > pos]
            end = min(nxt[0], dest + count) if nxt else dest + count
            new[source + pos - dest] = self.m[k] + (pos - k)
            pos = end
        after = self.lookup(source + count)
        for x in [x for x in keys if source <= x < source + count]:
            del self.m[x]
        self.m.setdefault(source + count, after)
        self.m.update(new)


def restore(a):
    d = Disk(a.image)
    validating = True
    writes = 0
    while True:
        rel = Relocations()
        h = HDR.unpack(d.read(0, HDR.size))
        if h[0] == WOB:
            validating = False
        elif h[0] != MAGIC:
            print("no checkpoint")
            return 0
        bs, top = h[3], h[5]
        spb = bs // 512
        ok = True
        try:
            for seq in range(top, -1, -1):
                if validating:  # the previous log block, through the relocations
                    blk = b"".join(d.read(rel.lookup(j) * 512, 512) for j in range(spb))
                else:
                    blk = d.read(0, bs)
                mg, ver, hs, bsz, count, sq, s0 = HDR.unpack(blk[:HDR.size])
                if (mg != MAGIC and (mg != WOB or validating)) or sq != seq or bsz != bs:
                    raise ValueError(f"bad log block {seq}")
                used = []
                for i in range(count - 1, -1, -1):
                    src, dst, size, crc = ENT.unpack(blk[hs + i * ENT.size:hs + (i + 1) * ENT.size])
                    if size % bs or src % spb or dst % spb or (src + size // 512) * 512 > d.size \
                            or (dst + size // 512) * 512 > d.size:
                        raise ValueError("bad entry")
                    if validating:
                        data = b"".join(d.read(rel.lookup(dst + j) * 512, bs) for j in range(0, size // 512, spb))
                    else:
                        data = d.read(dst * 512, size)
                    if crc and entry_crc(src, bs, data) != crc:
                        raise ValueError(f"checksum mismatch in log block {seq} entry {i}")
                    if validating:
                        rel.relocate(src, dst, size // 512)
                        continue
                    n = size // 512
                    if any(u0 < src + n and src < u1 for u0, u1 in used):
                        d.sync()
                        wob = bytearray(blk)
                        wob[:HDR.size] = HDR.pack(WOB, ver, hs, bsz, i + 1, sq, s0)
                        d.write(0, bytes(wob))
                        d.sync()
                        used = []
                    used.append((dst, dst + n))
                    if i == 0 and seq != 0:
                        prev = bytearray(data)
                        if HDR.unpack(bytes(prev[:HDR.size]))[0] == MAGIC:
                            prev[:4] = struct.pack("<I", WOB)
                        data = bytes(prev)
                    if a.stop_after is not None and writes >= a.stop_after:
                        d.sync()
                        print(f"stopped after {writes} writes")
                        return 3
                    d.write(src * 512, data)
                    writes += 1
                    if i == 0:
                        d.sync()
        except ValueError as e:
            ok = False
            err = str(e)
        if not ok:
            if not validating:
                print(f"restore failed after validation: {err}")
                return 2
            print(f"validation failed ({err}): rolling forward")
            live = d.read(h[6] * 512, bs)
            d.write(0, live)
            d.sync()
            return 1
        if not validating:
            d.sync()
            print(f"restored ({writes} writes)")
            return 0
        validating = False


def compare(a):
    meta = json.load(open(a.meta))
    bs = meta["block_size"]
    x, y = open(a.a, "rb"), open(a.b, "rb")
    bad = []
    for b in meta["in_use"]:
        x.seek(b * bs)
        y.seek(b * bs)
        if x.read(bs) != y.read(bs):
            bad.append(b)
    if bad:
        print(f"{len(bad)} in-use blocks differ, first {bad[:10]}")
        return 1
    print(f"all {len(meta['in_use'])} in-use blocks equal")
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-image")
    m.add_argument("--output", required=True)
    m.add_argument("--expected", required=True)
    m.add_argument("--meta", required=True)
    m.add_argument("--block-size", type=int, default=4096)
    m.add_argument("--blocks", type=int, default=1024)
    m.add_argument("--writes", type=int, default=400)
    m.add_argument("--seed", type=int, default=1)
    r = sub.add_parser("restore")
    r.add_argument("image")
    r.add_argument("--stop-after", type=int, default=None)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--meta", required=True)
    a = ap.parse_args()
    return {"make-image": make_image, "restore": restore, "compare": compare}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
