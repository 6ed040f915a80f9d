#!/usr/bin/python3
"""Runs fio (ioengine=nbd) against bowstack and peer NBD servers serving the
same backing file, interleaving servers round by round so machine noise hits
all of them alike, and reports the median of the rounds with ratios.

Exit status is 1 when a "must" ratio (bowstack / nbdkit file >= 1.0) fails."""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from benchlib import Server, fio_job

WORKLOADS = [
    # name, fio args, metric
    ("randread-4k-qd16", ["--rw=randread", "--bs=4k", "--iodepth=16"], "iops"),
    ("randwrite-4k-qd16", ["--rw=randwrite", "--bs=4k", "--iodepth=16"], "iops"),
    ("seqwrite-1m-qd4", ["--rw=write", "--bs=1M", "--iodepth=4"], "bw"),
]


def run_fio(uri, args, size, runtime):
    job = fio_job(uri, [f"--size={size}", f"--runtime={runtime}", "--time_based", "--ramp_time=1",
                        "--numjobs=1", "--norandommap"] + args)
    side = job["read"] if job["read"]["io_bytes"] > 0 else job["write"]
    return {"iops": side["iops"], "bw": side["bw_bytes"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bowstack", required=True)
    ap.add_argument("--runtime", type=int, default=8, help="seconds per fio run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="1G", help="backing file size")
    ap.add_argument("--dir", default=None, help="where to put the backing file (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write results as JSON here")
    ap.add_argument("--baseline", default=None,
                    help="another bowstack binary (an older build) to measure in the same rounds")
    a = ap.parse_args()

    workdir = tempfile.mkdtemp(prefix="bowstack-bench-", dir=a.dir)
    image = os.path.join(workdir, "backing.img")
    size_bytes = int(subprocess.check_output(["numfmt", "--from=iec", a.size]).strip())
    # A fully written backing file, so reads hit real data rather than holes.
    with open(image, "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(size_bytes >> 20):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())

    # name -> argv serving the image on a socket
    servers = {
        "bowstack": lambda sock: [a.bowstack, "serve", image, "--unix", sock, "--control",
                                  os.path.join(workdir, "bowstack.ctl"), "--log-level", "warn"],
        "nbdkit-file": lambda sock: ["nbdkit", "-f", "-U", sock, "file", image],
        "qemu-nbd": lambda sock: ["qemu-nbd", "-f", "raw", "-t", "-k", sock, "--cache=writeback",
                                  "--aio=threads", "-e", "16", image],
    }
    if a.baseline:
        servers["baseline"] = lambda sock: [a.baseline, "serve", image, "--unix", sock, "--control",
                                            os.path.join(workdir, "baseline.ctl"), "--log-level", "warn"]
    log = open(os.path.join(workdir, "servers.log"), "ab")
    results = {name: {w[0]: [] for w in WORKLOADS} for name in servers}
    try:
        for r in range(a.rounds):
            # The server that runs first inherits the previous workload's
            # writeback; rotate the order so each server takes that turn.
            order = list(servers.items())
            order = order[r % len(order):] + order[:r % len(order)]
            for wname, wargs, metric in WORKLOADS:
                for name, argv in order:
                    sock = os.path.join(workdir, f"{name}.sock")
                    s = Server(argv(sock), sock, log)
                    try:
                        v = run_fio(s.uri, wargs, a.size, a.runtime)[metric]
                    finally:
                        s.stop()
                    results[name][wname].append(v)
                    print(f"round {r + 1}/{a.rounds} {wname:18} {name:12} "
                          f"{v / (1 << 20) if metric == 'bw' else v:12.1f} {'MiB/s' if metric == 'bw' else 'IOPS'}",
                          file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    med = {s: {w: statistics.median(v) for w, v in ws.items()} for s, ws in results.items()}
    lines = []
    lines.append(f"| workload | bowstack | nbdkit file | qemu-nbd | bowstack/nbdkit | bowstack/qemu-nbd |")
    lines.append("|---|---|---|---|---|---|")
    failed = False
    for wname, _, metric in WORKLOADS:
        fmt = (lambda v: f"{v / (1 << 20):.0f} MiB/s") if metric == "bw" else (lambda v: f"{v:.0f} IOPS")
        b, k, q = med["bowstack"][wname], med["nbdkit-file"][wname], med["qemu-nbd"][wname]
        rk, rq = b / k, b / q
        failed |= rk < 1.0
        lines.append(f"| {wname} | {fmt(b)} | {fmt(k)} | {fmt(q)} | {rk:.2f} | {rq:.2f} |")
    if a.baseline:
        lines.append("")
        lines.append("| workload | bowstack/baseline per round | median |")
        lines.append("|---|---|---|")
        for wname, _, _ in WORKLOADS:
            per = [x / y for x, y in zip(results["bowstack"][wname], results["baseline"][wname])]
            lines.append(f"| {wname} | {' '.join(f'{x:.2f}' for x in per)} | {statistics.median(per):.2f} |")
    print("\n".join(lines))
    print(f"\n(median of {a.rounds} rounds, {a.runtime} s each, backing file {a.size}, "
          f"fio ioengine=nbd over Unix sockets)")
    print("must: every bowstack/nbdkit ratio >= 1.0 ->", "FAIL" if failed else "PASS")
    if a.json:
        json.dump({"median": med, "raw": results}, open(a.json, "w"), indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
