#!/usr/bin/env python3
"""Small reproducers for what the soak (tuning/soak.py) found, one broker each.

    .venv/bin/python tuning/soak_repro.py stall [--conns 64] [--requests 1000]
    .venv/bin/python tuning/soak_repro.py hold
    .venv/bin/python tuning/soak_repro.py claim [--conns 8]
    .venv/bin/python tuning/soak_repro.py logpipe [--drain-kib 16] [--bad-per-s 300]

  stall  A probe connection sends ApiVersions every 5 ms (in its own process) while CONNS
         connections each pipeline REQUESTS ApiVersions requests in one write. Prints the
         probe's round-trip p50/p99/max before and during the burst. With glommio's default
         preempt timer (100 ms) a shard busy with the burst does not look at new socket
         completions until the timer fires, so the probe waits ~100 ms.
  hold   With connection_idle_timeout_ms=3000 and request_read_timeout_ms=2000: an idle
         connection, a stalled frame, and a client that pipelines 200 Fetch requests (1 MiB
         each) and never reads. Prints, every second, which are still open and the broker's
         RSS: the first two are closed by the timeouts, the non-reading one stays open with
         its answers in memory.
  claim  CONNS connections (default 8) each send a frame header claiming 64 MiB and 100
         bytes of it (request_read_timeout_ms=10000). Each claim takes 64 MiB of its shard's
         request-memory budget (max_request_memory_bytes / cores = 128 MiB by default) before
         its body arrives; the budget is a FIFO semaphore, so once it is taken and a claim
         waits, every request of every connection of that shard waits behind it. Prints
         ApiVersions answers of 8 connections opened before and of new connections.

  logpipe  The broker's stderr goes into a pipe that is drained at 16 KiB/s (a slow log
         reader); 300 connections per second send a negative length prefix (one warning line
         each). Prints a probe's ApiVersions round trips before and during.

Broker: target/release/shardlog (or --binary), a temporary data directory, --cores 2.
Extra broker environment: --env NAME=VALUE (repeatable), e.g. --env
SHARDLOG_MAX_INFLIGHT_REQUESTS=8 or --env GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import kwire  # noqa: E402


def start(binary: str, port: int, env: dict, admin: int | None = None) -> tuple[subprocess.Popen, str]:
    d = tempfile.mkdtemp(prefix="shardlog-repro-")
    e = dict(os.environ)
    e.update(env)
    p = subprocess.Popen([binary, "start", "--listen", f"127.0.0.1:{port}", "--admin-listen",
                          f"127.0.0.1:{admin}" if admin else "",
                          "--data-dir", d + "/data", "--cores", "2"],
                         stdout=subprocess.DEVNULL, stderr=open(d + "/broker.log", "wb"), env=e)
    wait_ready(p, port, f"log in {d}/broker.log")
    return p, d


def wait_ready(p: subprocess.Popen, port: int, where: str) -> None:
    """Waits up to 30 s for the broker to answer ApiVersions; kills it and exits if not."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with kwire.Conn("127.0.0.1", port, timeout=2) as c:
                c.api_versions()
                return
        except OSError:
            time.sleep(0.1)
    p.kill()
    raise SystemExit(f"broker did not start; {where}")


def q(v: list[float], f: float) -> float:
    """The f-quantile of sorted values."""
    return v[min(len(v) - 1, int(len(v) * f))]


def rss_mib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    return -1


def state(s: socket.socket) -> str:
    s.setblocking(False)
    try:
        d = s.recv(1, socket.MSG_PEEK)
        return "closed" if d == b"" else "open (answers waiting)"
    except BlockingIOError:
        return "open"
    except ConnectionResetError:
        return "reset"


def probe_main(port: int, seconds: float, out: str) -> None:
    """ApiVersions every 5 ms; an answer that takes over 2 s counts as 2000 ms (and the
    connection is replaced)."""
    c = kwire.Conn("127.0.0.1", port, timeout=2)
    res = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            c.api_versions()
            res.append((time.time(), (time.monotonic() - t0) * 1000))
        except (OSError, ValueError):
            res.append((time.time(), 2000.0))
            c.close()
            try:
                c = kwire.Conn("127.0.0.1", port, timeout=2)
            except OSError:
                pass
        time.sleep(0.005)
    Path(out).write_text(json.dumps(res))


