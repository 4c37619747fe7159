#!/usr/bin/env python3
"""kill -9 loop: a single shardlog broker killed with SIGKILL at random intervals while an
idempotent acks=all producer and a consumer run; afterwards the whole topic is read back.

    .venv/bin/python tuning/fault-kill9-loop.py [--duration 120] [--min-interval 3]
        [--max-interval 20] [--port 59092] [--data-dir DIR] [--partitions 3] [--rate 2000]
        [--seed N] [--json FILE] [--history FILE]

What it does:
  * starts `target/release/shardlog start --listen 127.0.0.1:PORT --data-dir DIR --cores 2`
    (admin listener disabled), creates the topic (PARTITIONS partitions) and a 1-partition
    probe topic;
  * a producer thread (confluent-kafka, enable.idempotence=true, acks=all) sends values
    `seq=<n>` with a unique n, at most RATE per second; every delivery-report success is an
    *acknowledged* record with its (partition, offset);
  * a consumer thread (confluent-kafka, manual assignment from the beginning) reads along;
  * the main thread sleeps a random MIN..MAX seconds, kills the broker with SIGKILL, starts it
    again on the same port and data directory and measures *restart-to-serving*: from the new
    process's spawn until a Metadata request and an acks=all produce (raw wire client, probe
    topic) both succeed; repeated until DURATION seconds have passed;
  * then the producer stops and flushes, and the whole topic is read back from offset 0 to the
    end with a fresh consumer;
  * the producer and the consumer also record every operation in an operation history
    (tests/history; default `history.jsonl.gz` beside the broker log); the final read is added
    to it and the history checker judges the run on its own (report key `history`).

Report (stdout, and JSON with --json):
  acknowledged   records whose delivery report succeeded
  lost           acknowledged records missing from the read-back, or found at another offset
  duplicates     values present more than once in the read-back (0 expected: idempotence)
  holes          per partition, offsets missing between 0 and the end of the read-back
  consumer_lost  records the live consumer saw that are not at the same offset afterwards
  restarts       kill -9 + restart cycles; restart_to_serving p50/p99/max in seconds
  history        the history checker's verdict: valid, counts per anomaly kind, examples

Exit status: 0 when lost, duplicates, holes and consumer_lost are all 0, the history checker
found the history valid, the producer had no fatal error and the broker never panicked; 1
otherwise; 2 when the harness itself failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from fault_common import (DEFAULT_BIN, PROBE_TOPIC, BrokerProc, HistoryWriter, Workload,
                          judge_history, latency_summary, log, read_back)
from util import create_topic  # tests/e2e, on sys.path through fault_common


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of kill loop (120)")
    ap.add_argument("--min-interval", type=float, default=3.0)
    ap.add_argument("--max-interval", type=float, default=20.0)
    ap.add_argument("--port", type=int, default=59092)
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="data directory (default: a fresh temporary one, removed on success)")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--rate", type=int, default=2000, help="records per second (2000)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    ap.add_argument("--history", type=Path, default=None,
                    help="operation history file (JSON lines, .gz compressed; default "
                         "history.jsonl.gz beside the broker log)")
    ap.add_argument("--bin", default=DEFAULT_BIN)
    args = ap.parse_args()
    if not (0 < args.min_interval <= args.max_interval):
        ap.error("need 0 < --min-interval <= --max-interval")
    if not os.access(args.bin, os.X_OK):
        print(f"shardlog binary not found at {args.bin}; build it with "
              f"`cargo build --release -p shardlog`", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    rng = random.Random(seed)

    tmp = None
    if args.data_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="shardlog-kill9-"))
        data_dir = tmp / "data"
    else:
        data_dir = args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = (tmp or data_dir.parent) / "fault-kill9-broker.log"
    broker = BrokerProc(args.bin, args.port, data_dir, log_path, args.cores)
    topic = f"kill9-{seed}"
    log(f"seed {seed}; broker {broker.bootstrap}, data {data_dir}, log {log_path}")

    restart_s: list[float] = []
    kills = 0
    history = None
    try:
        broker.start()
        first = broker.wait_serving(probe_ok=False)
        create_topic(broker.bootstrap, PROBE_TOPIC, 1)
        create_topic(broker.bootstrap, topic, args.partitions)
        log(f"serving after {first:.2f}s; topic {topic} ({args.partitions} partitions), "
            f"{args.rate} rec/s, kill every {args.min_interval}-{args.max_interval}s "
            f"for {args.duration}s")

        history_path = args.history or (tmp or data_dir.parent) / "history.jsonl.gz"
        history = HistoryWriter(history_path, idempotence=True, acks="all",
                                meta={"harness": "fault-kill9-loop", "seed": seed,
                                      "topic": topic, "partitions": args.partitions})
        wl = Workload(broker.bootstrap, topic, args.partitions, args.rate,
                      consumer_group="fault-kill9-live", history=history)
        prod, cons = wl.start()

        end = time.monotonic() + args.duration
        while True:
            wait = rng.uniform(args.min_interval, args.max_interval)
            if time.monotonic() + wait >= end:
                time.sleep(max(0.0, end - time.monotonic()))
                break
            time.sleep(wait)
            if not broker.alive():
                raise RuntimeError(f"broker died on its own (status {broker.proc.returncode}); "
                                   f"see {log_path}")
            with wl.lock:
                acked_before = len(wl.acked)
            broker.kill9()
            kills += 1
            broker.start()
            s = broker.wait_serving(probe_ok=True)
            restart_s.append(s)
            log(f"kill #{kills}: {acked_before} acknowledged so far; serving again after {s:.3f}s")

        log("loop over; stopping the producer and flushing")
        wl.finish(prod, cons)

        log("reading the whole topic back")
        rb = read_back(broker.bootstrap, topic, args.partitions, wl.acked, wl.value, wl.consumed)
        log(f"checking the operation history {history_path}")
        checked = judge_history(history, broker.bootstrap, topic, args.partitions)
        panicked = broker.panicked()
        rc = broker.stop()
        clean_stop = rc == 0

        report = {
            "seed": seed, "duration_s": args.duration, "partitions": args.partitions,
            "rate": args.rate, "sent": wl.sent, "acknowledged": len(wl.acked),
            "delivery_failures": dict(wl.failed), "read_back": rb.messages,
            "lost": len(rb.lost), "lost_sample": rb.lost[:10],
            "duplicates": sum(rb.duplicates.values()),
            "duplicate_sample": [v.decode() for v in list(rb.duplicates)[:10]],
            "holes": sum(rb.holes.values()), "holes_per_partition": rb.holes,
            "consumed_live": len(wl.consumed), "consumer_lost": len(rb.consumer_lost),
            "consumer_reordered": wl.consumer_reordered,
            "restarts": kills,
            "restart_to_serving_s": latency_summary(restart_s),
            "producer_fatal": wl.fatal, "producer_client_errors": dict(wl.client_errors),
            "consumer_errors": dict(wl.consumer_errors), "broker_panicked": panicked,
            "clean_stop_at_end": clean_stop,
            "history": checked,
        }
    except Exception as e:  # noqa: BLE001 - harness failure: report it and exit 2
        log(f"HARNESS FAILURE: {e!r}")
        if history is not None:
            history.close()  # what was recorded stays readable
        if broker.alive():
            broker.proc.kill()
            broker.proc.wait()
        return 2

    rs = report["restart_to_serving_s"]
    fmt = (lambda v: "n/a" if v is None else f"{v:.3f}s")
    print(json.dumps(report, indent=2) if args.json is None else "", end="")
    print(f"\nacknowledged {report['acknowledged']} (sent {report['sent']}, read back "
          f"{report['read_back']}), lost {report['lost']}, duplicates {report['duplicates']}, "
          f"holes {report['holes']}, consumer-seen-then-lost {report['consumer_lost']}; "
          f"restarts {kills}, restart-to-serving p50 {fmt(rs['p50'])} p99 {fmt(rs['p99'])} "
          f"max {fmt(rs['max'])}; history checker: "
          f"{'valid' if checked['valid'] else 'INVALID'}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    bad = (report["lost"] or report["duplicates"] or report["holes"] or report["consumer_lost"]
           or report["producer_fatal"] or panicked or not checked["valid"])
    if bad:
        log(f"FAIL (data dir, broker log and history kept: {data_dir}, {log_path}, "
            f"{history_path})")
        return 1
    if not clean_stop:
        log(f"FAIL: broker did not stop cleanly on SIGTERM at the end (status {rc})")
        return 1
    log("PASS")
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
