#!/usr/bin/env python3
"""Soak: 1000 connections, well-formed and malformed clients, for a bounded time (issue #7).

    .venv/bin/python tuning/soak.py [--duration 60] [--connections 1000] [--rate-mb 4]
        [--port 59400] [--admin-port 59401] [--source-ips 16] [--polite 64]
        [--mix idle=200,slowloris=100,...] [--broker-set KEY=VALUE ...] [--config FILE]
        [--broker-env NAME=VALUE ...] [--broker-log FILE] [--binary PATH] [--seed N]
        [--json FILE] [--keep]
    .venv/bin/python tuning/soak.py --median-of REPORT.json...   # medians over --json reports

One broker process (release build, `--cores 2`) lives through three phases:

  clean1  only the well-formed load;
  soak    the well-formed load while ~1000 connections in total are open: the well-formed
          load, POLITE well-formed raw clients, and malformed clients of the kinds below;
  clean2  the well-formed load alone again (does the broker come back?).

The same process is kept for all phases on purpose: a leak, a stuck connection slot or a
broker that stays slow after abuse shows up in clean2 and in the RSS timeline, which a fresh
broker per phase would hide. The machine is shared and noisy, so the verdict compares the soak
phase with the clean phases *of the same run* (ratios), never with figures from another run.

Well-formed load: `target/release/shardlog-bench run` (the project's Rust load generator) at a
fixed open-loop rate (`--rate-mb`, default 4 MB/s of 1 KiB records, acks=all, flush every batch
(the broker default), 2 partitions, 1 producer, 1 consumer, linger 1 ms), one new topic per
phase. It reports coordinated-omission-corrected publish latency (due time -> ack) and
end-to-end latency from HdrHistograms and the acknowledged throughput; being Rust, it does not
share the Python interpreter with the 1000 sockets, so its figures are not distorted by the
attackers' event loop (they do share the 2 CPU cores, as the broker does).

POLITE (well-formed, 127.0.0.1, default 64): a persistent connection each, ApiVersions v0 and
Metadata v1 every second, in a process of their own during all three phases, so their answer
latency (no disk involved) is compared between phases too; any failure, close or error code is
counted (must be 0).

Malformed kinds (each a persistent asyncio client that reconnects when closed, so the
pressure lasts the whole phase; spread over source addresses 127.0.0.2 .. 127.0.0.(1+N) by
binding before connect (IP_BIND_ADDRESS_NO_PORT), so a per-IP limit sees several sources):

  idle             connect, say nothing; expected: left alone until connection_idle_timeout_ms
  slowloris        a 1000-byte frame claim, then 1 byte per second; expected: closed at
                   request_read_timeout_ms (not before 0.9 x, not after + 5 s)
  big_claim        a frame claiming min(max_frame_bytes, 64 MiB), 100 bytes of it, then stall;
                   expected: closed at request_read_timeout_ms (its claim takes request
                   memory, max_request_memory_bytes, before any body arrives)
  oversize         a claim > max_frame_bytes followed by up to 1 MiB of body; expected: closed
                   within 2 s without an answer
  bad_length       negative, 0, 1..3 (shorter than a header), INT32_MAX length prefixes;
                   expected: closed within 2 s without an answer
  garbage          random bytes: raw, or in a valid-length frame, or behind a valid request
                   header of a supported API (random body); no expectation (broker must survive)
  unknown_api      unknown API keys, unsupported versions of known APIs (expected: closed
                   within 2 s), ApiVersions v99 (expected: UNSUPPORTED_VERSION, stays open)
  truncated        part of a valid Produce request, then close (FIN or RST)
  bad_content      valid frames, bad contents, on one connection, 5 per second: corrupt CRC
                   (CORRUPT_MESSAGE), unknown partition / unknown topic
                   (UNKNOWN_TOPIC_OR_PARTITION), acks=5 (INVALID_REQUIRED_ACKS), offset out of
                   range, invalid topic names; expected: that error code, connection stays open
  pipeline_flood   1000 pipelined Metadata requests without reading; hold 3 s; then read all
                   (must be complete and in order) or reset the connection unread, alternately
  fetch_flood      100 pipelined Fetch v4 (1 MiB each) of a prefilled topic without reading;
                   hold 10 s; then (1 in 3) read all (complete, in order), else reset
  reconnect_storm  connect, ApiVersions, read the answer, close (FIN or RST), ~20 per second
                   per client

Per kind: connections opened, connect failures, closed by the broker (EOF / reset), closed by
the client, requests, responses, error codes seen, unexpected outcomes.

Measured: the bench's produce/consume MB/s and publish/e2e p50/p99/p99.9 per phase; broker
RSS (VmRSS every 0.5 s; peak per phase and at the end of each phase), CPU seconds, open fds;
the broker's `shardlog_connections` gauge and accepted/refused/bad-request counters from its
admin `/metrics`; broker log lines by kind and whether it panicked; after clean2 every
bench topic is read back from offset 0 (every acknowledged record present, no duplicates,
sequence numbers complete); then SIGTERM must stop the broker with exit status 0.

Margins (the verdict; measured values are reported regardless):

  * soak produce and consume MB/s >= 95 % of the clean reference (the rate is fixed, so
    anything below target means the broker fell behind);
  * soak p99 <= 2 x the worse clean phase's p99 + 5 ms, for the bench's publish latency and
    for the polite clients' answers. The worse clean phase is the reference because the
    machine's own noise (other jobs' builds and fsyncs on the shared disk) moves a 60 s p99 by
    up to 12x between clean phases of one run; what the soak adds must stand out above it.
    The 2x allows for the attackers' Python process competing for the same 2 cores (which a
    real deployment would not share with its attackers); +5 ms because clean p99 here is a
    few ms of fsync, where a fixed 2x is smaller than the disk's own jitter. clean2 against
    clean1 (recovery) is reported, not judged (noise alone gave 12x);
  * bench errors and failed records 0; polite failures 0; unexpected outcomes of the
    deterministic malformed kinds 0;
  * broker RSS peak <= the bound printed at the start (derived from the config and the mix:
    RSS at start + cores x io_memory_bytes + min(partitions x log_cache_bytes,
    log_cache_total_bytes) + connections x
    128 KiB + max_request_memory_bytes (buffered request bytes) + for each non-reading
    pipelined client max_inflight_requests x its response size + 64 MiB allocator slack);
  * after the soak the connection gauge is back to the clean level within 15 s;
  * read-back: 0 lost, 0 duplicated; no panic; SIGTERM exit status 0.

Broker limits are settable from the command line: `--broker-set max_connections=2000`
(repeatable) passes SHARDLOG_MAX_CONNECTIONS=2000 to the broker, any key of
server/src/config.rs; `--config FILE` passes a TOML file. The margins and the expectations
read the effective limits (timeouts, max_frame_bytes, max_inflight_requests, ...) from them.

Exit status: 0 all margins met, 1 a margin violated (or the broker panicked / did not stop
cleanly / lost data), 2 the harness itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import multiprocessing as mp
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import kwire  # noqa: E402

sys.path.insert(0, str(REPO / "tuning"))
from fault_common import log, percentile as pct  # noqa: E402

MiB = 1 << 20
KiB = 1 << 10

# Linux: let connect() pick the source port for a bound address by the whole 4-tuple.
IP_BIND_ADDRESS_NO_PORT = 24

JUNK_TOPIC = "soak-junk"  # target of bad_content
FILL_TOPIC = "soak-fill"  # prefilled, target of fetch_flood
FILL_MB = 48  # > log_cache_bytes (16 MiB): fetches from offset 0 come from disk

DEFAULT_MIX = {
    "idle": 200,
    "slowloris": 100,
    "big_claim": 16,
    "oversize": 40,
    "bad_length": 60,
    "garbage": 80,
    "unknown_api": 60,
    "truncated": 60,
    "bad_content": 100,
    "pipeline_flood": 60,
    "fetch_flood": 8,
    "reconnect_storm": 80,
}
# Kinds that first sit connected and silent for 0.5-2.5 s, then misbehave once.
CHURN = {"oversize", "bad_length", "garbage", "unknown_api", "truncated"}
# Phases (the parent publishes the current one to the client processes by index).
PHASES = ["start", "clean1", "soak-ramp", "soak", "soak-stop", "clean2", "readback", "stop"]
# Kinds whose outcome is deterministic: an unexpected outcome fails the run.
DETERMINISTIC = {"idle", "slowloris", "big_claim", "oversize", "bad_length", "unknown_api",
                 "bad_content", "pipeline_flood", "fetch_flood", "reconnect_storm", "polite"}

# The broker defaults (server/src/config.rs) of the keys the soak reads.
CONFIG_DEFAULTS = {
    "max_frame_bytes": 100 * MiB,
    "max_connections": 10_000,
    "max_connections_per_ip": 0,
    "max_inflight_requests": 64,
    "max_request_memory_bytes": 256 * MiB,
    "connection_idle_timeout_ms": 600_000,
    "request_read_timeout_ms": 30_000,
    "io_memory_bytes": 32 * MiB,
    "log_cache_bytes": 16 * MiB,
    "log_cache_total_bytes": 1024 * MiB,
    "shutdown_grace_ms": 10_000,
}


# ---------------------------------------------------------------------------
# Malformed and polite clients (run in a child process with its own asyncio loop)

class KindStats:
    def __init__(self) -> None:
        self.opened = 0
        self.connect_failed: Counter = Counter()
        self.closed_by_broker = 0  # EOF seen
        self.reset_by_broker = 0  # ECONNRESET / EPIPE seen
        self.closed_by_client = 0
        self.requests = 0
        self.responses = 0
        self.bytes_sent = 0
        self.error_codes: Counter = Counter()
        self.unexpected: Counter = Counter()
        self.hold_s: list[float] = []  # open -> closed by the broker (timeout kinds)
        self.latency_ms: dict[str, list[float]] = {}  # per phase: polite / storm / bad_content answers

    def as_dict(self) -> dict:
        d = {
            "opened": self.opened,
            "connect_failed": dict(self.connect_failed),
            "closed_by_broker": self.closed_by_broker,
            "reset_by_broker": self.reset_by_broker,
            "closed_by_client": self.closed_by_client,
            "requests": self.requests,
            "responses": self.responses,
            "bytes_sent": self.bytes_sent,
            "error_codes": {str(k): v for k, v in sorted(self.error_codes.items())},
            "unexpected": dict(self.unexpected),
        }
        if self.hold_s:
            d["hold_s"] = {"n": len(self.hold_s), "min": round(min(self.hold_s), 3),
                           "p50": round(pct(self.hold_s, 50), 3),
                           "max": round(max(self.hold_s), 3)}
        if self.latency_ms:
            d["latency_ms"] = {ph: {"n": len(v), "p50": round(pct(v, 50), 3),
                                    "p99": round(pct(v, 99), 3), "max": round(max(v), 3)}
                               for ph, v in self.latency_ms.items()}
        return d


class Closed(Exception):
    """The broker closed the connection (EOF or reset); `reset` tells which."""

    def __init__(self, reset: bool):
        super().__init__("reset" if reset else "eof")
        self.reset = reset


class Load:
    def __init__(self, cfg: dict, open_now, stop_evt, phase_val):
        self.cfg = cfg
        self.addr = ("127.0.0.1", cfg["port"])
        self.lim = cfg["limits"]
        self.stats: dict[str, KindStats] = {}
        self.open_now = open_now  # mp.Value shared with the parent (sampled)
        self.stop_evt = stop_evt
        self.stopping = False
        self.fill_end = cfg["fill_end"]
        self.phase_val = phase_val  # mp.Value: index into PHASES, set by the parent

    def lat(self, st: KindStats, t0: float) -> None:
        ph = PHASES[self.phase_val.value]
        st.latency_ms.setdefault(ph, []).append((time.monotonic() - t0) * 1000)

    # -- connection helpers ---------------------------------------------------
    async def connect(self, st: KindStats, src: str, limit: int = 1 << 20):
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((src, 0))
            await asyncio.wait_for(loop.sock_connect(sock, self.addr), 5.0)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            r, w = await asyncio.open_connection(sock=sock, limit=limit)
        except (OSError, asyncio.TimeoutError) as e:
            sock.close()
            if isinstance(e, OSError) and e.errno:
                name = errno.errorcode.get(e.errno, str(e.errno))
            else:
                name = "timeout"
            st.connect_failed[name] += 1
            return None
        st.opened += 1
        with self.open_now.get_lock():
            self.open_now.value += 1
        return r, w

    def release(self, w, rst: bool = False) -> None:
        with self.open_now.get_lock():
            self.open_now.value -= 1
        try:
            if rst:
                s = w.get_extra_info("socket")
                if s is not None:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                w.transport.abort()
            else:
                w.close()
        except OSError:
            pass

    async def send(self, st: KindStats, w, data: bytes) -> None:
        try:
            w.write(data)
            st.bytes_sent += len(data)
            await w.drain()
        except (ConnectionResetError, BrokenPipeError):
            raise Closed(True)

    async def wait_close(self, r, timeout: float | None) -> tuple[str, bytes]:
        """('eof'|'reset'|'open'|'data', data) after at most `timeout` s."""
        try:
            data = await asyncio.wait_for(r.read(65536), timeout)
        except asyncio.TimeoutError:
            return "open", b""
        except (ConnectionResetError, BrokenPipeError):
            return "reset", b""
        return ("eof", b"") if data == b"" else ("data", data)

    async def recv_frame(self, r) -> bytes:
        try:
            (n,) = struct.unpack(">i", await r.readexactly(4))
            if n < 4 or n > 512 * MiB:
                raise ValueError(f"bad response size {n}")
            return await r.readexactly(n)
        except asyncio.IncompleteReadError:
            raise Closed(False)
        except (ConnectionResetError, BrokenPipeError):
            raise Closed(True)

    def closed(self, st: KindStats, how: str | Closed) -> None:
        reset = how.reset if isinstance(how, Closed) else how == "reset"
        if reset:
            st.reset_by_broker += 1
        else:
            st.closed_by_broker += 1

    # -- one client -------------------------------------------------------------
    async def client(self, kind: str, idx: int, src: str) -> None:
        st = self.stats[kind]
        rng = random.Random(f"{self.cfg['seed']}-{kind}-{idx}")
        await asyncio.sleep(rng.uniform(0, self.cfg["ramp_s"]))
        fn = getattr(self, "k_" + kind)
        limit = 64 * KiB if kind in ("pipeline_flood", "fetch_flood") else 1 << 20
        while not self.stopping:
            conn = await self.connect(st, src, limit)
            if conn is None:
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                continue
            r, w = conn
            rst = False
            try:
                if kind in CHURN:
                    # Stay connected (and silent) for a while first, so these clients hold
                    # their share of the connections instead of mostly waiting to reconnect.
                    await asyncio.sleep(rng.uniform(0.5, 2.5))
                rst = bool(await fn(st, r, w, rng))
            except Closed as c:
                self.closed(st, c)
            except asyncio.CancelledError:
                self.release(w, rst=True)
                raise
            except (ConnectionResetError, BrokenPipeError):
                st.reset_by_broker += 1
            except Exception as e:  # noqa: BLE001 - a client bug must not stop the soak
                st.unexpected[f"client exception {type(e).__name__}: {e}"[:120]] += 1
            self.release(w, rst)
            await asyncio.sleep(self.reconnect_delay(kind, rng))

    @staticmethod
    def reconnect_delay(kind: str, rng: random.Random) -> float:
        if kind == "reconnect_storm":
            return rng.uniform(0.1, 0.3)
        return rng.uniform(0.05, 0.2)

    async def hold_until_closed(self, st: KindStats, r, lo_s: float, hi_s: float | None,
                                t0: float, drip=None) -> bool:
        """Wait for the broker to close; expected in [lo_s, hi_s] s after t0. While waiting,
        `drip()` is awaited every second if given. Returns False (client closes) if the
        phase ends first."""
        while not self.stopping:
            how, data = await self.wait_close(r, 1.0)
            el = time.monotonic() - t0
            if how == "data":
                st.unexpected["answered"] += 1
                continue
            if how in ("eof", "reset"):
                self.closed(st, how)
                st.hold_s.append(el)
                if el < lo_s:
                    st.unexpected["closed before the timeout"] += 1
                if hi_s is not None and el > hi_s:
                    st.unexpected["closed late"] += 1
                return True
            if hi_s is not None and el > hi_s + 30:
                st.unexpected["not closed within timeout + 35 s"] += 1
                return False
            if drip is not None:
                await drip()
        st.closed_by_client += 1
        return False

    # -- kinds --------------------------------------------------------------------
    async def k_idle(self, st, r, w, rng):
        t = self.lim["connection_idle_timeout_ms"] / 1000
        await self.hold_until_closed(st, r, 0.9 * t, t + 5, time.monotonic())

    async def k_slowloris(self, st, r, w, rng):
        t = self.lim["request_read_timeout_ms"] / 1000
        t0 = time.monotonic()
        # A plausible 1000-byte ApiVersions v0 frame, of which only the start is ever sent.
        body = kwire.request_header(kwire.API_VERSIONS, 0, 1, "slowloris")
        await self.send(st, w, kwire.i32(1000) + body[:2])
        st.requests += 1

        async def drip():
            await self.send(st, w, bytes([rng.randrange(256)]))

        await self.hold_until_closed(st, r, 0.9 * t, t + 5, t0, drip)

    async def k_big_claim(self, st, r, w, rng):
        t = self.lim["request_read_timeout_ms"] / 1000
        claim = min(self.lim["max_frame_bytes"], 64 * MiB)
        t0 = time.monotonic()
        hdr = kwire.request_header(kwire.PRODUCE, 3, 1, "big-claim")
        await self.send(st, w, kwire.i32(claim) + hdr + b"\0" * (100 - len(hdr)))
        st.requests += 1
        await self.hold_until_closed(st, r, 0.9 * t, t + 5, t0)

    async def expect_prompt_close(self, st, r, what: str) -> None:
        how, data = await self.wait_close(r, 2.0)
        if how == "data":
            st.unexpected[f"{what}: answered"] += 1
            how, _ = await self.wait_close(r, 2.0)
        if how in ("eof", "reset"):
            self.closed(st, how)
        else:
            st.unexpected[f"{what}: not closed within 2 s"] += 1
            st.closed_by_client += 1

    async def k_oversize(self, st, r, w, rng):
        mx = self.lim["max_frame_bytes"]
        claim = rng.choice([mx + 1, mx + 4096, min(2 * mx, 2**31 - 1), 2**31 - 1])
        st.requests += 1
        async def stream():
            await self.send(st, w, kwire.i32(claim) + kwire.request_header(0, 3, 1))
            # Stream body bytes until the broker closes (it must, before buffering them).
            for _ in range(16):
                await self.send(st, w, os.urandom(64 * KiB))

        try:
            await asyncio.wait_for(stream(), 5.0)
        except Closed as c:
            self.closed(st, c)
            return
        except asyncio.TimeoutError:
            st.unexpected["oversize: body still accepted after 5 s"] += 1
            return True
        await self.expect_prompt_close(st, r, "oversize")

    async def k_bad_length(self, st, r, w, rng):
        n = rng.choice([-1, -(2**31), -4096, 0, 1, 2, 3, 2**31 - 1])
        tail = b"\0" * n if 0 < n < 4 else b""
        st.requests += 1
        await self.send(st, w, kwire.i32(n) + tail)
        await self.expect_prompt_close(st, r, f"length {n}")

    async def k_garbage(self, st, r, w, rng):
        how = rng.randrange(3)
        body = rng.randbytes(rng.randint(8, 2048))
        if how == 0:
            data = body
        elif how == 1:
            data = kwire.frame(body)
        else:
            key = rng.choice([0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 32, 60])
            ver = rng.randint(0, 4)
            data = kwire.frame(kwire.request_header(key, ver, rng.randint(0, 2**31 - 1)) + body)
        st.requests += 1
        await self.send(st, w, data)
        hw, got = await self.wait_close(r, 2.0)
        if hw == "data":
            st.responses += 1
            hw, _ = await self.wait_close(r, 1.0)
        if hw in ("eof", "reset"):
            self.closed(st, hw)
        else:
            st.closed_by_client += 1

    async def k_unknown_api(self, st, r, w, rng):
        choice = rng.randrange(3)
        st.requests += 1
        if choice == 2:
            await self.send(st, w, kwire.frame(kwire.request_header(kwire.API_VERSIONS, 99, 7)))
            try:
                resp = kwire.Reader(await asyncio.wait_for(self.recv_frame(r), 5.0))
            except asyncio.TimeoutError:
                st.unexpected["ApiVersions v99: no answer in 5 s"] += 1
                return True
            st.responses += 1
            cid, err = resp.i32(), resp.i16()
            st.error_codes[err] += 1
            if cid != 7 or err != kwire.UNSUPPORTED_VERSION:
                st.unexpected[f"ApiVersions v99: correlation {cid} error {err}"] += 1
            # The connection must still serve a good request.
            await self.send(st, w, kwire.frame(kwire.request_header(kwire.API_VERSIONS, 0, 8)))
            try:
                resp = kwire.Reader(await asyncio.wait_for(self.recv_frame(r), 5.0))
                st.responses += 1
                if resp.i32() != 8 or resp.i16() != 0:
                    st.unexpected["ApiVersions v0 after v99: bad answer"] += 1
            except asyncio.TimeoutError:
                st.unexpected["ApiVersions v0 after v99: no answer"] += 1
            st.closed_by_client += 1
            return False
        if choice == 0:
            key, ver, what = rng.choice([9999, 200, -1, 32767, 75]), 0, "unknown key"
        else:
            key, ver, what = rng.choice([0, 1, 3]), rng.choice([99, 1000, -1]), "bad version"
        await self.send(st, w, kwire.frame(kwire.request_header(key, ver, 1) + b"\0" * 16))
        await self.expect_prompt_close(st, r, what)

    async def k_truncated(self, st, r, w, rng):
        batch = kwire.record_batch([kwire.Record(None, b"t" * 200) for _ in range(5)])
        req = kwire.frame(kwire.request_header(kwire.PRODUCE, 3, 1)
                          + kwire.produce_body(JUNK_TOPIC, 0, batch))
        st.requests += 1
        await self.send(st, w, req[:rng.randint(1, len(req) - 1)])
        await asyncio.sleep(rng.uniform(0, 0.2))
        st.closed_by_client += 1
        return rng.random() < 0.5  # RST half of the time

    async def k_bad_content(self, st, r, w, rng):
        cid = 0
        while not self.stopping:
            cid += 1
            k = rng.randrange(7)
            if k == 0:
                b = kwire.corrupt(kwire.record_batch([kwire.Record(None, b"c" * 100)] * 3))
                req, exp, what = kwire.produce_body(JUNK_TOPIC, 0, b), {kwire.CORRUPT_MESSAGE}, "corrupt crc"
                api, ver = kwire.PRODUCE, 3
            elif k == 1:
                b = kwire.record_batch([kwire.Record(None, b"u")])
                req, exp, what = kwire.produce_body(JUNK_TOPIC, 999, b), {kwire.UNKNOWN_TOPIC_OR_PARTITION}, "unknown partition"
                api, ver = kwire.PRODUCE, 3
            elif k == 2:
                req = kwire.fetch_body(f"soak-no-such-topic-{rng.randrange(10**6)}", 0, 0, max_wait_ms=0)
                exp, what, api, ver = {kwire.UNKNOWN_TOPIC_OR_PARTITION}, "fetch unknown topic", kwire.FETCH, 4
            elif k == 3:
                b = kwire.record_batch([kwire.Record(None, b"a")])
                req, exp, what = kwire.produce_body(JUNK_TOPIC, 0, b, acks=5), {kwire.INVALID_REQUIRED_ACKS}, "acks=5"
                api, ver = kwire.PRODUCE, 3
            elif k == 4:
                req = kwire.fetch_body(JUNK_TOPIC, 0, 10**12, max_wait_ms=0)
                exp, what, api, ver = {1}, "offset out of range", kwire.FETCH, 4
            elif k == 5:
                name = rng.choice(["../../etc", "a/b", "x" * 300, "bad name", ".", ".."])
                req = kwire.array([kwire.string(name)])
                exp, what, api, ver = {17}, "invalid topic name", kwire.METADATA, 1
            else:
                # A batch whose length field disagrees with the bytes sent.
                b = bytearray(kwire.record_batch([kwire.Record(None, b"l" * 50)]))
                b[8:12] = kwire.i32(len(b) + 1000)
                req, exp, what = kwire.produce_body(JUNK_TOPIC, 0, bytes(b)), {2, 87}, "bad batch length"
                api, ver = kwire.PRODUCE, 3
            rd, got = await self.timed_request(
                st, r, w, kwire.frame(kwire.request_header(api, ver, cid) + req), what)
            if rd is None:
                return True
            if got != cid:
                st.unexpected[f"{what}: correlation {got} != {cid}"] += 1
                return True
            err = self.first_error(api, rd)
            st.error_codes[err] += 1
            if err not in exp:
                st.unexpected[f"{what}: error {err}"] += 1
            await asyncio.sleep(rng.uniform(0.1, 0.3))
        st.closed_by_client += 1

    @staticmethod
    def first_error(api: int, rd: kwire.Reader) -> int:
        """The first partition-level (or topic-level for Metadata) error code."""
        if api == kwire.PRODUCE:
            rd.i32()  # topics count
            rd.string()
            rd.i32()  # partitions count
            rd.i32()
            return rd.i16()
        if api == kwire.FETCH:
            rd.i32()  # throttle
            rd.i32()
            rd.string()
            rd.i32()
            rd.i32()
            return rd.i16()
        # Metadata v1: brokers, controller, then topics.
        rd.array(lambda r: (r.i32(), r.string(), r.i32(), r.string()))
        rd.i32()
        rd.i32()  # topics count
        return rd.i16()

    async def k_pipeline_flood(self, st, r, w, rng):
        cycle = 0
        body = kwire.array([kwire.string(JUNK_TOPIC)])
        while not self.stopping:
            cycle += 1
            n = 1000
            data = b"".join(kwire.frame(kwire.request_header(kwire.METADATA, 1, i) + body)
                            for i in range(n))
            w.write(data)  # not awaited: the broker stops reading when it is full
            st.bytes_sent += len(data)
            st.requests += n
            await asyncio.sleep(3.0)
            if cycle % 2 == 0:
                st.closed_by_client += 1
                return True  # reset with everything unread
            if not await self.read_answers(st, r, w, n, "flood"):
                return True
        st.closed_by_client += 1
        return True

    async def k_fetch_flood(self, st, r, w, rng):
        cycle = 0
        while not self.stopping:
            cycle += 1
            n = 100
            reqs = []
            for i in range(n):
                off = rng.randrange(max(1, self.fill_end))
                reqs.append(kwire.frame(kwire.request_header(kwire.FETCH, 4, i) + kwire.fetch_body(
                    FILL_TOPIC, 0, off, max_wait_ms=0, max_bytes=MiB, partition_max_bytes=MiB)))
            data = b"".join(reqs)
            w.write(data)
            st.bytes_sent += len(data)
            st.requests += n
            await asyncio.sleep(10.0)
            if self.stopping or rng.random() >= 1 / 3:
                st.closed_by_client += 1
                return True
            if not await self.read_answers(st, r, w, n, "fetch"):
                return True
        st.closed_by_client += 1
        return True

    async def read_answers(self, st, r, w, n: int, what: str) -> bool:
        """Reads the answers to correlation ids 0..n-1 in order; False (and counted) when one is
        out of order or they stall for 30 s."""
        try:
            for i in range(n):
                fr = await asyncio.wait_for(self.recv_frame(r), 30.0)
                st.responses += 1
                if struct.unpack_from(">i", fr)[0] != i:
                    st.unexpected["out of order answer"] += 1
                    return False
            await w.drain()
        except asyncio.TimeoutError:
            st.unexpected[f"{what} answers stalled 30 s"] += 1
            return False
        return True

    async def timed_request(self, st, r, w, frame: bytes, what: str):
        """Sends one request and waits up to 10 s for its answer, recording the latency; the
        answer's Reader after the correlation id is read (None, counted, on a stall), and the
        correlation id."""
        t0 = time.monotonic()
        await self.send(st, w, frame)
        st.requests += 1
        try:
            rd = kwire.Reader(await asyncio.wait_for(self.recv_frame(r), 10.0))
        except asyncio.TimeoutError:
            st.unexpected[f"{what}: no answer in 10 s"] += 1
            return None, None
        self.lat(st, t0)
        st.responses += 1
        return rd, rd.i32()

    async def api_versions_roundtrip(self, st, r, w, cid: int) -> bool:
        rd, got = await self.timed_request(
            st, r, w, kwire.frame(kwire.request_header(kwire.API_VERSIONS, 0, cid)), "ApiVersions")
        if rd is None:
            return False
        err = rd.i16()
        st.error_codes[err] += 1
        if got != cid or err != 0:
            st.unexpected[f"ApiVersions: correlation {got} error {err}"] += 1
            return False
        return True

    async def k_reconnect_storm(self, st, r, w, rng):
        await self.api_versions_roundtrip(st, r, w, 1)
        st.closed_by_client += 1
        return rng.random() < 0.5

    async def k_polite(self, st, r, w, rng):
        cid = 0
        while not self.stopping:
            cid += 1
            if not await self.api_versions_roundtrip(st, r, w, cid):
                return True
            cid += 1
            rd, got = await self.timed_request(
                st, r, w, kwire.frame(kwire.request_header(kwire.METADATA, 1, cid)
                                      + kwire.array([kwire.string(JUNK_TOPIC)])), "Metadata")
            if rd is None:
                return True
            err = self.first_error(kwire.METADATA, rd)
            st.error_codes[err] += 1
            if got != cid or err != 0:
                st.unexpected[f"Metadata: correlation {got} error {err}"] += 1
            await asyncio.sleep(rng.uniform(0.8, 1.2))
        st.closed_by_client += 1

    # -- run ------------------------------------------------------------------------
    async def run(self) -> dict:
        tasks = []
        src_ips = [f"127.0.0.{2 + i}" for i in range(self.cfg["source_ips"])]
        plan = list(self.cfg["plan"].items())
        n = 0
        per_ip = Counter()
        for kind, count in plan:
            self.stats[kind] = KindStats()
            for i in range(count):
                src = "127.0.0.1" if kind == "polite" else src_ips[n % len(src_ips)]
                if kind != "polite":
                    n += 1
                per_ip[src] += 1
                tasks.append(asyncio.create_task(self.client(kind, i, src)))
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        while not self.stop_evt.is_set():
            await loop.run_in_executor(None, self.stop_evt.wait, 0.5)
        self.stopping = True
        # Give in-progress steps a moment, then cancel everything (sockets reset).
        await asyncio.sleep(0.5)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return {"kinds": {k: s.as_dict() for k, s in self.stats.items()},
                "clients_per_source_ip": dict(per_ip),
                "seconds": round(time.monotonic() - t0, 3)}


def load_main(cfg: dict, open_now, stop_evt, phase_val, out_q) -> None:
    """Child process: run the clients until stop_evt, then put the stats on out_q."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        res = asyncio.run(Load(cfg, open_now, stop_evt, phase_val).run())
    except Exception as e:  # noqa: BLE001
        import traceback
        res = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    out_q.put(res)


