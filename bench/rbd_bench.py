#!/usr/bin/python3
"""bowstack serving an RBD image (an rbd leaf) against qemu-nbd serving the
same image through its rbd driver, on a one-node cluster started by
scripts/ceph-cluster.sh (a memstore OSD: this measures the NBD server and
its librbd client path, not disks). fio (ioengine=nbd) runs the same jobs
against each, servers interleaved round by round; reports min/median/max
of the rounds and the ratio of medians (issue 20 aims at >= 1.2).

Every fio run starts on a freshly imported image: a memstore OSD slows
down as its objects are overwritten in small pieces, so without this the
server that runs later meets a slower store."""
import argparse
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
    ("seqread-1m-qd4", ["--rw=read", "--bs=1M", "--iodepth=4"], "bw"),
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
    ap.add_argument("--size", default="512M", help="RBD image size (>= 128M to be worth measuring)")
    ap.add_argument("--dir", default=None, help="where to put the cluster (default: a temp dir)")
    a = ap.parse_args()

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cluster_sh = os.path.join(root, "scripts", "ceph-cluster.sh")
    workdir = tempfile.mkdtemp(prefix="bowstack-rbd-bench-", dir=a.dir)
    cluster = os.path.join(workdir, "ceph")
    conf = os.path.join(cluster, "ceph.conf")
    size_bytes = int(subprocess.check_output(["numfmt", "--from=iec", a.size]).strip())
    # memstore grows to 2-3x the data it holds and stalls writes when full.
    env = dict(os.environ, OSD_MEMSTORE_BYTES=str(max(4 << 30, 6 * size_bytes)))
    subprocess.run([cluster_sh, "start", cluster], check=True, env=env)
    log = open(os.path.join(workdir, "servers.log"), "ab")
    results = {}
    try:
        rbd = ["timeout", "300", "rbd", "-c", conf]
        # A fully written image, so reads hit real objects rather than holes.
        data = os.path.join(workdir, "fill")
        with open(data, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(size_bytes >> 20):
                f.write(chunk)

        def fresh_image():
            subprocess.run(rbd + ["rm", "--no-progress", "rbd/bench"], capture_output=True)
            subprocess.run(rbd + ["import", "--no-progress", data, "rbd/bench"], check=True, capture_output=True)
        table = os.path.join(workdir, "table.json")
        with open(table, "w") as f:
            f.write('{"rbd": {"pool": "rbd", "image": "bench", "conf": "%s"}}\n' % conf)
        servers = {
            "bowstack": lambda sock: [a.bowstack, "serve", "--table", table, "--unix", sock, "--control",
                                      os.path.join(workdir, "bowstack.ctl"), "--log-level", "warn"],
            "qemu-nbd": lambda sock: ["qemu-nbd", "-f", "raw", "-t", "-k", sock, "--cache=writeback", "-e", "16",
                                      f"rbd:rbd/bench:conf={conf}"],
        }
        results = {name: {w[0]: [] for w in WORKLOADS} for name in servers}
        for r in range(a.rounds):
            order = list(servers.items())
            order = order[r % len(order):] + order[:r % len(order)]
            for wname, wargs, metric in WORKLOADS:
                for name, argv in order:
                    fresh_image()
                    sock = os.path.join(workdir, f"{name}.sock")
                    s = Server(argv(sock), sock, log)
                    try:
                        v = run_fio(s.uri, wargs, a.size, a.runtime)[metric]
                    finally:
                        s.stop()
                    results[name][wname].append(v)
                    print(f"round {r + 1}/{a.rounds} {wname:18} {name:10} "
                          f"{v / (1 << 20) if metric == 'bw' else v:10.1f} {'MiB/s' if metric == 'bw' else 'IOPS'}",
                          file=sys.stderr, flush=True)
    finally:
        subprocess.run([cluster_sh, "stop", cluster])
        shutil.rmtree(workdir, ignore_errors=True)

    def fmt(v, metric):
        return f"{v / (1 << 20):.0f} MiB/s" if metric == "bw" else f"{v:.0f} IOPS"

    def mmm(vs, metric):
        return " / ".join(fmt(x, metric) for x in (min(vs), statistics.median(vs), max(vs)))

    # Per-round ratios too: the machine is shared and noisy.
    print("| workload | bowstack min / median / max | qemu-nbd min / median / max | ratio of medians | "
          "ratio per round |")
    print("|---|---|---|---|---|")
    for wname, _, metric in WORKLOADS:
        b, q = results["bowstack"][wname], results["qemu-nbd"][wname]
        per = " ".join(f"{x / y:.2f}" for x, y in zip(b, q))
        print(f"| {wname} | {mmm(b, metric)} | {mmm(q, metric)} | "
              f"{statistics.median(b) / statistics.median(q):.2f} | {per} |")
    print(f"\n({a.rounds} rounds, {a.runtime} s each, image {a.size} on a one-node memstore cluster, "
          f"fio ioengine=nbd over Unix sockets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
