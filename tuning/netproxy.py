#!/usr/bin/env python3
"""netproxy: a TCP proxy that delays, throttles, stalls and resets connections, changed at run
time through a control socket. Used by tuning/netfault/cluster.py (`NetCluster(proxies=True)`)
to put latency and connection faults between brokers only; usable on its own too.

Serve (one process; every `--listen NAME=HOST:PORT=TARGET_HOST:TARGET_PORT` accepts on
HOST:PORT and forwards each connection to TARGET):

    netproxy.py serve --listen kafka=10.77.0.11:9092=127.0.0.1:19092 \\
        --listen controller=10.77.0.11:9093=127.0.0.1:19093 \\
        --peers 10.77.0.12,10.77.0.13 --control /tmp/p1.sock

**Faults apply only to connections whose source address is in `--peers`** (the other brokers);
every other connection (clients) is forwarded untouched, whatever the rules say.

Rules (at most one per (peer, listener) pair; `*` matches any; the most specific wins:
(ip, name) > (ip, *) > (*, name) > (*, *)):
- `delay_ms` + `jitter_ms`: every chunk read (up to 64 KiB, as it arrives) is delivered
  `delay_ms + uniform(0, jitter_ms)` after it was read, never before the chunk read before it
  on the same connection and direction (order kept: TCP cannot reorder within a connection).
  Both directions of a connection are delayed, so a request/answer round trip takes twice the
  delay.
- `bandwidth_bps`: bytes per second per connection and direction (0 = unlimited).
- `blackhole`: stop forwarding: nothing is read from or written to either side of a matching
  connection (the sender's kernel buffers fill, then its writes block) until the rule goes;
  then everything held is delivered. New matching connections are accepted and held the same
  way. (Unlike a dropped link the connect succeeds; only application timeouts fire.)
- A rule change applies to chunks read after it; chunks already queued keep their delivery time.

Control: a Unix socket (path; reachable from any network namespace), one JSON object per
line, one JSON answer per line (`{"ok": true, ...}` or `{"ok": false, "error": "..."}`):

    {"cmd": "set", "peer": "10.77.0.12"|"*", "listener": "kafka"|"*", "delay_ms": 100,
     "jitter_ms": 50, "bandwidth_bps": 0, "blackhole": false}
    {"cmd": "unset", "peer": ..., "listener": ...}
    {"cmd": "clear"}                      all rules removed (held connections resume)
    {"cmd": "reset", "peer": "*", "listener": "*"}
                                          matching peer connections closed now with a TCP RST
                                          on both sides; answers {"reset": n}
    {"cmd": "status"}                     rules, open connections, counters

From a shell: `netproxy.py ctl /tmp/p1.sock '{"cmd": "status"}'`. SIGTERM or SIGINT stops it.

Bounds: at most `--max-conns` connections (more are closed at once), `--queue-bytes` held per
connection and direction (beyond it the proxy stops reading that side until the queue drains,
so with a delay D a connection carries at most queue-bytes / D bytes per second), 64 KiB per
control line, 16 control connections.

The accepted side of every connection gets TCP keepalive and a 5 s TCP_USER_TIMEOUT (the values
the brokers use between themselves), so a connection whose network leg dies is closed on the
forwarded side too, as the broker would have seen it without the proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import struct
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass

CHUNK = 64 * 1024
CONTROL_LINE_MAX = 64 * 1024
MAX_CONTROL_CONNS = 16
CONNECT_TIMEOUT_S = 5.0
# Keepalive and user timeout on the accepted (network) side, as the brokers set them.
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 2, 1, 3
USER_TIMEOUT_MS = 5000
MAX_DELAY_MS = 600_000
SET_KEYS = {"cmd", "peer", "listener", "delay_ms", "jitter_ms", "bandwidth_bps", "blackhole"}


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} netproxy[{os.getpid()}] {msg}", file=sys.stderr,
          flush=True)


@dataclass
class Rule:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth_bps: int = 0
    blackhole: bool = False

    @classmethod
    def parse(cls, d: dict) -> "Rule":
        r = cls()
        for k in ("delay_ms", "jitter_ms"):
            if k in d:
                v = d[k]
                if isinstance(v, bool) or not isinstance(v, (int, float)) \
                        or not 0 <= v <= MAX_DELAY_MS:
                    raise ValueError(f"{k} must be a number in 0..{MAX_DELAY_MS}")
                setattr(r, k, float(v))
        if "bandwidth_bps" in d:
            v = d["bandwidth_bps"]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError("bandwidth_bps must be an integer >= 0")
            r.bandwidth_bps = v
        if "blackhole" in d:
            if not isinstance(d["blackhole"], bool):
                raise ValueError("blackhole must be true or false")
            r.blackhole = d["blackhole"]
        return r


@dataclass
class Listener:
    name: str
    host: str
    port: int
    target_host: str
    target_port: int

    @classmethod
    def parse(cls, spec: str) -> "Listener":
        """NAME=HOST:PORT=TARGET_HOST:TARGET_PORT"""
        parts = spec.split("=")
        if len(parts) != 3 or not parts[0] or parts[0] == "*":
            raise ValueError(f"--listen {spec!r}: want NAME=HOST:PORT=TARGET_HOST:TARGET_PORT")

        def hp(s: str) -> tuple[str, int]:
            host, sep, port = s.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"--listen {spec!r}: bad address {s!r}")
            return host, int(port)

        (h, p), (th, tp) = hp(parts[1]), hp(parts[2])
        return cls(parts[0], h, p, th, tp)


class Pipe:
    """One direction of one connection: chunks with their delivery time, bounded in bytes."""

    def __init__(self, limit: int):
        self.items: deque[tuple[float, bytes]] = deque()
        self.bytes = 0
        self.limit = limit
        self.last_at = 0.0
        self.cond = asyncio.Condition()


class Conn:
    def __init__(self, cid: int, listener: Listener, peer_ip: str, faultable: bool,
                 client: asyncio.StreamWriter):
        self.id = cid
        self.listener = listener
        self.peer_ip = peer_ip
        self.faultable = faultable
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.started = time.monotonic()
        self.bytes = {"in": 0, "out": 0}  # in: from the peer to the target; out: back
        self.tasks: list[asyncio.Task] = []
        self.closed = False

    def reset(self) -> None:
        """Closes both sides with a TCP RST and stops the pumps."""
        if self.closed:
            return
        self.closed = True
        for w in (self.client, self.upstream):
            if w is None:
                continue
            sock = w.get_extra_info("socket")
            try:
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            w.transport.abort()
        for t in self.tasks:
            t.cancel()

    def describe(self) -> dict:
        return {"id": self.id, "listener": self.listener.name, "peer": self.peer_ip,
                "faultable": self.faultable, "age_s": round(time.monotonic() - self.started, 1),
                "bytes_in": self.bytes["in"], "bytes_out": self.bytes["out"]}


class Proxy:
    def __init__(self, listeners: list[Listener], peers: set[str], queue_bytes: int,
                 max_conns: int, seed: int | None):
        self.listeners = listeners
        self.peers = peers
        self.queue_bytes = queue_bytes
        self.max_conns = max_conns
        self.rng = random.Random(seed)
        self.rules: dict[tuple[str, str], Rule] = {}
        self.changed = asyncio.Condition()
        self.conns: dict[int, Conn] = {}
        self.next_id = 0
        self.counters = {"accepted": 0, "refused_full": 0, "upstream_failed": 0, "resets": 0}
        self.control_conns = 0
        self.servers: list[asyncio.AbstractServer] = []

    # -- rules -----------------------------------------------------------------------------
    def rule_for(self, c: Conn) -> Rule | None:
        if not c.faultable:
            return None
        n = c.listener.name
        for key in ((c.peer_ip, n), (c.peer_ip, "*"), ("*", n), ("*", "*")):
            r = self.rules.get(key)
            if r is not None:
                return r
        return None

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_open(self, c: Conn) -> None:
        """Returns once no blackhole rule holds connection c."""
        while True:
            r = self.rule_for(c)
            if r is None or not r.blackhole:
                return
            async with self.changed:
                await self.changed.wait()

    def matches(self, c: Conn, peer: str, listener: str) -> bool:
        return (c.faultable and peer in ("*", c.peer_ip)
                and listener in ("*", c.listener.name))

    # -- connections -----------------------------------------------------------------------
    async def start(self) -> None:
        for lst in self.listeners:
            srv = await asyncio.start_server(
                lambda r, w, lst=lst: self.handle(lst, r, w), lst.host, lst.port,
                reuse_address=True, limit=CHUNK)
            self.servers.append(srv)
            log(f"{lst.name}: {lst.host}:{lst.port} -> {lst.target_host}:{lst.target_port}")

    async def handle(self, lst: Listener, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_ip = peer[0] if isinstance(peer, tuple) else "?"
        if len(self.conns) >= self.max_conns:
            self.counters["refused_full"] += 1
            writer.transport.abort()
            return
        self.counters["accepted"] += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)
            except OSError as e:
                log(f"socket options on a {lst.name} connection from {peer_ip}: {e}")
        self.next_id += 1
        c = Conn(self.next_id, lst, peer_ip, peer_ip in self.peers, writer)
        self.conns[c.id] = c
        try:
            # A blackholed peer connection is held before it reaches the target.
            await self.wait_open(c)
            if c.closed:  # reset while held
                return
            try:
                ureader, uwriter = await asyncio.wait_for(
                    asyncio.open_connection(lst.target_host, lst.target_port, limit=CHUNK),
                    CONNECT_TIMEOUT_S)
            except (OSError, asyncio.TimeoutError) as e:
                self.counters["upstream_failed"] += 1
                log(f"{lst.name} from {peer_ip}: target {lst.target_host}:{lst.target_port} "
                    f"unreachable ({e!r})")
                c.reset()
                return
            c.upstream = uwriter
            usock = uwriter.get_extra_info("socket")
            if usock is not None:
                try:
                    usock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    pass
            if c.closed:  # reset while connecting
                uwriter.transport.abort()
                return
            up, down = Pipe(self.queue_bytes), Pipe(self.queue_bytes)
            c.tasks = [asyncio.ensure_future(x) for x in (
                self.read_side(c, reader, up, "in"), self.write_side(c, uwriter, up, "in"),
                self.read_side(c, ureader, down, "out"), self.write_side(c, writer, down, "out"))]
            done, _ = await asyncio.wait(c.tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed:
                c.reset()  # one side broke: the other side sees a reset too
            else:
                for w in (writer, uwriter):
                    w.close()
        except asyncio.CancelledError:
            c.reset()
            raise
        finally:
            c.closed = True
            self.conns.pop(c.id, None)

    async def read_side(self, c: Conn, reader: asyncio.StreamReader, pipe: Pipe,
                        direction: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wait_open(c)
            data = await reader.read(CHUNK)
            r = self.rule_for(c)
            at = loop.time()
            if r is not None and (r.delay_ms or r.jitter_ms):
                at += (r.delay_ms + self.rng.uniform(0.0, r.jitter_ms)) / 1000.0
            at = max(at, pipe.last_at)
            pipe.last_at = at
            async with pipe.cond:
                await pipe.cond.wait_for(lambda: pipe.bytes < pipe.limit)
                pipe.items.append((at, data))
                pipe.bytes += len(data)
                pipe.cond.notify_all()
            if not data:
                return  # end of stream queued behind the data

    async def write_side(self, c: Conn, writer: asyncio.StreamWriter, pipe: Pipe,
                         direction: str) -> None:
        loop = asyncio.get_running_loop()
        paced_until = 0.0
        while True:
            async with pipe.cond:
                await pipe.cond.wait_for(lambda: bool(pipe.items))
                at, data = pipe.items[0]
            wait = at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self.wait_open(c)
            async with pipe.cond:
                pipe.items.popleft()
                pipe.bytes -= len(data)
                pipe.cond.notify_all()
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            r = self.rule_for(c)
            if r is None or r.bandwidth_bps <= 0:
                writer.write(data)
                await writer.drain()
                c.bytes[direction] += len(data)
                continue
            # Throttled: pieces of ~1/20 s worth of bytes, each sent at its turn.
            piece = max(512, r.bandwidth_bps // 20)
            for i in range(0, len(data), piece):
                now = loop.time()
                if paced_until > now:
                    await asyncio.sleep(paced_until - now)
                part = data[i:i + piece]
                writer.write(part)
                await writer.drain()
                c.bytes[direction] += len(part)
                paced_until = max(paced_until, now) + len(part) / r.bandwidth_bps

    # -- control ---------------------------------------------------------------------------
    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.control_conns >= MAX_CONTROL_CONNS:
            writer.close()
            return
        self.control_conns += 1
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(b'{"ok": false, "error": "line too long"}\n')
                    break
                if not line:
                    break
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError("want a JSON object")
                    ans = await self.command(req)
                    ans = {"ok": True, **ans}
                except (ValueError, KeyError, TypeError) as e:
                    ans = {"ok": False, "error": str(e)}
                writer.write(json.dumps(ans).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.control_conns -= 1
            writer.close()

    async def command(self, req: dict) -> dict:
        cmd = req.get("cmd")
        peer = req.get("peer", "*")
        listener = req.get("listener", "*")
        if not isinstance(peer, str) or not isinstance(listener, str):
            raise ValueError("peer and listener must be strings")
        if listener != "*" and listener not in {lst.name for lst in self.listeners}:
            raise ValueError(f"no listener {listener!r}")
        if cmd == "set":
            unknown = set(req) - SET_KEYS
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)}; known: {sorted(SET_KEYS)}")
            rule = Rule.parse(req)
            self.rules[(peer, listener)] = rule
            log(f"set {peer}/{listener}: {asdict(rule)}")
            await self.notify()
            return {}
        if cmd == "unset":
            removed = self.rules.pop((peer, listener), None) is not None
            await self.notify()
            return {"removed": removed}
        if cmd == "clear":
            n = len(self.rules)
            self.rules.clear()
            if n:
                log("clear")
            await self.notify()
            return {"removed": n}
        if cmd == "reset":
            victims = [c for c in self.conns.values() if self.matches(c, peer, listener)]
            for c in victims:
                c.reset()
            self.counters["resets"] += len(victims)
            log(f"reset {peer}/{listener}: {len(victims)} connections")
            return {"reset": len(victims)}
        if cmd == "status":
            return {"rules": [{"peer": p, "listener": n, **asdict(r)}
                              for (p, n), r in sorted(self.rules.items())],
                    "connections": [c.describe() for c in self.conns.values()],
                    "counters": dict(self.counters), "peers": sorted(self.peers)}
        raise ValueError(f"unknown cmd {cmd!r}")


async def serve(a: argparse.Namespace) -> int:
    listeners = [Listener.parse(s) for s in a.listen]
    peers = {p for p in a.peers.split(",") if p}
    proxy = Proxy(listeners, peers, a.queue_bytes, a.max_conns, a.seed)
    await proxy.start()
    if os.path.exists(a.control):
        os.unlink(a.control)
    ctl = await asyncio.start_unix_server(proxy.control, a.control, limit=CONTROL_LINE_MAX)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    log(f"ready; peers {sorted(peers)}; control {a.control}")
    print("ready", flush=True)
    await stop.wait()
    ctl.close()
    for srv in proxy.servers:
        srv.close()
    for c in list(proxy.conns.values()):
        c.reset()
    try:
        os.unlink(a.control)
    except OSError:
        pass
    return 0


class ProxyControl:
    """Blocking client of a proxy's control socket."""

    def __init__(self, path: str, timeout: float = 5.0):
        self.path = path
        self.timeout = timeout

    def call(self, cmd: str, **kw) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(self.path)
            s.sendall(json.dumps({"cmd": cmd, **kw}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                got = s.recv(65536)
                if not got:
                    break
                buf += got
                if len(buf) > 16 << 20:
                    raise RuntimeError("control answer too long")
        ans = json.loads(buf or b"{}")
        if not ans.get("ok"):
            raise RuntimeError(f"netproxy {self.path}: {cmd}: {ans.get('error', ans)}")
        return ans


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--listen", action="append", required=True,
                   help="NAME=HOST:PORT=TARGET_HOST:TARGET_PORT (repeatable)")
    s.add_argument("--peers", default="", help="comma-separated source IPs faults apply to")
    s.add_argument("--control", required=True, help="Unix socket path for the control channel")
    s.add_argument("--queue-bytes", type=int, default=4 << 20)
    s.add_argument("--max-conns", type=int, default=1024)
    s.add_argument("--seed", type=int, default=None)
    c = sub.add_parser("ctl")
    c.add_argument("control")
    c.add_argument("request", help='a JSON object, e.g. \'{"cmd": "status"}\'')
    a = ap.parse_args()
    if a.mode == "serve":
        if a.queue_bytes < CHUNK or a.max_conns < 1:
            ap.error("--queue-bytes must be >= 65536 and --max-conns >= 1")
        try:
            return asyncio.run(serve(a))
        except ValueError as e:
            ap.error(str(e))
    req = json.loads(a.request)
    cmd = req.pop("cmd", None)
    if not isinstance(cmd, str):
        ap.error("the request needs a \"cmd\"")
    print(json.dumps(ProxyControl(a.control).call(cmd, **req), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