# ---------------------------------------------------------------------------
# Broker process, sampler, bench, read-back

class Broker:
    def __init__(self, args, data_dir: Path, log_path: Path, env_extra: dict):
        self.args = args
        self.data_dir = data_dir
        self.log_path = log_path
        self.env_extra = env_extra
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env.update(self.env_extra)
        env.setdefault("RUST_BACKTRACE", "1")
        cmd = [self.args.binary, "start", "--listen", f"127.0.0.1:{self.args.port}",
               "--admin-listen", f"127.0.0.1:{self.args.admin_port}",
               "--data-dir", str(self.data_dir), "--cores", str(self.args.cores)]
        if self.args.config:
            cmd += ["--config", self.args.config]
        self.cmd = cmd
        self.logf = open(self.log_path, "ab")
        # The broker inherits the file limit main() raised.
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with kwire.Conn("127.0.0.1", self.args.port, timeout=2) as c:
                    c.api_versions()
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("broker did not start serving")

    def stop(self, timeout: float) -> tuple[int | None, float]:
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None, time.monotonic() - t0
        self.logf.close()
        return self.proc.returncode, time.monotonic() - t0


def proc_status(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "Threads"):
                    out[k] = int(v.split()[0])
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        out["cpu_s"] = (int(fields[11]) + int(fields[12])) / tck
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError, IndexError):
        pass
    return out


