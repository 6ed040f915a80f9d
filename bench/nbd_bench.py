#!/usr/bin/python3
"""Runs fio (ioengine=nbd) against bowstack and peer NBD servers serving the
same backing file, over Unix sockets and loopback TCP, interleaving servers
round by round so machine noise hits all of them alike. Reports min /
median / max of the rounds per server and the bowstack/peer ratio of each
round (docs/performance.md).

Exit status is 1 when a "must" ratio (median bowstack / nbdkit file >= 1.0
on random I/O) fails."""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from benchlib import Server, fio_job, free_port

WORKLOADS = [
    # name, fio args, metric
    ("randread-4k-qd16", ["--rw=randread", "--bs=4k", "--iodepth=16"], "iops"),
    ("randwrite-4k-qd16", ["--rw=randwrite", "--bs=4k", "--iodepth=16"], "iops"),
    ("randread-4k-qd1", ["--rw=randread", "--bs=4k", "--iodepth=1"], "iops"),
    ("seqread-1m-qd4", ["--rw=read", "--bs=1M", "--iodepth=4"], "bw"),
    ("seqwrite-1m-qd4", ["--rw=write", "--bs=1M", "--iodepth=4"], "bw"),
]
MUST = ("randread-4k-qd16", "randwrite-4k-qd16")


def run_fio(uri, args, size, runtime):
    job = fio_job(uri, [f"--size={size}", f"--runtime={runtime}", "--time_based", "--ramp_time=1",
                        "--numjobs=1", "--norandommap"] + args)
    side = job["read"] if job["read"]["io_bytes"] > 0 else job["write"]
    return {"iops": side["iops"], "bw": side["bw_bytes"]}


def server_argv(name, a, image, workdir, sock, port):
    """argv of server `name` on Unix socket `sock`, or TCP `port` when set."""
    if name in ("bowstack", "baseline"):
        binary = a.bowstack if name == "bowstack" else a.baseline
        where = ["--listen", f"127.0.0.1:{port}"] if port else ["--unix", sock]
        return [binary, "serve", image, *where, "--control", os.path.join(workdir, f"{name}.ctl"),
                "--log-level", "warn"]
    if name == "nbdkit-file":
        where = ["-i", "127.0.0.1", "-p", str(port)] if port else ["-U", sock]
        return ["nbdkit", "-f", *where, "file", image]
    where = ["-b", "127.0.0.1", "-p", str(port)] if port else ["-k", sock]
    return ["qemu-nbd", "-f", "raw", "-t", *where, "--cache=writeback", "--aio=threads", "-e", "16", image]


def fmt_value(v, metric):
    return f"{v / (1 << 20):.0f}" if metric == "bw" else f"{v:.0f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bowstack", required=True)
    ap.add_argument("--runtime", type=int, default=8, help="seconds per fio run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="1G", help="backing file size")
    ap.add_argument("--transport", choices=["unix", "tcp", "both"], default="both")
    ap.add_argument("--workloads", default=",".join(w[0] for w in WORKLOADS),
                    help="comma-separated subset of: " + ", ".join(w[0] for w in WORKLOADS))
    ap.add_argument("--dir", default=None, help="where to put the backing file (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write results as JSON here")
    ap.add_argument("--baseline", default=None,
                    help="another bowstack binary (an older build) to measure in the same rounds")
    a = ap.parse_args()
    wanted = a.workloads.split(",")
    workloads = [w for w in WORKLOADS if w[0] in wanted]
    if len(workloads) != len(wanted):
        raise SystemExit(f"unknown workload in {a.workloads}")
    transports = ["unix", "tcp"] if a.transport == "both" else [a.transport]

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

    names = ["bowstack", "nbdkit-file", "qemu-nbd"] + (["baseline"] if a.baseline else [])
    log = open(os.path.join(workdir, "servers.log"), "ab")
    results = {t: {n: {w[0]: [] for w in workloads} for n in names} for t in transports}
    try:
        for r in range(a.rounds):
            # The server that runs first inherits the previous workload's
            # writeback; rotate the order so each server takes that turn.
            order = names[r % len(names):] + names[:r % len(names)]
            for t in transports:
                for wname, wargs, metric in workloads:
                    for name in order:
                        sock = os.path.join(workdir, f"{name}.sock")
                        port = free_port() if t == "tcp" else None
                        s = Server(server_argv(name, a, image, workdir, sock, port), None if port else sock,
                                   log, f"nbd://127.0.0.1:{port}" if port else None)
                        try:
                            v = run_fio(s.uri, wargs, a.size, a.runtime)[metric]
                        finally:
                            s.stop()
                        results[t][name][wname].append(v)
                        print(f"round {r + 1}/{a.rounds} {t:4} {wname:18} {name:12} "
                              f"{fmt_value(v, metric):>8} {'MiB/s' if metric == 'bw' else 'IOPS'}",
                              file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    failed = False
    lines = []
    for t in transports:
        lines.append(f"\n### {'Unix socket' if t == 'unix' else 'TCP, 127.0.0.1'}\n")
        lines.append("| workload | bowstack min / median / max | nbdkit file | qemu-nbd | "
                     "bowstack/nbdkit per round (median) | bowstack/qemu-nbd per round (median) |")
        lines.append("|---|---|---|---|---|---|")
        for wname, _, metric in workloads:
            unit = "MiB/s" if metric == "bw" else "IOPS"
            cells = []
            for n in ("bowstack", "nbdkit-file", "qemu-nbd"):
                v = results[t][n][wname]
                cells.append(" / ".join(fmt_value(x, metric) for x in (min(v), statistics.median(v), max(v))) +
                             f" {unit}")
            ratios = []
            for peer in ("nbdkit-file", "qemu-nbd"):
                per = [x / y for x, y in zip(results[t]["bowstack"][wname], results[t][peer][wname])]
                ratios.append(f"{' '.join(f'{x:.2f}' for x in per)} ({statistics.median(per):.2f})")
                if peer == "nbdkit-file" and wname in MUST:
                    failed |= statistics.median(per) < 1.0
            lines.append(f"| {wname} | {' | '.join(cells)} | {' | '.join(ratios)} |")
        if a.baseline:
            lines.append("")
            lines.append("| workload | bowstack/baseline per round | median |")
            lines.append("|---|---|---|")
            for wname, _, _ in workloads:
                per = [x / y for x, y in zip(results[t]["bowstack"][wname], results[t]["baseline"][wname])]
                lines.append(f"| {wname} | {' '.join(f'{x:.2f}' for x in per)} | {statistics.median(per):.2f} |")
    print("\n".join(lines))
    print(f"\n({a.rounds} rounds, {a.runtime} s each, backing file {a.size}, fio ioengine=nbd, "
          f"servers alternating)")
    print("must: median bowstack/nbdkit >= 1.0 on random 4k QD16 ->", "FAIL" if failed else "PASS")
    if a.json:
        json.dump(results, open(a.json, "w"), indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
