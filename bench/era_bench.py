#!/usr/bin/python3
"""era benchmarks, each a ratio against bowstack passthrough measured in the
same run (rounds interleaved), fio ioengine=nbd over Unix sockets, 4k random
writes at QD16 over a region written once beforehand:

1. marked: every block of the region already written in the current era, so
   each write passes straight through;                            must >= 0.90
2. first writes in a fresh era: after a checkpoint, every write is the first
   to its block in the new era and needs its bit committed (write-behind,
   group commit, one metadata flush per batch);                    must >= 0.50

fio's random map writes each block of the region at most once per run, so in
(2) every write is a first write.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

from benchlib import Server, fio, sh

GiB = 1 << 30


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bowstack", required=True)
    ap.add_argument("--runtime", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="1G", help="region written (fio size)")
    ap.add_argument("--block-size", default="4096", help="era block_size")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="bowstack-erabench-", dir=a.dir)
    log = open(os.path.join(work, "servers.log"), "ab")
    img = os.path.join(work, "img")
    sock = os.path.join(work, "s.sock")
    ctl = os.path.join(work, "ctl")

    def fresh():
        for p in (img, img + ".era"):
            if os.path.exists(p):
                os.unlink(p)
        sh(["truncate", "-s", a.size, img])

    def serve(*targets):
        args = [a.bowstack, "serve", img, "--unix", sock, "--control", ctl, "--log-level", "warn"]
        for t in targets:
            args += ["--target", t]
        return Server(args, sock, log)

    def prepared(*targets):
        # The region written once (allocated in the file; marked in era 1 under era).
        fresh()
        s = serve(*targets)
        fio(s.uri, "write", "1M", 4, 0, a.size, 600)
        return s

    era = f"era:block_size={a.block_size}"
    res = {k: [] for k in ["pt", "marked", "first"]}
    try:
        for r in range(a.rounds):
            s = prepared(); res["pt"].append(fio(s.uri, "randwrite", "4k", 16, 0, a.size, a.runtime)[0]); s.stop()
            s = prepared(era); res["marked"].append(fio(s.uri, "randwrite", "4k", 16, 0, a.size, a.runtime)[0]); s.stop()
            s = prepared(era)
            sh([a.bowstack, "era", "checkpoint", "--control", ctl])
            res["first"].append(fio(s.uri, "randwrite", "4k", 16, 0, a.size, a.runtime)[0])
            s.stop()
            print(f"round {r + 1}: " + ", ".join(f"{k}={v[-1]:.0f}" for k, v in res.items()),
                  file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    m = {k: statistics.median(v) for k, v in res.items()}
    rows = [
        ("4k randwrite QD16, blocks already marked", m["marked"], 0.90),
        ("4k randwrite QD16, first writes in a fresh era", m["first"], 0.50),
    ]
    print("| benchmark | era | passthrough (same run) | ratio | must |")
    print("|---|---|---|---|---|")
    failed = False
    for name, v, need in rows:
        ratio = v / m["pt"]
        ok = ratio >= need
        failed |= not ok
        print(f"| {name} | {v:.0f} IOPS | {m['pt']:.0f} IOPS | {ratio:.2f} | >= {need} {'ok' if ok else 'FAIL'} |")
    print(f"\n(median of {a.rounds} rounds, fio runtime {a.runtime} s, era block_size {a.block_size}, "
          f"region {a.size}, fio ioengine=nbd over Unix sockets)")
    if a.json:
        json.dump({"median": m, "raw": res}, open(a.json, "w"), indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