METRIC_RE = re.compile(r"^(shardlog_[a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+|NaN)$")


def scrape(admin_port: int) -> dict | None:
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    m: dict = {"scrape_ms": (time.monotonic() - t0) * 1000}
    for line in text.splitlines():
        mm = METRIC_RE.match(line)
        if not mm:
            continue
        name, labels, val = mm.groups()
        if labels and name in ("shardlog_connections", "shardlog_request_memory_bytes"):
            m[f"{name}{labels}"] = float(val)
        if name in ("shardlog_connections", "shardlog_connections_accepted_total",
                    "shardlog_connections_refused_total", "shardlog_bad_requests_total",
                    "shardlog_request_memory_bytes", "shardlog_request_memory_waits_total"):
            m[name] = m.get(name, 0) + float(val)
    return m


class Sampler(threading.Thread):
    def __init__(self, broker_pid: int, admin_port: int, phase_val):
        super().__init__(daemon=True)
        self.pid = broker_pid
        self.admin_port = admin_port
        self.phase_val = phase_val
        self.phase = "start"
        self.samples: list[dict] = []
        self.t0 = time.monotonic()
        self.stop_evt = threading.Event()
        self.clients: dict[str, tuple[int, object]] = {}  # name -> (pid, open-connections Value)
        self.rss_abort_kib: int | None = None
        self.aborted = False

    def set_phase(self, name: str) -> None:
        self.phase = name
        self.phase_val.value = PHASES.index(name)

    def run(self) -> None:
        i = 0
        while not self.stop_evt.is_set():
            s = {"t": round(time.monotonic() - self.t0, 2), "phase": self.phase}
            s.update(proc_status(self.pid))
            for name, (pid, val) in list(self.clients.items()):
                ls = proc_status(pid)
                if "cpu_s" in ls:
                    s[f"{name}_cpu_s"] = ls["cpu_s"]
                s[f"{name}_open"] = val.value
            if i % 2 == 0:
                m = scrape(self.admin_port)
                if m:
                    s.update(m)
            self.samples.append(s)
            if self.rss_abort_kib and s.get("VmRSS", 0) > self.rss_abort_kib and not self.aborted:
                self.aborted = True
                log(f"broker RSS {s['VmRSS'] // 1024} MiB above --rss-abort: killing it")
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except OSError:
                    pass
            i += 1
            self.stop_evt.wait(0.5)

    def last(self, key: str):
        for s in reversed(self.samples):
            if key in s:
                return s[key]
        return None


