#!/usr/bin/env python3
"""What validating and recompressing produced batches costs, on the standard produce
scenario (bench/scenarios/1-max-produce-acks1.toml, variant p1: one producer, ~1 MiB batches of
1 KiB records, acks=1, payload half random).

For each producer codec (default lz4 and zstd) it runs three arms against a fresh broker each
time, interleaved round by round (the order of the arms rotates every round, so a slow minute
on a shared machine does not land on one arm):

  on         validate_compressed_batches = true  (decompress + walk every batch; the default)
  off        validate_compressed_batches = false (store the batch as sent)
  recompress the topic's compression.type is the other codec (lz4 <-> zstd): decompress,
             walk, compress again

Layout as tuning/bench-standard.sh: broker on CPU 1 (`--cores 1`), bench on CPU 0. Prints every
run's produce MB/s (record bytes before compression) and the median per arm, and the ratios of
the medians to `off`.

    .venv/bin/python tuning/compression-ab.py --rounds 5 [--warmup 2 --duration 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "bench/scenarios/1-max-produce-acks1.toml"
OTHER = {"lz4": "zstd", "zstd": "lz4", "gzip": "lz4", "snappy": "lz4"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"broker on {port} did not start")


def run_one(args, codec: str, arm: str, out: Path, data_root: Path) -> float:
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="ab-", dir=data_root))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDLOG_")}
    env.update({"SHARDLOG_LOG_CACHE_BYTES": "167772160",
                "SHARDLOG_RETENTION_CHECK_INTERVAL_MS": "2000",
                "SHARDLOG_ADMIN_LISTEN": "",
                "SHARDLOG_VALIDATE_COMPRESSED_BATCHES": "false" if arm == "off" else "true"})
    log = open(out / f"broker-{codec}-{arm}.log", "ab")
    broker = subprocess.Popen(
        ["taskset", "-c", args.broker_cpu, args.shardlog, "start", "--cores", "1",
         "--listen", f"127.0.0.1:{port}", "--data-dir", str(data)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_port(port)
        sets = ["--set", f"compression={codec}"]
        if arm == "recompress":
            sets += ["--set", f"topic_configs.compression.type={OTHER[codec]}"]
        run_out = out / f"{codec}-{arm}"
        subprocess.run(
            ["taskset", "-c", args.bench_cpu, args.bench, "run", "--bootstrap",
             f"127.0.0.1:{port}", "--scenario", str(SCENARIO), "--variant", "p1",
             "--warmup", str(args.warmup), "--duration", str(args.duration),
             "--out", str(run_out), "--quiet", *sets],
            check=True, stdout=subprocess.DEVNULL, timeout=300)
        result = json.loads((run_out / "1-max-produce-acks1-p1.json").read_text())
        if result["failed_total"] or result["errors"]:
            raise RuntimeError(f"{codec}/{arm}: failures {result['errors'][:3]}")
        return float(result["produce"]["mb_per_s"])
    finally:
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(60)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()
        log.close()
        shutil.rmtree(data, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--duration", type=float, default=8)
    p.add_argument("--codecs", default="lz4,zstd")
    p.add_argument("--arms", default="on,off,recompress")
    p.add_argument("--shardlog", default=str(ROOT / "target/release/shardlog"))
    p.add_argument("--bench", default=str(ROOT / "target/release/shardlog-bench"))
    p.add_argument("--broker-cpu", default="1")
    p.add_argument("--bench-cpu", default="0")
    p.add_argument("--data-root", default="/var/tmp")
    p.add_argument("--out", default="compression-ab-out")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    codecs = args.codecs.split(",")
    arms = args.arms.split(",")
    got: dict[tuple[str, str], list[float]] = {(c, a): [] for c in codecs for a in arms}
    for r in range(args.rounds):
        for codec in codecs:
            order = arms[r % len(arms):] + arms[:r % len(arms)]
            for arm in order:
                mb = run_one(args, codec, arm, out, Path(args.data_root))
                got[(codec, arm)].append(mb)
                print(f"round {r + 1} {codec:5} {arm:10} {mb:8.1f} MB/s", flush=True)
    print("\nmedians (MB/s of record bytes before compression), ratio to 'off':")
    for codec in codecs:
        base = statistics.median(got[(codec, "off")]) if (codec, "off") in got else None
        for arm in arms:
            m = statistics.median(got[(codec, arm)])
            ratio = f"{m / base:6.3f}" if base else "   -"
            runs = ", ".join(f"{v:.0f}" for v in got[(codec, arm)])
            print(f"  {codec:5} {arm:10} median {m:8.1f}  ratio {ratio}  runs {runs}")
    (out / "summary.json").write_text(json.dumps(
        {f"{c}/{a}": v for (c, a), v in got.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
