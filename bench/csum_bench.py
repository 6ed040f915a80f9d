#!/usr/bin/python3
"""csum benchmarks, ratios against bowstack passthrough over the same kind of
image in the same run (rounds interleaved), fio ioengine=nbd over Unix
sockets, on a region written once beforehand (so every read is verified
against a real checksum):

1. 4k random reads QD16 (every block verified);              aim >= 0.9
2. 4k random writes QD16, modes dual, journal, rebuild;      reported
3. 1M sequential writes QD4, modes dual, journal, rebuild;   reported

min/median/max over the rounds.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

from benchlib import Server, fio, fio_job, sh


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bowstack", required=True)
    ap.add_argument("--runtime", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--modes", default="dual,journal,rebuild", help="comma-separated csum modes to measure")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="bowstack-csumbench-", dir=a.dir)
    log = open(os.path.join(work, "servers.log"), "ab")
    img = os.path.join(work, "img")
    sock = os.path.join(work, "s.sock")
    ctl = os.path.join(work, "ctl")

    def prepared(*targets):
        for p in (img, img + ".csum"):
            if os.path.exists(p):
                os.unlink(p)
        sh(["truncate", "-s", a.size, img])
        args = [a.bowstack, "serve", img, "--unix", sock, "--control", ctl, "--log-level", "warn"]
        for t in targets:
            args += ["--target", t]
        s = Server(args, sock, log)
        fio(s.uri, "write", "1M", 4, 0, a.size, 600)
        return s

    def timed(uri, rw, bs, qd):
        args = [f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}", f"--size={a.size}",
                f"--runtime={a.runtime}", "--time_based"]
        sh(["sync"])
        job = fio_job(uri, args)
        side = job["read"] if "read" in rw else job["write"]
        return side["iops"], side["bw_bytes"]

    names = ["randread 4k QD16", "randwrite 4k QD16", "write 1M QD4"]
    # Reads are the same in every mode (a verified read): measured in dual.
    configs = [("pt", (), names), ("dual", ("csum:mode=dual",), names),
               ("journal", ("csum:mode=journal",), names[1:]), ("rebuild", ("csum:mode=rebuild",), names[1:])]
    configs = [c for c in configs if c[0] == "pt" or c[0] in a.modes.split(",")]
    res = {who: {n: [] for n in names} for who, _, _ in configs}
    try:
        for r in range(a.rounds):
            for who, targets, todo in configs:
                s = prepared(*targets)
                if names[0] in todo:
                    res[who][names[0]].append(timed(s.uri, "randread", "4k", 16)[0])
                if names[1] in todo:
                    res[who][names[1]].append(timed(s.uri, "randwrite", "4k", 16)[0])
                if names[2] in todo:
                    res[who][names[2]].append(timed(s.uri, "write", "1M", 4)[1] / (1 << 20))
                s.stop()
            print(f"round {r + 1}: " + "; ".join(
                f"{n}: " + " ".join(f"{who} {res[who][n][-1]:.0f}" for who, _, _ in configs if res[who][n])
                for n in names), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("| workload | mode | csum (median) | passthrough (median) | csum/passthrough per round: min / median / max |")
    print("|---|---|---|---|---|")
    for n in names:
        for who, _, _ in configs:
            if who == "pt" or not res[who][n]:
                continue
            per = sorted(x / y for x, y in zip(res[who][n], res["pt"][n]))
            unit = "MiB/s" if "1M" in n else "IOPS"
            print(f"| {n} | {who} | {statistics.median(res[who][n]):.0f} {unit} | "
                  f"{statistics.median(res['pt'][n]):.0f} {unit} | "
                  f"{per[0]:.2f} / {statistics.median(per):.2f} / {per[-1]:.2f} |")
    print(f"\n({a.rounds} rounds, fio runtime {a.runtime} s, region {a.size}, block_size 4096, "
          "journal 32M, fio ioengine=nbd over Unix sockets; a fresh image per mode and round)")
    if a.json:
        json.dump(res, open(a.json, "w"), indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