def run_bench(args, phase: str, out_dir: Path) -> dict:
    d = out_dir / phase
    cmd = [args.bench, "run", "--bootstrap", f"127.0.0.1:{args.port}", "--acks", "all",
           "--rate-mb", str(args.rate_mb), "--partitions", str(args.partitions),
           "--producers", "1", "--consumers", "1", "--message-size", "1024",
           "--linger-ms", "1", "--warmup", str(args.warmup), "--duration", str(args.duration),
           "--out", str(d), "--quiet", "--name", phase]
    log(f"{phase}: {' '.join(cmd[1:])}")
    r = subprocess.run(cmd, capture_output=True, text=True,
                       timeout=args.warmup + args.duration + 180)
    (out_dir / f"{phase}.bench.txt").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        text = (r.stdout + r.stderr).split("Stack backtrace")[0]
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(" ")]
        raise RuntimeError(f"shardlog-bench {phase} exited {r.returncode}: " + " | ".join(lines[-4:]))
    files = sorted(d.glob("*.json"))
    if not files:
        raise RuntimeError(f"no bench JSON in {d}")
    return json.loads(files[-1].read_text())


def bench_summary(b: dict) -> dict:
    pl, e2e = b["publish_latency"], b["e2e_latency"]
    return {
        "topic": b["topics"][0],
        "measured_s": round(b["measured_s"], 2),
        "produce_mb_s": round(b["produce"]["mb_per_s"], 3),
        "consume_mb_s": round(b["consume"]["mb_per_s"], 3),
        "publish_p50_ms": pl["p50_ms"], "publish_p99_ms": pl["p99_ms"],
        "publish_p999_ms": pl["p999_ms"], "publish_max_ms": pl["max_ms"],
        "e2e_p50_ms": e2e["p50_ms"], "e2e_p99_ms": e2e["p99_ms"], "e2e_p999_ms": e2e["p999_ms"],
        "errors": b["errors"], "failed_total": b["failed_total"],
        "acked_records": b["broker_check"]["acked_records"],
        "broker_consistent": b["broker_check"]["consistent"],
        "acked_per_partition": {str(p["partition"]): p["acked"]
                                for p in b["broker_check"]["partitions"]},
    }


