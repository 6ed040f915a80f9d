#!/usr/bin/python3
"""mirror benchmarks, ratios against peers measured in the same run (rounds
interleaved), fio ioengine=nbd over Unix sockets:

1. 2-leg mirror vs passthrough (one plain file export of the mirror's size),
   each on fresh sparse images whose region is written once (1M sequential)
   before the timed runs:
   - 4k random reads QD16 (read_policy balance);             aim >= 1.0
   - 4k random writes QD16;                                  reported
   - 1M sequential writes QD4;                               reported
   with the mirror's region_size (--region-size, 64K) and a large one
   (--big-region, 64M, mdadm's own default for legs this size): a random
   write into a clean region waits for its bit to be made durable on every
   leg, so the region size decides how often that happens;
2. Sync throughput vs `dd bs=1M count=N conv=fsync` of the same N MiB of
   the array's data (non-sparse), sync_max unlimited, no client I/O:
                                                             aim >= 0.5
   - recovery: a reload adds a blank leg to a 1-leg mirror full of data;
     time from the reload to the leg's state in_sync (its last metadata
     commit flushes the leg); dd copies leg 0's data area to a new file;
   - resync: the whole array written, then rewritten by nbdcopy and the
     server killed (-9) at once, before the bits are cleared; time from the
     restart to resync_pending_regions 0 plus an fsync of
     the copied-to leg, bytes = regions resynced (from the log) x
     region_size, less the time the same start, wait and fsync take on
     the clean legs afterwards (start-up); dd copies leg 0's data area over leg 1's in place
     (conv=notrunc), as the resync does.

min/median/max over the rounds.
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import Server, fio, fio_job, sh

MiB = 1 << 20


def mirror_node(ctl, bowstack):
    out = subprocess.run([bowstack, "status", "--control", ctl, "--json"], capture_output=True, text=True,
                         check=True).stdout

    def find(n):
        if isinstance(n, dict):
            if n.get("kind") == "mirror":
                return n
            for c in n.get("devices", {}).values():
                for x in c if isinstance(c, list) else [c]:
                    r = find(x)
                    if r is not None:
                        return r
        return None

    return find(json.loads(out)["tree"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bowstack", required=True)
    ap.add_argument("--runtime", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--leg-mib", type=int, default=1024, help="leg size for the fio runs, MiB")
    ap.add_argument("--sync-mib", type=int, default=512, help="leg size for the sync runs, MiB")
    ap.add_argument("--region-size", default="64K")
    ap.add_argument("--big-region", default="64M", help="a second mirror config for the fio runs ('' for none)")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--skip", default="", help="comma-separated: io, recover, resync")
    a = ap.parse_args()
    skip = set(a.skip.split(",")) - {""}

    work = tempfile.mkdtemp(prefix="bowstack-mirrorbench-", dir=a.dir)
    log = open(os.path.join(work, "servers.log"), "ab")
    sock = os.path.join(work, "s.sock")
    ctl = os.path.join(work, "ctl")
    legs = [os.path.join(work, f"leg{i}") for i in range(3)]
    img = os.path.join(work, "img")
    copy = os.path.join(work, "copy")

    def clean():
        for p in legs + [img, copy]:
            if os.path.exists(p):
                os.unlink(p)

    def table(paths, leg_mib, region=None):
        t = {"target": "mirror", "params": {"region_size": region or a.region_size},
             "devices": {"legs": [{"file": p, "create": f"{leg_mib}M"} for p in paths]}}
        path = os.path.join(work, f"t{len(paths)}.json")
        with open(path, "w") as f:
            json.dump(t, f)
        return path

    def serve_table(path):
        return Server([a.bowstack, "serve", "--table", path, "--unix", sock, "--control", ctl,
                       "--log-level", "info"], sock, log)

    def mirror_size(leg_mib):
        # What the mirror exports: a probe with two sparse legs.
        clean()
        s = serve_table(table(legs[:2], leg_mib))
        size = int(sh(["nbdinfo", "--size", s.uri]).stdout)
        s.stop()
        clean()
        return size

    def wait(pred, what, timeout=600, step=0.02):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            m = mirror_node(ctl, a.bowstack)
            if pred(m):
                return time.monotonic()
            time.sleep(step)
        raise SystemExit(f"timed out waiting for {what}")

    def settle(t, what):
        """Serves table `t` until no region awaits a resync and no job runs,
        fsyncs leg 1 (dd's time includes its fsync: so does this one; the
        server flushes the legs only when it marks them clean), then stops.
        Returns the time the fsync ended (the stop is not timed)."""
        s = serve_table(t)
        wait(lambda m: m["resync_pending_regions"] == 0 and m["sync_action"] == "idle", what)
        fd = os.open(legs[1], os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        done = time.monotonic()
        s.stop()
        return done

    def timed(uri, rw, bs, qd, size):
        args = [f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}", f"--size={size}",
                f"--runtime={a.runtime}", "--time_based"]
        sh(["sync"])
        job = fio_job(uri, args)
        side = job["read"] if "read" in rw else job["write"]
        return side["iops"], side["bw_bytes"]

    def dd_copy(src, offset, n_mib, dst=None):
        # Into a new file (as a blank leg), or over `dst` in place (as a
        # resync overwrites a leg's allocated blocks).
        sh(["sync"])
        t0 = time.monotonic()
        if dst is None:
            sh(["dd", f"if={src}", f"of={copy}", "bs=1M", f"skip={offset // MiB}", f"count={n_mib}",
                "conv=fsync", "status=none"])
        else:
            sh(["dd", f"if={src}", f"of={dst}", "bs=1M", f"skip={offset // MiB}", f"seek={offset // MiB}",
                f"count={n_mib}", "conv=fsync,notrunc", "status=none"])
        dt = time.monotonic() - t0
        if dst is None:
            os.unlink(copy)
        return n_mib * MiB / dt

    names = ["randread 4k QD16", "randwrite 4k QD16", "write 1M QD4"]
    mirrors = {"mirror": a.region_size}
    if a.big_region:
        mirrors[f"mirror {a.big_region}"] = a.big_region
    res = {"pt": {n: [] for n in names}, **{who: {n: [] for n in names} for who in mirrors},
           "recover": [], "recover_dd": [], "resync": [], "resync_raw": [], "resync_dd": [], "resync_bytes": []}
    try:
        io_size = mirror_size(a.leg_mib) if "io" not in skip else 0
        for r in range(a.rounds):
            if "io" not in skip:
                for who in ["pt"] + list(mirrors):
                    clean()
                    if who == "pt":
                        sh(["truncate", "-s", str(io_size), img])
                        s = Server([a.bowstack, "serve", img, "--unix", sock, "--control", ctl, "--log-level",
                                    "warn"], sock, log)
                    else:
                        s = serve_table(table(legs[:2], a.leg_mib, mirrors[who]))
                    fio(s.uri, "write", "1M", 4, 0, io_size, 600)
                    res[who][names[0]].append(timed(s.uri, "randread", "4k", 16, io_size)[0])
                    res[who][names[1]].append(timed(s.uri, "randwrite", "4k", 16, io_size)[0])
                    res[who][names[2]].append(timed(s.uri, "write", "1M", 4, io_size)[1] / MiB)
                    s.stop()
            if "recover" not in skip:
                clean()
                s = serve_table(table(legs[:1], a.sync_mib))
                size = int(sh(["nbdinfo", "--size", s.uri]).stdout)
                fio(s.uri, "write", "1M", 4, 0, size, 600)
                wait(lambda m: m["state"] == "clean", "clean")
                sh(["sync"])
                t0 = time.monotonic()
                sh([a.bowstack, "reload", "--control", ctl, table(legs[:2], a.sync_mib)])
                t1 = wait(lambda m: m["legs"][1]["state"] == "in_sync" and m["sync_action"] == "idle",
                          "recovery")
                res["recover"].append(size / (t1 - t0))
                s.stop()
                offset = int(re.search(r"Data Offset : (\d+)", sh(["mdadm", "--examine", legs[0]]).stdout)
                             .group(1)) * 512
                res["recover_dd"].append(dd_copy(legs[0], offset, size // MiB))
            if "resync" not in skip:
                clean()
                t = table(legs[:2], a.sync_mib)
                s = serve_table(t)
                size = int(sh(["nbdinfo", "--size", s.uri]).stdout)
                # Bits are cleared a second or so after a region's last
                # write: rewrite the whole array (nbdcopy from a file in the
                # page cache) and kill at once, so that most regions are
                # dirty.
                src = os.path.join(work, "src")
                if not os.path.exists(src) or os.path.getsize(src) != size:
                    with open(src, "wb") as f:
                        for _ in range(size // MiB):
                            f.write(os.urandom(MiB))
                fio(s.uri, "write", "1M", 4, 0, size, 600)
                sh(["nbdcopy", src, s.uri])
                s.proc.send_signal(signal.SIGKILL)
                s.proc.wait()
                log.flush()
                before = open(os.path.join(work, "servers.log"), "rb").read().count(b"not clean")
                t0 = time.monotonic()
                t1 = settle(t, "resync")
                text = open(os.path.join(work, "servers.log"), "rb").read().decode(errors="replace")
                found = re.findall(r"not clean; (\d+) of (\d+) regions", text)
                if text.count("not clean") <= before or not found:
                    raise SystemExit("the restart after kill -9 logged no resync")
                # The same start, wait and fsync on the now clean legs: the
                # start-up cost, taken off the resync's time.
                c0 = time.monotonic()
                c1 = settle(t, "start")
                region = mirror_region(a.region_size)
                n = int(found[-1][0]) * region
                res["resync"].append(n / max(1e-3, (t1 - t0) - (c1 - c0)))
                res["resync_raw"].append(n / (t1 - t0))
                res["resync_bytes"].append(n)
                offset = int(re.search(r"Data Offset : (\d+)", sh(["mdadm", "--examine", legs[0]]).stdout)
                             .group(1)) * 512
                res["resync_dd"].append(dd_copy(legs[0], offset, max(1, n // MiB), dst=legs[1]))
            line = []
            for n in names:
                if res["pt"][n]:
                    line.append(f"{n}: " + " ".join(f"{who} {res[who][n][-1]:.0f}" for who in ["pt"] + list(mirrors)))
            for k in ("recover", "resync"):
                if res[k]:
                    line.append(f"{k} {res[k][-1] / MiB:.0f} MiB/s dd {res[k + '_dd'][-1] / MiB:.0f} MiB/s")
            print(f"round {r + 1}: " + "; ".join(line), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def mmm(xs, ys):
        per = sorted(x / y for x, y in zip(xs, ys))
        return f"{per[0]:.2f} / {statistics.median(per):.2f} / {per[-1]:.2f}"

    if res["pt"][names[0]]:
        print("| workload | region_size | mirror, 2 legs (median) | passthrough (median) | mirror/passthrough "
              "per round: min / median / max |")
        print("|---|---|---|---|---|")
        for n in names:
            unit = "MiB/s" if "1M" in n else "IOPS"
            for who, region in mirrors.items():
                print(f"| {n} | {region} | {statistics.median(res[who][n]):.0f} {unit} | "
                      f"{statistics.median(res['pt'][n]):.0f} {unit} | {mmm(res[who][n], res['pt'][n])} |")
        print()
    if res["recover"] or res["resync"]:
        print("| sync | mirror (median) | dd of the same size (median) | mirror/dd per round: min / median / max |")
        print("|---|---|---|---|")
        for k in ("recover", "resync"):
            if res[k]:
                print(f"| {k} | {statistics.median(res[k]) / MiB:.0f} MiB/s | "
                      f"{statistics.median(res[k + '_dd']) / MiB:.0f} MiB/s | {mmm(res[k], res[k + '_dd'])} |")
        if res["resync_raw"]:
            print(f"| resync, start-up included | {statistics.median(res['resync_raw']) / MiB:.0f} MiB/s | "
                  f"{statistics.median(res['resync_dd']) / MiB:.0f} MiB/s | {mmm(res['resync_raw'], res['resync_dd'])} |")
        if res["resync_bytes"]:
            print(f"\n(resync covered {', '.join(str(b // MiB) for b in res['resync_bytes'])} MiB per round)")
    print(f"\n({a.rounds} rounds, fio runtime {a.runtime} s, fio legs {a.leg_mib} MiB, sync legs {a.sync_mib} MiB, "
          f"region_size {a.region_size}, fio ioengine=nbd over Unix sockets; fresh images per round)")
    if a.json:
        json.dump(res, open(a.json, "w"), indent=2)
    return 0


def mirror_region(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


if __name__ == "__main__":
    sys.exit(main())
