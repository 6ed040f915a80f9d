#!/usr/bin/python3
"""TLS overhead: fio (ioengine=nbd) against bowstack and nbdkit's file plugin,
each plain and with --tls=require (X.509), serving the same backing file
over Unix sockets. Servers alternate within each round and the order
rotates between rounds, so machine noise hits all of them alike; reports
min/median/max of the rounds and the TLS/plain ratio of each server.

fio's nbd engine refuses file names in URIs, so the client finds the CA in
$HOME/.pki/libnbd: the script points HOME at its own directory."""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import fio_job

WORKLOADS = [
    # name, fio args, metric
    ("randread-4k-qd16", ["--rw=randread", "--bs=4k", "--iodepth=16"], "iops"),
    ("randwrite-4k-qd16", ["--rw=randwrite", "--bs=4k", "--iodepth=16"], "iops"),
    ("randread-4k-qd1", ["--rw=randread", "--bs=4k", "--iodepth=1"], "iops"),
    ("seqread-1m-qd4", ["--rw=read", "--bs=1M", "--iodepth=4"], "bw"),
    ("seqwrite-1m-qd4", ["--rw=write", "--bs=1M", "--iodepth=4"], "bw"),
]


def make_pki(d):
    """A CA and a server certificate for localhost (the name libnbd checks
    on Unix sockets), with the commands of docs/tls.md."""
    os.makedirs(d)

    def run(*args, out=None):
        with open(os.path.join(d, out), "w") if out else open(os.devnull, "w") as f:
            subprocess.run(args, cwd=d, check=True, stdout=f, stderr=subprocess.DEVNULL)

    with open(os.path.join(d, "ca.info"), "w") as f:
        f.write("cn = bench CA\nca\ncert_signing_key\nexpiration_days = 2\n")
    with open(os.path.join(d, "server.info"), "w") as f:
        f.write("cn = localhost\ndns_name = localhost\ntls_www_server\nencryption_key\nsigning_key\n"
                "expiration_days = 2\n")
    run("certtool", "--generate-privkey", out="ca-key.pem")
    run("certtool", "--generate-self-signed", "--load-privkey", "ca-key.pem", "--template", "ca.info",
        "--outfile", "ca-cert.pem")
    run("certtool", "--generate-privkey", out="server-key.pem")
    run("certtool", "--generate-certificate", "--load-ca-certificate", "ca-cert.pem", "--load-ca-privkey",
        "ca-key.pem", "--load-privkey", "server-key.pem", "--template", "server.info", "--outfile",
        "server-cert.pem")


class Server:
    def __init__(self, argv, sock, tls, env, log):
        if os.path.exists(sock):
            os.unlink(sock)
        self.uri = f"nbd{'s' if tls else ''}+unix:///?socket={sock}"
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
        for _ in range(400):
            if os.path.exists(sock) and subprocess.run(["nbdinfo", "--size", self.uri], env=env,
                                                       capture_output=True).returncode == 0:
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {argv}")
            time.sleep(0.05)
        raise SystemExit(f"server did not start: {argv}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bowstack", required=True)
    ap.add_argument("--runtime", type=int, default=6, help="seconds per fio run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="512M", help="backing file size")
    ap.add_argument("--no-nbdkit", action="store_true", help="measure bowstack only")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="bowstack-tlsbench-")
    pki = os.path.join(work, "pki")
    make_pki(pki)
    os.makedirs(os.path.join(work, "home", ".pki", "libnbd"))
    shutil.copy(os.path.join(pki, "ca-cert.pem"), os.path.join(work, "home", ".pki", "libnbd"))
    env = dict(os.environ, HOME=os.path.join(work, "home"))
    os.environ["HOME"] = env["HOME"]  # fio_job runs fio with this environment
    image = os.path.join(work, "backing.img")
    size_bytes = int(subprocess.check_output(["numfmt", "--from=iec", a.size]).strip())
    with open(image, "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(size_bytes >> 20):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())

    def bowstack(tls):
        extra = ["--tls=require", f"--tls-certificates={pki}"] if tls else []
        return lambda sock: [a.bowstack, "serve", image, "--unix", sock, "--control",
                             os.path.join(work, "bowstack.ctl"), "--log-level", "warn"] + extra

    def nbdkit(tls):
        extra = ["--tls=require", f"--tls-certificates={pki}"] if tls else []
        return lambda sock: ["nbdkit", "-f", "-U", sock] + extra + ["file", image]

    servers = {"bowstack": (bowstack(False), False), "bowstack-tls": (bowstack(True), True)}
    if not a.no_nbdkit:
        servers["nbdkit"] = (nbdkit(False), False)
        servers["nbdkit-tls"] = (nbdkit(True), True)
    log = open(os.path.join(work, "servers.log"), "ab")
    results = {name: {w[0]: [] for w in WORKLOADS} for name in servers}
    try:
        for r in range(a.rounds):
            order = list(servers.items())
            order = order[r % len(order):] + order[:r % len(order)]
            for wname, wargs, metric in WORKLOADS:
                for name, (argv, tls) in order:
                    sock = os.path.join(work, f"{name}.sock")
                    s = Server(argv(sock), sock, tls, env, log)
                    try:
                        job = fio_job(s.uri, [f"--size={a.size}", f"--runtime={a.runtime}", "--time_based",
                                              "--ramp_time=1", "--numjobs=1", "--norandommap"] + wargs)
                    finally:
                        s.stop()
                    side = job["read"] if job["read"]["io_bytes"] > 0 else job["write"]
                    v = side["iops"] if metric == "iops" else side["bw_bytes"]
                    results[name][wname].append(v)
                    print(f"round {r + 1}/{a.rounds} {wname:18} {name:13} "
                          f"{v / (1 << 20) if metric == 'bw' else v:10.1f} {'MiB/s' if metric == 'bw' else 'IOPS'}",
                          file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def fmt(metric, v):
        return f"{v / (1 << 20):.0f}" if metric == "bw" else f"{v / 1000:.1f}k"

    names = list(servers)
    print("| workload | " + " | ".join(f"{n} min/med/max" for n in names) + " | " +
          " | ".join(f"{n}: TLS/plain" for n in names if not n.endswith("-tls")) + " |")
    print("|---" * (1 + len(names) + len(names) // 2) + "|")
    for wname, _, metric in WORKLOADS:
        cells = []
        for n in names:
            v = results[n][wname]
            cells.append("/".join(fmt(metric, x) for x in (min(v), statistics.median(v), max(v))))
        ratios = []
        for n in names:
            if n.endswith("-tls"):
                continue
            ratios.append(f"{statistics.median(results[n + '-tls'][wname]) / statistics.median(results[n][wname]):.2f}")
        unit = "MiB/s" if metric == "bw" else "IOPS"
        print(f"| {wname} ({unit}) | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    print(f"\n({a.rounds} alternating rounds, {a.runtime} s each, backing file {a.size}, "
          "fio ioengine=nbd over Unix sockets, TLS 1.3 X.509)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