def read_back(port: int, topic: str, partitions: int, acked: dict, failed: int) -> dict:
    """Every acknowledged record of a bench topic is there: per-partition counts equal what the
    bench saw acknowledged, and the bench's sequence numbers (value bytes 8..16) are unique;
    with no failed record they are exactly 0..N-1."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition
    c = Consumer({"bootstrap.servers": f"127.0.0.1:{port}", "group.id": f"soak-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "fetch.wait.max.ms": 100})
    counts: Counter = Counter()
    seqs: set[int] = set()
    dups = 0
    offsets_bad = 0
    try:
        ends = {}
        for p in range(partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            ends[p] = hi
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        pending = {p for p in range(partitions) if ends[p] > 0}
        next_off = {p: 0 for p in range(partitions)}
        deadline = time.monotonic() + 300
        while pending and time.monotonic() < deadline:
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                        continue
                    raise RuntimeError(str(m.error()))
                p = m.partition()
                if m.offset() != next_off[p]:
                    offsets_bad += 1
                next_off[p] = m.offset() + 1
                counts[p] += 1
                s = struct.unpack_from(">Q", m.value(), 8)[0]
                if s in seqs:
                    dups += 1
                seqs.add(s)
    finally:
        c.close()
    total_acked = sum(acked.values())
    lost = sum(max(0, acked.get(str(p), 0) - counts[p]) for p in range(partitions))
    complete = failed != 0 or seqs == set(range(len(seqs)))
    extra = sum(max(0, counts[p] - acked.get(str(p), 0)) for p in range(partitions))
    return {"topic": topic, "read": sum(counts.values()), "acked": total_acked, "lost": lost,
            "unacknowledged_extra": extra,
            "duplicates": dups, "offset_gaps": offsets_bad,
            "seq_complete": complete, "per_partition": {str(p): counts[p] for p in range(partitions)}}


def effective_limits(args, env_extra: dict) -> dict:
    lim = dict(CONFIG_DEFAULTS)
    if args.config:
        with open(args.config, "rb") as f:
            for k, v in tomllib.load(f).items():
                if k in lim:
                    lim[k] = int(v)
    for k in list(lim):
        v = env_extra.get("SHARDLOG_" + k.upper(), os.environ.get("SHARDLOG_" + k.upper()))
        if v is not None:
            lim[k] = int(v.replace("_", ""))
    return lim


def log_counts(path: Path) -> dict:
    text = path.read_text(errors="replace")
    c = Counter()
    for line in text.splitlines():
        if "panicked" in line:
            c["panicked"] += 1
        if " ERROR " in line:
            c["ERROR"] += 1
        if " WARN " in line:
            c["WARN"] += 1
        for pat in ("closing connection: timeout", "closing connection: bad frame",
                    "closing connection: bad request", "connection refused"):
            if pat in line:
                c[pat] += 1
    c["bytes"] = len(text)
    c["lines"] = text.count("\n")
    return dict(c)


# ---------------------------------------------------------------------------

def prefill(port: int) -> int:
    """Creates JUNK_TOPIC and FILL_TOPIC (1 partition each) and writes FILL_MB into FILL_TOPIC.
    Returns FILL_TOPIC's end offset."""
    with kwire.Conn("127.0.0.1", port) as c:
        c.metadata([JUNK_TOPIC, FILL_TOPIC])  # auto-creates both
        deadline = time.monotonic() + 30
        while True:
            md = c.metadata([JUNK_TOPIC, FILL_TOPIC])
            if all(md["topics"].get(t, {}).get("error_code") == 0 for t in (JUNK_TOPIC, FILL_TOPIC)):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics not ready: {md}")
            time.sleep(0.2)
        val = os.urandom(1000)
        end = 0
        for _ in range(FILL_MB):
            r = c.produce(FILL_TOPIC, 0, kwire.record_batch([kwire.Record(None, val)] * 1000), acks=1)
            if r.error_code != 0:
                raise RuntimeError(f"prefill produce: error {r.error_code}")
            end = r.base_offset + 1000
        return end