def stall(a, port: int) -> None:
    p, d = start(a.binary, port, a.env)
    try:
        out = d + "/probe.json"
        pr = subprocess.Popen([sys.executable, __file__, "_probe", str(port), "7", out])
        time.sleep(2)
        data = b"".join(kwire.frame(kwire.request_header(kwire.API_VERSIONS, 0, i))
                        for i in range(a.requests))
        socks = []
        t_start = time.time()
        for _ in range(a.conns):
            s = socket.create_connection(("127.0.0.1", port))
            s.setblocking(False)
            try:
                s.send(data)
            except BlockingIOError:
                pass
            socks.append(s)
        time.sleep(3)
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        pr.wait()
        lat = json.loads(Path(out).read_text())
        before = sorted(ms for t, ms in lat if t < t_start)
        during = sorted(ms for t, ms in lat if t >= t_start)

        print(f"probe before the burst: n {len(before)} p50 {q(before, .5):.2f} ms "
              f"max {before[-1]:.2f} ms")
        print(f"probe from the burst on: n {len(during)} p50 {q(during, .5):.2f} ms "
              f"p99 {q(during, .99):.2f} ms max {during[-1]:.2f} ms")
        print("probe answers slower than 20 ms (s after the burst, ms): "
              + str([(round(t - t_start, 3), round(ms)) for t, ms in lat if ms > 20]))
    finally:
        p.terminate()
        p.wait()


def hold(a, port: int) -> None:
    env = {"SHARDLOG_CONNECTION_IDLE_TIMEOUT_MS": "3000", "SHARDLOG_REQUEST_READ_TIMEOUT_MS": "2000",
           **a.env}
    p, _ = start(a.binary, port, env)
    try:
        with kwire.Conn("127.0.0.1", port) as c:
            c.metadata(["repro-fill"])
            time.sleep(0.5)
            v = os.urandom(1000)
            for _ in range(40):
                c.produce("repro-fill", 0, kwire.record_batch([kwire.Record(None, v)] * 1000), acks=1)
        print(f"RSS after filling a 40 MB topic: {rss_mib(p.pid)} MiB")
        idle = socket.create_connection(("127.0.0.1", port))
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(struct.pack(">i", 1000) + b"\0\x12")
        flood = socket.create_connection(("127.0.0.1", port))
        flood.setblocking(False)
        body = kwire.fetch_body("repro-fill", 0, 0, max_wait_ms=0, max_bytes=1 << 20,
                                partition_max_bytes=1 << 20)
        try:
            flood.send(b"".join(kwire.frame(kwire.request_header(kwire.FETCH, 4, i) + body)
                                for i in range(200)))
        except BlockingIOError:
            pass
        for t in range(1, 11):
            time.sleep(1)
            print(f"{t:2} s  RSS {rss_mib(p.pid):5} MiB  idle: {state(idle):24} "
                  f"stalled frame: {state(stalled):24} non-reading Fetch client: {state(flood)}")
    finally:
        p.terminate()
        p.wait()


