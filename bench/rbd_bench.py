#!/usr/bin/python3
"""bowstack serving an RBD image (an rbd leaf) against qemu-nbd serving the
same image through its rbd driver, on a one-node cluster started by
scripts/ceph-cluster.sh (a memstore OSD: this measures the NBD server and
its librbd client path, not disks). fio (ioengine=nbd) runs the same jobs
against each, servers interleaved round by round; reports min/median/max
of the rounds and the ratio of medians (issue 20 aims at >= 1.2).

Every fio run starts on a freshly imported image: a memstore OSD slows
down as its objects are overwritten in small pieces, so without this the
server that runs later meets a slower store.

With --mirror: a mirror of two RBD images written one leg after the other
(parallel_writes=off), the same mirror writing its legs at once
(parallel_writes=auto) and one RBD image alone, for writes; every run on
fresh blank images (a blank pair starts in sync)."""
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
MIRROR_WORKLOADS = [w for w in WORKLOADS if "write" in w[0]] + [
    ("randwrite-4k-qd1", ["--rw=randwrite", "--bs=4k", "--iodepth=1"], "iops"),
]


def run_fio(uri, args, size, runtime):
    job = fio_job(uri, [f"--size={size}", f"--runtime={runtime}", "--time_based", "--ramp_time=1",
                        "--numjobs=1", "--norandommap"] + args)
    side = job["read"] if job["read"]["io_bytes"] > 0 else job["write"]
    return {"iops": side["iops"], "bw": side["bw_bytes"]}


def status_note(text):
    """The mirror's write threads and leg write latencies, from status --json."""
    def find(n):
        if isinstance(n, dict):
            if n.get("kind") == "mirror":
                return n
            for c in n.get("devices", {}).values():
                for x in (c if isinstance(c, list) else [c]):
                    found = find(x)
                    if found:
                        return found
        elif isinstance(n, list):
            for x in n:
                found = find(x)
                if found:
                    return found
        return None
    try:
        import json
        node = find(json.loads(text).get("tree"))
    except ValueError:
        node = None
    if not node:
        return "(no status)"
    return (f"write_threads {node.get('write_threads')}, write_latency_us "
            f"{[leg.get('write_latency_us') for leg in node.get('legs', [])]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bowstack", required=True)
    ap.add_argument("--runtime", type=int, default=8, help="seconds per fio run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="512M", help="RBD image size (>= 128M to be worth measuring)")
    ap.add_argument("--dir", default=None, help="where to put the cluster (default: a temp dir)")
    ap.add_argument("--mirror", action="store_true",
                    help="a mirror of two RBD images, legs written in turn or at once, vs one image")
    a = ap.parse_args()
    workloads = MIRROR_WORKLOADS if a.mirror else WORKLOADS

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
            for img in ("bench", "bench2"):
                subprocess.run(rbd + ["rm", "--no-progress", f"rbd/{img}"], capture_output=True)
            if a.mirror:
                # md metadata sits before the data: legs 128 MiB larger
                # than the fio region leave room for mdadm's data offset.
                for img in ("bench", "bench2"):
                    subprocess.run(rbd + ["create", "--size", str(size_bytes + (128 << 20)) + "B", f"rbd/{img}"],
                                   check=True, capture_output=True)
            else:
                subprocess.run(rbd + ["import", "--no-progress", data, "rbd/bench"], check=True,
                               capture_output=True)

        def serve(table_json):
            table = os.path.join(workdir, f"table-{abs(hash(table_json))}.json")
            with open(table, "w") as f:
                f.write(table_json)
            return lambda sock: [a.bowstack, "serve", "--table", table, "--unix", sock, "--control",
                                 os.path.join(workdir, "bowstack.ctl"), "--log-level", "warn"]

        leaf = '{"rbd": {"pool": "rbd", "image": "%s", "conf": "%s"}}'
        if a.mirror:
            mirror = ('{"target": "mirror", "params": {"parallel_writes": "%s"}, "devices": {"legs": [' +
                      leaf % ("bench", conf) + ", " + leaf % ("bench2", conf) + "]}}")
            servers = {
                "mirror-parallel": serve(mirror % "auto"),
                "mirror-in-turn": serve(mirror % "off"),
                "one-image": serve(leaf % ("bench", conf)),
            }
        else:
            servers = {
                "bowstack": serve(leaf % ("bench", conf)),
                "qemu-nbd": lambda sock: ["qemu-nbd", "-f", "raw", "-t", "-k", sock, "--cache=writeback", "-e",
                                          "16", f"rbd:rbd/bench:conf={conf}"],
            }
        results = {name: {w[0]: [] for w in workloads} for name in servers}
        for r in range(a.rounds):
            order = list(servers.items())
            order = order[r % len(order):] + order[:r % len(order)]
            for wname, wargs, metric in workloads:
                for name, argv in order:
                    fresh_image()
                    sock = os.path.join(workdir, f"{name}.sock")
                    s = Server(argv(sock), sock, log)
                    try:
                        v = run_fio(s.uri, wargs, a.size, a.runtime)[metric]
                        if a.mirror and name != "one-image":
                            st = subprocess.run([a.bowstack, "status", "--json", "--control",
                                                 os.path.join(workdir, "bowstack.ctl")],
                                                capture_output=True, text=True).stdout
                            print(f"  {name}: {status_note(st)}", file=sys.stderr)
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
    names = list(results)
    peer = names[-1]  # qemu-nbd, or one image alone
    for name in names[:-1]:
        print(f"| workload | {name} min / median / max | {peer} min / median / max | ratio of medians | "
              "ratio per round |")
        print("|---|---|---|---|---|")
        for wname, _, metric in workloads:
            b, q = results[name][wname], results[peer][wname]
            per = " ".join(f"{x / y:.2f}" for x, y in zip(b, q))
            print(f"| {wname} | {mmm(b, metric)} | {mmm(q, metric)} | "
                  f"{statistics.median(b) / statistics.median(q):.2f} | {per} |")
        print()
    print(f"\n({a.rounds} rounds, {a.runtime} s each, image {a.size} on a one-node memstore cluster, "
          f"fio ioengine=nbd over Unix sockets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