def phase_stats(samples: list[dict], phase: str) -> dict:
    ss = [s for s in samples if s["phase"] == phase]
    if not ss:
        return {}
    dur = ss[-1]["t"] - ss[0]["t"] if len(ss) > 1 else 0

    def col(k: str) -> list:
        return [s[k] for s in ss if k in s]

    def rate(k: str) -> float | None:
        v = col(k)
        return round((v[-1] - v[0]) / dur, 3) if len(v) > 1 and dur else None

    def spread(k: str) -> dict | None:
        v = col(k)
        return {"min": min(v), "p50": statistics.median(v), "max": max(v)} if v else None

    rss, scr = col("VmRSS"), col("scrape_ms")
    return {
        "seconds": round(dur, 1),
        "rss_peak_mib": round(max(rss) / 1024, 1) if rss else None,
        "rss_end_mib": round(rss[-1] / 1024, 1) if rss else None,
        "fds_max": max(col("fds"), default=None),
        "broker_cpu_s_per_s": rate("cpu_s"),
        "attack_cpu_s_per_s": rate("attack_cpu_s"),
        "polite_cpu_s_per_s": rate("polite_cpu_s"),
        "broker_connections": spread("shardlog_connections"),
        "request_memory_mib_max": (round(max(col("shardlog_request_memory_bytes")) / MiB, 1)
                                   if col("shardlog_request_memory_bytes") else None),
        "request_memory_waits_per_s": rate("shardlog_request_memory_waits_total"),
        "attack_open": spread("attack_open"),
        "polite_open": spread("polite_open"),
        "metrics_scrape_ms_max": round(max(scr), 1) if scr else None,
    }


class ClientProc:
    """One child process running asyncio clients (load_main) until stop()."""

    def __init__(self, ctx, name: str, cfg: dict, phase_val, sampler: Sampler):
        self.name = name
        self.open = ctx.Value("i", 0)
        self.stop_evt = ctx.Event()
        self.q = ctx.Queue()
        self.proc = ctx.Process(target=load_main, daemon=True,
                                args=(cfg, self.open, self.stop_evt, phase_val, self.q))
        self.proc.start()
        sampler.clients[name] = (self.proc.pid, self.open)

    def stop(self) -> dict:
        self.stop_evt.set()
        try:
            res = self.q.get(timeout=60)
        except Exception:  # noqa: BLE001
            res = {"error": f"{self.name} client process returned nothing"}
        self.proc.join(10)
        if "error" in res:
            raise RuntimeError(f"{self.name} clients: {res}")
        return res