def claim(a, port: int) -> None:
    admin = port + 1
    env = {"SHARDLOG_REQUEST_READ_TIMEOUT_MS": "10000", **a.env}
    p, _ = start(a.binary, port, env, admin)

    def gauges() -> str:
        import urllib.request
        text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
        v = [line.split()[-1] for line in text.splitlines()
             if line.startswith("shardlog_request_memory_bytes{")]
        return "request memory per shard " + " / ".join(f"{int(x) >> 20} MiB" for x in v)

    def probe(conns: list) -> str:
        res = []
        for c in conns:
            t0 = time.monotonic()
            try:
                c.sock.settimeout(3)
                cid = c.send_request(kwire.API_VERSIONS, 0, b"")
                # An earlier probe's late answer may come first: skip it.
                while kwire.Reader(c.recv_frame()).i32() != cid:
                    pass
                res.append(f"{(time.monotonic() - t0) * 1000:.0f}")
            except OSError:
                res.append("timeout")
        return " ".join(res)

    try:
        good = [kwire.Conn("127.0.0.1", port, timeout=3) for _ in range(8)]
        print(f"RSS at start {rss_mib(p.pid)} MiB; {gauges()}")
        print(f"8 open well-formed connections, ApiVersions ms: {probe(good)}")
        socks = []
        for i in range(a.conns):
            s = socket.socket()
            s.setsockopt(socket.SOL_IP, 24, 1)  # IP_BIND_ADDRESS_NO_PORT
            s.bind((f"127.0.0.{2 + i % 16}", 0))
            s.connect(("127.0.0.1", port))
            s.sendall(struct.pack(">i", 64 << 20) + b"\0" * 100)
            socks.append(s)
        time.sleep(0.5)
        print(f"{a.conns} connections sent 104 bytes each (a frame claiming 64 MiB): "
              f"RSS {rss_mib(p.pid)} MiB; {gauges()}")
        for t in range(4):
            fresh = []
            for _ in range(4):
                try:
                    fresh.append(kwire.Conn("127.0.0.1", port, timeout=3))
                except OSError:
                    pass
            print(f"+{t * 6 + 1:2} s  open connections: {probe(good)}  |  new connections: "
                  f"{probe(fresh)}  ({gauges()})")
            for c in fresh:
                c.close()
            time.sleep(1)
        print("(answers in ms; 'timeout' = no answer within 3 s; the claims are closed by "
              "request_read_timeout_ms = 10 s after they got their memory, the next ones waiting "
              "then take it)")
    finally:
        p.terminate()
        p.wait()


def logpipe(a, port: int) -> None:
    """stderr into a pipe drained at --drain-kib KiB/s (a slow journald); bad frames provoke a
    warning line each; a probe process measures ApiVersions round trips."""
    import threading
    d = tempfile.mkdtemp(prefix="shardlog-repro-")
    e = dict(os.environ)
    e.update(a.env)
    p = subprocess.Popen([a.binary, "start", "--listen", f"127.0.0.1:{port}", "--admin-listen", "",
                          "--data-dir", d + "/data", "--cores", "2"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=e)
    stop = threading.Event()
    drained = [0]

    def drain():
        per_tick = max(1, a.drain_kib * 1024 // 20)
        while not stop.is_set():
            b = p.stderr.read1(per_tick)
            if not b:
                return
            drained[0] += len(b)
            time.sleep(0.05)

    threading.Thread(target=drain, daemon=True).start()
    try:
        wait_ready(p, port, "its stderr is the drained pipe")
        out = d + "/probe.json"
        pr = subprocess.Popen([sys.executable, __file__, "_probe", str(port), "12", out])
        time.sleep(2)
        t_start = time.time()
        bad = 0
        end = time.monotonic() + 8
        while time.monotonic() < end:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.sendall(struct.pack(">i", -1))
                s.close()
                bad += 1
            except OSError:
                pass
            time.sleep(1 / a.bad_per_s)
        pr.wait()
        lat = json.loads(Path(out).read_text())
        before = sorted(ms for t, ms in lat if t < t_start)
        during = sorted(ms for t, ms in lat if t_start <= t < t_start + 8)

        print(f"log drained at {a.drain_kib} KiB/s; {bad} bad frames in 8 s (one warning line each)")
        print(f"probe before: n {len(before)} p50 {q(before, .5):.2f} ms max {before[-1]:.2f} ms")
        print(f"probe during: n {len(during)} p50 {q(during, .5):.2f} ms p99 {q(during, .99):.2f} ms "
              f"max {during[-1]:.2f} ms; no answer within 2 s: {sum(ms >= 2000 for ms in during)}")
    finally:
        stop.set()
        p.kill()
        p.wait()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_probe":
        probe_main(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["stall", "hold", "claim", "logpipe"])
    ap.add_argument("--drain-kib", type=int, default=16, help="logpipe: stderr drained KiB/s")
    ap.add_argument("--bad-per-s", type=float, default=300, help="logpipe: bad frames per second")
    ap.add_argument("--binary", default=str(REPO / "target/release/shardlog"))
    ap.add_argument("--port", type=int, default=59460)
    ap.add_argument("--conns", type=int, default=None)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    a = ap.parse_args()
    a.env = dict(kv.split("=", 1) for kv in a.env)
    if a.conns is None:
        a.conns = {"stall": 64, "claim": 8}.get(a.what, 20)
    {"stall": stall, "hold": hold, "claim": claim, "logpipe": logpipe}[a.what](a, a.port)


if __name__ == "__main__":
    main()
