#!/usr/bin/python3
"""How long a live reload holds I/O, under load.

A release server serves a 1 GiB image as a plain file; fio keeps 4k random
writes at QD16 going over NBD while `bowstack reload` cycles the table
plain -> era -> linear over era -> era -> plain, ROUNDS times each with and
without --noflush. The server reports how long new requests waited (from
suspend to resume, `held_us`); this prints p50/p99/max per mode and per
kind of step, and fio's write IOPS with reloads and without (a round with
no reload, same job, before and after) as a ratio."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from benchlib import Server, fio_job  # noqa: E402


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bowstack", required=True)
    ap.add_argument("--rounds", type=int, default=10, help="table cycles per mode (4 reloads each)")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bowstack-reload-", dir=args.dir)
    img = os.path.join(work, "disk.img")
    subprocess.run(["truncate", "-s", "1G", img], check=True)
    plain = {"file": img}
    era = {"target": "era", "devices": {"data": plain}}
    tables = {"plain": plain, "era": era, "linear-era": {"target": "linear", "devices": {"data": era}}}
    for name, t in tables.items():
        with open(os.path.join(work, name + ".json"), "w") as f:
            json.dump(t, f)
    ctl = os.path.join(work, "ctl")
    log = open(os.path.join(work, "server.log"), "w")
    srv = Server([args.bowstack, "serve", "--table", os.path.join(work, "plain.json"), "--unix",
                  os.path.join(work, "nbd.sock"), "--control", ctl], os.path.join(work, "nbd.sock"), log)
    fio_args = ["--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=1G", "--time_based", "--runtime=8"]
    try:
        base1 = fio_job(srv.uri, fio_args)["write"]["iops"]
        held = {"flush": {}, "noflush": {}}
        cycle = ["era", "linear-era", "era", "plain"]
        step_from = "plain"
        # Each mode's reloads run inside one fio job long enough to cover them.
        load_args = fio_args[:-1] + [f"--runtime={max(10, args.rounds * 2)}"]
        for mode in ("flush", "noflush"):
            t = threading.Thread(target=fio_job, args=(srv.uri, load_args))
            t.start()
            time.sleep(1)
            for n in range(args.rounds * 4):
                to = cycle[n % 4]
                cmd = [args.bowstack, "reload", os.path.join(work, to + ".json"), "--json", "--control", ctl]
                if mode == "noflush":
                    cmd.insert(3, "--noflush")
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"reload failed: {out.stdout}{out.stderr}")
                held[mode].setdefault(f"{step_from}->{to}", []).append(json.loads(out.stdout)["held_us"])
                step_from = to
                time.sleep(0.1)
            if not t.is_alive():
                print("note: fio ended before the last reload; raise its runtime", file=sys.stderr)
            t.join()
        base2 = fio_job(srv.uri, fio_args)["write"]["iops"]
    finally:
        srv.stop()
    print(f"reload under fio 4k randwrite QD16, 1 GiB image, {args.rounds * 4} reloads per mode")
    for mode, steps in held.items():
        allv = [v for vs in steps.values() for v in vs]
        print(f"  {mode:8s} held I/O: n={len(allv)} p50={pct(allv, .5)/1000:.2f} ms "
              f"p99={pct(allv, .99)/1000:.2f} ms max={max(allv)/1000:.2f} ms")
        for step, vs in steps.items():
            print(f"    {step:18s} p50={pct(vs, .5)/1000:.2f} ms max={max(vs)/1000:.2f} ms (n={len(vs)})")
    print(f"  fio IOPS without reloads: {base1:.0f} before, {base2:.0f} after; "
          f"median of the two {statistics.median([base1, base2]):.0f}")


if __name__ == "__main__":
    main()