def wait_open(cp: ClientProc, n: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while cp.open.value < n and time.monotonic() < deadline:
        time.sleep(0.2)


def median_of(files: list[str]) -> int:
    """Medians of the key figures over several --json reports (runs of the same setup)."""
    reps = [json.loads(Path(f).read_text()) for f in files]
    reps = [r for r in reps if "phases" in r]
    if not reps:
        print("no complete reports")
        return 2
    print(f"medians of {len(reps)} runs: " + ", ".join(
        f"seed {r['seed']} ({'pass' if r['pass'] else 'FAIL'})" for r in reps))
    print(f"{'':34}{'clean1':>12}{'soak':>12}{'clean2':>12}{'soak/mean':>12}   per run soak/mean")
    rows = ["produce_mb_s", "consume_mb_s", "publish_p50_ms", "publish_p99_ms", "publish_p999_ms",
            "e2e_p99_ms", "polite_p50_ms", "polite_p99_ms", "rss_peak_mib", "rss_end_mib",
            "broker_cpu_s_per_s", "attack_cpu_s_per_s"]
    for k in rows:
        vals = []
        for ph in ("clean1", "soak", "clean2"):
            v = [r["phases"][ph].get(k) for r in reps if r["phases"][ph].get(k) is not None]
            vals.append(statistics.median(v) if v else None)
        rk = f"{k} soak/clean"
        rr = [r["ratios"][rk] for r in reps if rk in r["ratios"]]
        med = f"{statistics.median(rr):.3f}" if rr else ""
        print(f"{k:34}" + "".join(f"{v:>12.3f}" if v is not None else f"{'-':>12}" for v in vals)
              + f"{med:>12}   " + " ".join(f"{x:.2f}" for x in rr))
    conns = [r["phases"]["soak"]["broker_connections"]["p50"] for r in reps]
    print(f"{'soak broker connections p50':34}{statistics.median(conns):>24.0f}")
    print(f"{'RSS peak MiB (whole run) / bound':34}"
          f"{statistics.median([r['rss_peak_mib'] for r in reps]):>24.1f} / "
          f"{statistics.median([r['rss_bound']['mib'] for r in reps]):.0f}")
    kinds = sorted({k for r in reps for k in r["clients"]["attack"]["kinds"]})
    print(f"{'malformed connections opened':34}"
          f"{statistics.median([sum(v['opened'] for v in r['clients']['attack']['kinds'].values()) for r in reps]):>24.0f}"
          f"  ({', '.join(kinds)})")
    print(f"{'lost / duplicated records':34}"
          f"{sum(x['lost'] for r in reps for x in r['read_back']):>24} / "
          f"{sum(x['duplicates'] for r in reps for x in r['read_back'])}")
    print(f"{'panics / SIGTERM exit status':34}"
          f"{sum(r['broker_log'].get('panicked', 0) for r in reps):>24} / "
          f"{sorted({r['sigterm']['exit_status'] for r in reps})}")
    for r in reps:
        if r["failures"]:
            print(f"seed {r['seed']}: " + "; ".join(r["failures"]))
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--median-of":
        return median_of(sys.argv[2:])
    # SIGTERM cleans up like Ctrl-C: clients and the broker are stopped (KeyboardInterrupt).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="measured seconds per phase")
    ap.add_argument("--warmup", type=float, default=5.0, help="bench warm-up seconds per phase")
    ap.add_argument("--connections", type=int, default=1000, help="total during the soak")
    ap.add_argument("--polite", type=int, default=64, help="well-formed raw clients (127.0.0.1)")
    ap.add_argument("--mix", default=",".join(f"{k}={v}" for k, v in DEFAULT_MIX.items()),
                    help="malformed kinds and their relative weights (scaled to fill --connections)")
    ap.add_argument("--source-ips", type=int, default=16, help="malformed clients use 127.0.0.2..")
    ap.add_argument("--rate-mb", type=float, default=4.0, help="well-formed produce MB/s")
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--port", type=int, default=59400)
    ap.add_argument("--admin-port", type=int, default=59401)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--ramp", type=float, default=5.0, help="malformed clients start over this")
    ap.add_argument("--broker-set", action="append", default=[], metavar="KEY=VALUE",
                    help="broker config key (server/src/config.rs), passed as SHARDLOG_KEY")
    ap.add_argument("--broker-env", action="append", default=[], metavar="NAME=VALUE",
                    help="other environment for the broker (e.g. GLIBC_TUNABLES, RUST_LOG)")
    ap.add_argument("--config", help="broker TOML config file (--config of shardlog start)")
    ap.add_argument("--binary", default=str(REPO / "target/release/shardlog"))
    ap.add_argument("--bench", default=str(REPO / "target/release/shardlog-bench"))
    ap.add_argument("--data-dir", help="default: a new temporary directory")
    ap.add_argument("--broker-log", help="broker stderr goes here (default: DATA_DIR/broker.log)")
    ap.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    ap.add_argument("--rss-abort-mib", type=int, default=6144,
                    help="kill the broker if its RSS passes this (protects a shared machine)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**31)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(args.connections * 2 + 1024, 4096)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(want, soft)), hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile < args.connections + 512:
        log(f"RLIMIT_NOFILE {nofile} is too low for {args.connections} connections")
        return 2

    env_extra = {}
    for kv in args.broker_set:
        k, _, v = kv.partition("=")
        env_extra["SHARDLOG_" + k.strip().upper()] = v.strip()
    lim = effective_limits(args, env_extra)
    for kv in args.broker_env:
        k, _, v = kv.partition("=")
        env_extra[k.strip()] = v

    weights = {}
    for part in args.mix.split(","):
        if part.strip():
            k, _, v = part.partition("=")
            if "k_" + k.strip() not in Load.__dict__:
                log(f"unknown kind {k!r}")
                return 2
            weights[k.strip()] = float(v)

    work = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="shardlog-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    data_dir = work / "data"
    out_dir = work / "out"
    out_dir.mkdir(exist_ok=True)
    broker_log = Path(args.broker_log) if args.broker_log else work / "broker.log"
    report: dict = {"seed": seed, "command": " ".join(sys.argv), "work_dir": str(work),
                    "limits": lim, "broker_env": env_extra,
                    "git": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                          capture_output=True, text=True).stdout.strip()}
    log(f"work dir {work}; seed {seed}; broker limits {lim}")

    broker = Broker(args, data_dir, broker_log, env_extra)
    ctx = mp.get_context("spawn")
    phase_val = ctx.Value("i", 0)
    sampler = None
    polite = attack = None
    failures: list[str] = []
    try:
        broker.start()
        broker.wait_ready()
        time.sleep(1.0)
        rss_start_kib = proc_status(broker.pid).get("VmRSS", 0)
        fill_end = prefill(args.port)
        log(f"broker pid {broker.pid} serving; RSS at start {rss_start_kib / 1024:.1f} MiB; "
            f"{FILL_TOPIC} prefilled to offset {fill_end}")
        sampler = Sampler(broker.pid, args.admin_port, phase_val)
        sampler.rss_abort_kib = args.rss_abort_mib * 1024
        sampler.start()
        base_cfg = {"port": args.port, "limits": lim, "seed": seed, "ramp_s": 1.0,
                    "source_ips": args.source_ips, "fill_end": fill_end}

        # ---- polite clients: all phases, their own process
        polite = ClientProc(ctx, "polite", {**base_cfg, "plan": {"polite": args.polite}},
                            phase_val, sampler)
        wait_open(polite, args.polite, 15)
        log(f"{polite.open.value} polite connections open")

        # ---- clean1
        sampler.set_phase("clean1")
        b1 = run_bench(args, "clean1", out_dir)
        extra = [s["shardlog_connections"] - s.get("polite_open", 0) for s in sampler.samples
                 if s["phase"] == "clean1" and "shardlog_connections" in s]
        bench_conns = int(max(extra)) if extra else 3

        # ---- the mix: fill --connections exactly (bench + polite + malformed)
        n_mal = args.connections - bench_conns - args.polite
        tot_w = sum(weights.values())
        mix = {k: int(n_mal * w / tot_w) for k, w in weights.items()}
        short = n_mal - sum(mix.values())
        for k in sorted(weights, key=lambda k: -weights[k])[:short]:
            mix[k] += 1
        mix = {k: v for k, v in mix.items() if v > 0}
        report["mix"] = {"bench_connections": bench_conns, "polite": args.polite, **mix}

        # ---- the RSS bound, stated before the soak runs
        topics_partitions = 3 * args.partitions + 2 + 2 * args.cores  # bench x3, junk, fill, offsets
        meta_resp = 200  # bytes of a Metadata v1 answer for one topic
        terms = {
            "rss_at_start": rss_start_kib * KiB,
            "io_memory (cores x io_memory_bytes)": args.cores * lim["io_memory_bytes"],
            "batch caches (min(partitions x log_cache_bytes, log_cache_total_bytes))":
            min(topics_partitions * lim["log_cache_bytes"], lim["log_cache_total_bytes"]),
            "connections x 128 KiB": args.connections * 128 * KiB,
            "buffered request bytes (max_request_memory_bytes)": lim["max_request_memory_bytes"],
            "fetch_flood x max_inflight x 1 MiB": mix.get("fetch_flood", 0)
            * lim["max_inflight_requests"] * MiB,
            "pipeline_flood x max_inflight x Metadata answer": mix.get("pipeline_flood", 0)
            * lim["max_inflight_requests"] * meta_resp,
            "allocator slack": 64 * MiB,
        }
        rss_bound = sum(terms.values())
        report["rss_bound"] = {"bytes": rss_bound, "mib": round(rss_bound / MiB, 1),
                               "terms_mib": {k: round(v / MiB, 1) for k, v in terms.items()}}
        log(f"mix: {report['mix']}")
        log(f"RSS bound {rss_bound / MiB:.0f} MiB = " + " + ".join(
            f"{k} {v / MiB:.0f}" for k, v in terms.items()))

        # ---- soak
        sampler.set_phase("soak-ramp")
        t_ramp = time.monotonic()
        attack = ClientProc(ctx, "attack", {**base_cfg, "ramp_s": args.ramp, "plan": mix},
                            phase_val, sampler)
        time.sleep(args.ramp)
        wait_open(attack, 0.85 * n_mal, 10)
        log(f"soak: {attack.open.value} malformed + {polite.open.value} polite connections open "
            f"after {time.monotonic() - t_ramp:.1f} s; broker gauge "
            f"{sampler.last('shardlog_connections')}")
        sampler.set_phase("soak")
        try:
            b2 = run_bench(args, "soak", out_dir)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            # The well-formed load could not run under the soak: a verdict, not a harness error.
            b2 = None
            report["soak_bench_error"] = str(e).split("Stack backtrace")[0][-600:]
            log(f"soak: the well-formed load FAILED: {report['soak_bench_error']}")
        sampler.set_phase("soak-stop")
        report["clients"] = {"attack": attack.stop()}

        # ---- back to the clean level?
        t_stop = time.monotonic()
        recovered = None
        while time.monotonic() - t_stop < 15:
            m = scrape(args.admin_port)
            if m and m.get("shardlog_connections", 1e9) <= polite.open.value + 1:
                recovered = round(time.monotonic() - t_stop, 2)
                break
            time.sleep(0.25)
        report["connections_back_to_idle_s"] = recovered
        sampler.set_phase("clean2")
        b3 = run_bench(args, "clean2", out_dir)
        sampler.set_phase("readback")
        report["clients"]["polite"] = polite.stop()

        # ---- read-back
        rb = []
        for b in (b1, b2, b3):
            if b is None:
                continue
            s = bench_summary(b)
            rb.append(read_back(args.port, s["topic"], args.partitions, s["acked_per_partition"],
                                s["failed_total"]))
        report["read_back"] = rb
        sampler.set_phase("stop")
        final_metrics = scrape(args.admin_port)
        report["final_metrics"] = final_metrics
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        log(f"harness failed: {e!r}")
        for cp in (polite, attack):
            if cp is not None and cp.proc.is_alive():
                cp.proc.kill()
        if sampler:
            sampler.stop_evt.set()
        code, _ = broker.stop(30) if broker.proc else (None, 0)
        report["harness_error"] = str(e)
        if sampler and sampler.aborted:
            report["rss_aborted"] = True
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
        return 2

    # ---- stop
    stop_timeout = 2 * lim["shutdown_grace_ms"] / 1000 + 10
    code, stop_s = broker.stop(stop_timeout)
    sampler.stop_evt.set()
    sampler.join(2)
    report["sigterm"] = {"exit_status": code, "seconds": round(stop_s, 2)}
    report["broker_log"] = log_counts(broker_log)

    pol_lat = report["clients"]["polite"]["kinds"]["polite"].get("latency_ms", {})
    phases = {}
    for name, b in (("clean1", b1), ("soak", b2), ("clean2", b3)):
        pl = pol_lat.get(name, {})
        phases[name] = {**(bench_summary(b) if b is not None else
                           {"error": report.get("soak_bench_error"), "errors": {}, "failed_total": 0,
                            "broker_consistent": True}),
                        "polite_p50_ms": pl.get("p50"),
                        "polite_p99_ms": pl.get("p99"), "polite_answers": pl.get("n"),
                        **phase_stats(sampler.samples, name)}
    phases["soak"]["ramp"] = phase_stats(sampler.samples, "soak-ramp")
    report["phases"] = phases
    rss_all = [s["VmRSS"] for s in sampler.samples if "VmRSS" in s]
    report["rss_peak_mib"] = round(max(rss_all) / 1024, 1)
    report["rss_at_start_mib"] = round(rss_start_kib / 1024, 1)
    report["timeline"] = sampler.samples

    # ---- verdict
    c1, sk, c2 = phases["clean1"], phases["soak"], phases["clean2"]
    keys = ("produce_mb_s", "consume_mb_s", "publish_p50_ms", "publish_p99_ms", "publish_p999_ms",
            "e2e_p50_ms", "e2e_p99_ms", "polite_p50_ms", "polite_p99_ms")
    ref = {k: (c1[k] + c2[k]) / 2 for k in keys if c1.get(k) is not None and c2.get(k) is not None}
    worse = {k: max(c1[k], c2[k]) for k in ref}
    ratios = {f"{k} soak/clean": sk[k] / ref[k] for k in ref if sk.get(k) is not None and ref[k]}
    ratios["publish_p99_ms clean2/clean1"] = c2["publish_p99_ms"] / c1["publish_p99_ms"]
    report["clean_reference"] = {"mean": ref, "worse": worse}
    report["ratios"] = {k: round(v, 3) for k, v in ratios.items()}

    def check(ok: bool, what: str) -> None:
        if not ok:
            failures.append(what)

    check(b2 is not None, f"soak: the well-formed load failed: {report.get('soak_bench_error')}")
    for k in ("produce_mb_s", "consume_mb_s"):
        if sk.get(k) is not None:
            check(sk[k] >= 0.95 * ref[k], f"soak {k} {sk[k]} < 95% of clean {ref[k]:.3f}")
    for k in ("publish_p99_ms", "polite_p99_ms"):
        if k in worse and sk.get(k) is not None:
            check(sk[k] <= 2 * worse[k] + 5,
                  f"soak {k} {sk[k]} > 2 x worse clean {worse[k]:.3f} + 5")
    for name, p in phases.items():
        check(not p["errors"] and p["failed_total"] == 0,
              f"{name}: bench errors {p['errors']} failed {p['failed_total']}")
        check(p["broker_consistent"], f"{name}: bench broker check inconsistent")
    kinds = {**report["clients"]["attack"]["kinds"], **report["clients"]["polite"]["kinds"]}
    pol = kinds["polite"]
    check(not pol.get("unexpected") and pol.get("closed_by_broker", 0) == 0
          and pol.get("reset_by_broker", 0) == 0 and not pol.get("connect_failed"),
          f"polite clients failed: {pol.get('unexpected')} closed {pol.get('closed_by_broker')} "
          f"reset {pol.get('reset_by_broker')} connect {pol.get('connect_failed')}")
    for k, v in kinds.items():
        if k in DETERMINISTIC and k != "polite" and v.get("unexpected"):
            failures.append(f"{k}: unexpected outcomes {v['unexpected']}")
    check(report["rss_peak_mib"] * MiB <= rss_bound,
          f"RSS peak {report['rss_peak_mib']} MiB > bound {rss_bound / MiB:.0f} MiB")
    check(recovered is not None, "connection gauge not back to idle within 15 s of the soak")
    for r in report["read_back"]:
        check(r["lost"] == 0 and r["duplicates"] == 0 and r["offset_gaps"] == 0 and r["seq_complete"],
              f"read-back {r['topic']}: {r}")
    check(report["broker_log"].get("panicked", 0) == 0, "broker panicked")
    check(code == 0, f"SIGTERM: exit status {code}")
    report["failures"] = failures
    report["pass"] = not failures

    # ---- summary
    print()
    print(f"soak summary (seed {seed}, {args.duration:.0f} s per phase, "
          f"{args.rate_mb} MB/s acks=all, git {report['git']})")
    print(f"{'':34}{'clean1':>12}{'soak':>12}{'clean2':>12}{'soak/mean':>12}")
    rows = [("produce MB/s", "produce_mb_s"), ("consume MB/s", "consume_mb_s"),
            ("publish p50 ms", "publish_p50_ms"), ("publish p99 ms", "publish_p99_ms"),
            ("publish p99.9 ms", "publish_p999_ms"), ("e2e p50 ms", "e2e_p50_ms"),
            ("e2e p99 ms", "e2e_p99_ms"), ("polite answer p50 ms", "polite_p50_ms"),
            ("polite answer p99 ms", "polite_p99_ms"), ("broker RSS peak MiB", "rss_peak_mib"),
            ("broker RSS end MiB", "rss_end_mib"), ("broker CPU s/s", "broker_cpu_s_per_s"),
            ("attack process CPU s/s", "attack_cpu_s_per_s"),
            ("polite process CPU s/s", "polite_cpu_s_per_s"), ("max broker fds", "fds_max"),
            ("request memory max MiB", "request_memory_mib_max"),
            ("request memory waits /s", "request_memory_waits_per_s")]
    for label, key in rows:
        vals = [p.get(key) for p in (c1, sk, c2)]
        ratio = f"{ratios[key + ' soak/clean']:.3f}" if key + " soak/clean" in ratios else ""
        print(f"{label:34}" + "".join(f"{v if v is not None else '-':>12}" for v in vals)
              + f"{ratio:>12}")

    def conns(p: dict) -> str:
        c = p.get("broker_connections") or {}
        return f"{c['min']:.0f}/{c['p50']:.0f}/{c['max']:.0f}" if c else "-"

    print(f"{'broker connections min/p50/max':34}" + "".join(f"{conns(p):>12}" for p in (c1, sk, c2)))
    print(f"RSS bound {rss_bound / MiB:.0f} MiB, peak {report['rss_peak_mib']} MiB "
          f"(at start {report['rss_at_start_mib']} MiB)")
    print()
    print(f"{'client kind':16}{'conns':>7}{'opened':>9}{'broker closed':>15}{'reset':>7}"
          f"{'we closed':>11}{'requests':>10}{'answers':>9}{'conn fail':>10}  unexpected / notes")
    for k, v in kinds.items():
        notes = dict(v.get("unexpected", {}))
        extra = []
        if "hold_s" in v:
            extra.append(f"held p50 {v['hold_s']['p50']} s (min {v['hold_s']['min']})")
        if "latency_ms" in v and k != "polite":
            extra.append("answer p99 " + ", ".join(f"{ph} {x['p99']} ms"
                                                   for ph, x in v["latency_ms"].items()))
        if v.get("error_codes"):
            extra.append("codes " + ",".join(f"{c}:{n}" for c, n in v["error_codes"].items()))
        if v["connect_failed"]:
            extra.append(f"connect failures {v['connect_failed']}")
        print(f"{k:16}{report['mix'].get(k, 0):>7}{v['opened']:>9}"
              f"{v['closed_by_broker']:>15}{v['reset_by_broker']:>7}{v['closed_by_client']:>11}"
              f"{v['requests']:>10}{v['responses']:>9}{sum(v['connect_failed'].values()):>10}  "
              f"{notes if notes else ''} {'; '.join(extra)}")
    print()
    fm = report.get("final_metrics") or {}
    print(f"broker: accepted {fm.get('shardlog_connections_accepted_total')}, refused "
          f"{fm.get('shardlog_connections_refused_total')}, bad requests "
          f"{fm.get('shardlog_bad_requests_total')}; log {report['broker_log']}")
    print(f"connections back to idle after the soak: {recovered} s; SIGTERM exit {code} in "
          f"{stop_s:.2f} s")
    for r in report["read_back"]:
        print(f"read-back {r['topic']}: read {r['read']} acked {r['acked']} lost {r['lost']} "
              f"dup {r['duplicates']} gaps {r['offset_gaps']} seq complete {r['seq_complete']}")
    print("margins: " + ("all met" if not failures else "VIOLATED:\n  " + "\n  ".join(failures)))

    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        log(f"report written to {args.json}")
    if not args.keep and not args.data_dir:
        shutil.rmtree(work / "data", ignore_errors=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
