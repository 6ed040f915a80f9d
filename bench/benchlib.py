"""Helpers shared by the benchmarks: run a command, start and stop an NBD
server on a Unix socket or a loopback TCP port, run one fio job with
ioengine=nbd."""
import json
import os
import signal
import socket
import subprocess
import time


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def wait_sock(path, proc, uri=None):
    """Waits until the server answers on `path` (a Unix socket) or, with
    `uri`, on that URI (TCP)."""
    for _ in range(400):
        if uri or os.path.exists(path):
            if subprocess.run(["nbdinfo", "--size", uri or f"nbd+unix:///?socket={path}"],
                              capture_output=True).returncode == 0:
                return
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.args}")
        time.sleep(0.05)
    raise SystemExit(f"server did not start: {proc.args}")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process on Unix socket `sock`, or on TCP when `tcp_uri`
    (nbd://127.0.0.1:PORT) is given."""
    def __init__(self, argv, sock, log, tcp_uri=None):
        if sock and os.path.exists(sock):
            os.unlink(sock)
        self.sock = sock
        self.tcp_uri = tcp_uri
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
        wait_sock(sock, self.proc, tcp_uri)

    @property
    def uri(self):
        return self.tcp_uri or f"nbd+unix:///?socket={self.sock}"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def fio_job(uri, args):
    """Runs one fio job (ioengine=nbd) with extra `args`; returns fio's JSON
    for the job. A failing fio ends the benchmark with its stderr."""
    cmd = ["fio", "--name=b", "--ioengine=nbd", f"--uri={uri}", "--randrepeat=0",
           "--output-format=json"] + args
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"fio failed: {' '.join(cmd)}\n{out.stderr}")
    return json.loads(out.stdout[out.stdout.index("{"):])["jobs"][0]


def fio(uri, rw, bs, qd, offset, size, runtime):
    """Returns (IOPS, bytes/s, seconds the job ran). Without time_based a
    random job ends once it has written every block of its region, which
    may be long before `runtime`."""
    # Start each measurement with no writeback of earlier steps in flight.
    subprocess.run(["sync"], check=True)
    job = fio_job(uri, [f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}", f"--offset={offset}",
                        f"--size={size}", f"--runtime={runtime}"])["write"]
    return job["iops"], job["bw_bytes"], job["runtime"] / 1000
