#!/usr/bin/env python3
"""Cluster process faults, the long-run version: three real brokers on fixed ports, an RF=3
topic (min.insync.replicas=2), a confluent-kafka producer (acks=all idempotent, or acks=1)
recording an operation history, and one kind of fault injected again and again.

    .venv/bin/python tuning/cluster-faults.py --fault FAULT [--duration 180] [--acks all]
        [--flush every-batch|interval|never]
        [--json FILE] [--rate 300] [--interval 3] [--base-port 41000] [--workdir DIR]
    .venv/bin/python tuning/cluster-faults.py --fault kill-leader --measure-failover 25
        [--json FILE]

FAULT is one of
  kill-leader      kill -9 the partition leader, restart it after INTERVAL s
  kill-follower    kill -9 a follower of the partition, restart it after INTERVAL s
  kill-controller  kill -9 the controller (raft leader), restart it after INTERVAL s
  kill-two         kill -9 the leader and a follower (below min.insync.replicas), restart both
  pause-leader     SIGSTOP the leader for PAUSE s (past the 1.8 s session timeout), then
                   SIGCONT; at each wake-up one produce is sent straight to the old leader
                   while it is still stopped: it must not be acknowledged (`stale_acks`)
  rolling-restart  SIGTERM (controlled shutdown) each broker in turn, restart it
Each fault waits for the partition's ISR to be whole again before the next one.

`--measure-failover N` (with --fault kill-leader) runs N kill -9 cycles of the leader and then
N SIGTERM cycles of the leader, and reports
  failover             kill -9 -> the first acknowledged produce after it (p50, max, all;
                       acknowledgements in the first 50 ms are answers sent before the kill)
  failover_metadata    kill -9 -> a live broker's Metadata names another leader
  shutdown_move        SIGTERM -> a live broker's Metadata names another leader
  shutdown_failed      delivery errors during the SIGTERM cycles (0 expected)
Targets (issue 19): failover median < 1 s, every one < 3 s; controlled-shutdown move < 200 ms
with no failed produce.

Report (stdout and --json): acknowledged (ok sends), lost, duplicated, anomalies by kind (the
history checker's, tests/history), info sends (indeterminate outcome), delivery errors by
name, and the unavailability window of every fault: the longest time without an acknowledged
produce from the fault until the partition's ISR is whole again (p50, max, all), plus the time
from each fault to the first acknowledgement after it (`first_ack_after_fault`). The history
file and broker logs stay in the work directory. Exit status 0 when the history is valid (no
lost acknowledged acks=all write, no
duplicate, no anomaly; with acks=1 lost writes are reported but expected) and no broker
panicked; 1 otherwise; 2 when the harness failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from cluster_common import (ACK_GRACE_S, ClusterWorkload, FixedCluster, HistoryWriter,
                            create_rf3_topic, judge, partition_state, stale_leader_produce,
                            wait_isr, wait_new_leader)
from fault_common import latency_summary, log

FAULTS = ("kill-leader", "kill-follower", "kill-controller", "kill-two", "pause-leader",
          "rolling-restart")


class Run:
    def __init__(self, args, cluster: FixedCluster, topic: str, wl: ClusterWorkload):
        self.args = args
        self.c = cluster
        self.topic = topic
        self.wl = wl
        self.windows: list[float] = []  # fault -> first ack after it, seconds
        self.no_ack: int = 0  # faults after which no ack came within the wait
        self.faults = 0
        # per fault: the longest time without an acknowledgement from the fault to the
        # cluster being whole again (the unavailability window)
        self.gaps: list[float] = []
        self.stale_acks: list = []
        self.stale_answers: dict[str, int] = {}

    def leader(self) -> int:
        def known():
            s = partition_state(self.c, self.topic)
            return s["leader"] if s is not None and s["leader"] >= 0 else None
        return self.c.wait_until(known, 60, "the partition to have a leader")

    def window(self, t: float, wait: float = 90.0) -> float | None:
        a = self.wl.wait_ack_after(t + ACK_GRACE_S, timeout=wait)
        if a is None:
            self.no_ack += 1
            log(f"  no acknowledgement within {wait}s of the fault")
            return None
        w = a - t
        self.windows.append(w)
        return w

    def whole(self) -> None:
        wait_isr(self.c, self.topic, 3, timeout=120)

    # -- faults ---------------------------------------------------------------------------
    def kill_leader(self) -> None:
        old = self.leader()
        t = time.monotonic()
        self.c.kill(old)
        w = self.window(t)
        log(f"  kill -9 leader {old}: first ack after {w if w is None else round(w, 3)} s")
        time.sleep(self.args.interval)
        self.c.restart(old)
        self.whole()

    def kill_follower(self) -> None:
        s = partition_state(self.c, self.topic)
        f = random.choice([r for r in s["replicas"] if r != s["leader"]])
        t = time.monotonic()
        self.c.kill(f)
        w = self.window(t)
        log(f"  kill -9 follower {f}: first ack after {w if w is None else round(w, 3)} s")
        time.sleep(self.args.interval)
        self.c.restart(f)
        self.whole()

    def kill_controller(self) -> None:
        ctl = self.c.wait_until(lambda: self.c.controller(), 30, "a controller")
        t = time.monotonic()
        self.c.kill(ctl)
        w = self.window(t)
        log(f"  kill -9 controller {ctl}: first ack after {w if w is None else round(w, 3)} s")
        time.sleep(self.args.interval)
        self.c.restart(ctl)
        self.whole()

    def kill_two(self) -> None:
        s = partition_state(self.c, self.topic)
        f = random.choice([r for r in s["replicas"] if r != s["leader"]])
        t = time.monotonic()
        self.c.kill(s["leader"])
        self.c.kill(f)
        time.sleep(self.args.interval)
        self.c.restart(s["leader"], wait=False)
        self.c.restart(f, wait=False)
        self.c[s["leader"]].wait_ready()
        self.c[f].wait_ready()
        w = self.window(t)
        log(f"  kill -9 leader {s['leader']} and follower {f}: first ack after "
            f"{w if w is None else round(w, 3)} s")
        self.whole()

    def pause_leader(self) -> None:
        old = self.leader()
        t = time.monotonic()
        self.c.pause(old)
        w = self.window(t)
        time.sleep(max(0.0, t + self.args.pause - time.monotonic()))
        results: list = []
        th = threading.Thread(target=lambda: results.append(stale_leader_produce(
            self.c[old], self.topic, f"stale-{self.faults}".encode(), timeout_ms=3000)))
        th.start()
        time.sleep(0.3)
        self.c.resume(old)
        th.join(30)
        kind = results[0][0] if results else "no-answer"
        self.stale_answers[kind] = self.stale_answers.get(kind, 0) + 1
        if kind == "ok":
            self.stale_acks.append(results[0])
        log(f"  SIGSTOP leader {old} for {self.args.pause}s: first ack after "
            f"{w if w is None else round(w, 3)} s; stale produce -> {results[:1]}")
        self.whole()

    def rolling_restart(self) -> None:
        for node in (1, 2, 3):
            t = time.monotonic()
            self.c.stop(node)
            w = self.window(t)
            log(f"  SIGTERM broker {node}: first ack after {w if w is None else round(w, 3)} s")
            self.c.restart(node)
            self.whole()

    def loop(self) -> None:
        fn = getattr(self, self.args.fault.replace("-", "_"))
        end = time.monotonic() + self.args.duration
        while time.monotonic() < end:
            self.faults += 1
            t = time.monotonic()
            fn()
            self.wl.wait_acks(10, timeout=60)
            self.gaps.append(self.wl.longest_gap(t, time.monotonic()))
            log(f"  longest time without an acknowledgement in this fault: "
                f"{self.gaps[-1]:.3f} s")

    # -- failover measurement ---------------------------------------------------------------
    def measure(self, n: int) -> dict:
        failover, meta, moves, shutdown_windows = [], [], [], []
        for i in range(n):
            old = self.leader()
            t = time.monotonic()
            self.c.kill(old)
            wait_new_leader(self.c, self.topic, old, interval=0.01)
            meta.append(time.monotonic() - t)
            w = self.window(t)
            if w is not None:
                failover.append(w)
            log(f"  [{i + 1}/{n}] kill -9 leader {old}: metadata {meta[-1]:.3f} s, "
                f"first ack {w if w is None else round(w, 3)} s")
            time.sleep(self.args.interval)
            self.c.restart(old)
            self.whole()
            self.wl.wait_acks(20)
        failed_before = sum(self.wl.failed.values())
        for i in range(n):
            old = self.leader()
            b = self.c[old]
            b.expected_exit = True
            t = time.monotonic()
            b.proc.send_signal(signal.SIGTERM)
            wait_new_leader(self.c, self.topic, old, interval=0.005)
            moves.append(time.monotonic() - t)
            rc = b.proc.wait(30)
            b._close_log()
            if rc != 0:
                raise RuntimeError(f"broker {old} exited {rc} after SIGTERM")
            w = self.window(t)
            if w is not None:
                shutdown_windows.append(w)
            log(f"  [{i + 1}/{n}] SIGTERM leader {old}: leadership moved in {moves[-1]:.3f} s, "
                f"first ack {w if w is None else round(w, 3)} s")
            time.sleep(self.args.interval)
            self.c.restart(old)
            self.whole()
            self.wl.wait_acks(20)
        return {"failover": latency_summary(failover),
                "failover_metadata": latency_summary(meta),
                "shutdown_move": latency_summary(moves),
                "shutdown_first_ack": latency_summary(shutdown_windows),
                "shutdown_failed": sum(self.wl.failed.values()) - failed_before}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fault", choices=FAULTS, required=True)
    ap.add_argument("--duration", type=float, default=180.0, help="seconds of faults (180)")
    ap.add_argument("--acks", choices=("1", "all"), default="all")
    ap.add_argument("--flush", choices=("every-batch", "interval", "never"), default=None,
                    help="brokers' default_flush (default: the broker's, every-batch); "
                         "interval uses flush_interval_ms 1000")
    ap.add_argument("--rate", type=int, default=300, help="records per second (300)")
    ap.add_argument("--interval", type=float, default=3.0,
                    help="seconds a killed broker stays down (3)")
    ap.add_argument("--pause", type=float, default=4.0, help="SIGSTOP length, s (4)")
    ap.add_argument("--measure-failover", type=int, default=0, metavar="N")
    ap.add_argument("--base-port", type=int, default=41000,
                    help="broker i listens on BASE+10*(i-1) (+1 controller, +2 admin)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--bin", default=None, help="shardlog binary (default target/release)")
    args = ap.parse_args()
    if args.measure_failover and args.fault != "kill-leader":
        ap.error("--measure-failover goes with --fault kill-leader")
    if args.bin:
        os.environ["SHARDLOG_BIN"] = args.bin
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    random.seed(seed)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"cluster-{args.fault}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = {}
    if args.flush:
        env["SHARDLOG_DEFAULT_FLUSH"] = args.flush
        if args.flush == "interval":
            env["SHARDLOG_FLUSH_INTERVAL_MS"] = "1000"
    cluster = FixedCluster(workdir, args.base_port, env=env)
    topic = f"faults-{args.fault}-{seed}"
    log(f"seed {seed}; workdir {workdir}; fault {args.fault}, acks={args.acks}, "
        f"flush={args.flush or 'every-batch'}, {args.rate} rec/s")
    report: dict = {"fault": args.fault, "acks": args.acks, "seed": seed, "rate": args.rate,
                    "flush": args.flush or "every-batch",
                    "interval_s": args.interval, "workdir": str(workdir)}
    status = 0
    try:
        cluster.start()
        create_rf3_topic(cluster, topic)
        history = HistoryWriter(workdir / "history.jsonl.gz", idempotence=args.acks == "all",
                                acks=args.acks, meta={"harness": "cluster-faults",
                                                      "fault": args.fault, "seed": seed})
        wl = ClusterWorkload(cluster.bootstrap, topic, history, rate=args.rate,
                             acks=args.acks).start()
        wl.wait_acks(50, timeout=30)
        run = Run(args, cluster, topic, wl)
        t0 = time.monotonic()
        if args.measure_failover:
            report["measure"] = run.measure(args.measure_failover)
        else:
            run.loop()
        report["seconds"] = round(time.monotonic() - t0, 1)
        wl.finish()
        j = judge(history, ",".join(b.bootstrap for b in cluster.alive()), topic)
        counts = j.report["counts"]
        report.update({
            "faults": run.faults if not args.measure_failover else 2 * args.measure_failover,
            "sent": wl.sent, "acknowledged": j.acked_sends, "info_sends": j.info_sends,
            "failed_sends": j.failed_sends, "delivery_errors": dict(wl.failed),
            "fatal": wl.fatal, "left_in_queue": wl.left_in_queue,
            "lost": counts.get("lost", 0), "duplicated": counts.get("duplicates", 0),
            "anomalies": {k: v for k, v in counts.items() if v},
            "history_valid": j.report["valid"], "final_problems": j.problems(),
            "unavailability": latency_summary(run.gaps),
            "first_ack_after_fault": latency_summary(run.windows),
            "faults_without_ack": run.no_ack,
            "stale_acks": run.stale_acks, "stale_answers": run.stale_answers,
            "history": str(history.path), "examples": j.report.get("examples"),
        })
        bad = (not j.report["valid"] and args.acks == "all") or run.stale_acks or wl.fatal
        status = 1 if bad else 0
    except Exception as e:  # noqa: BLE001 - the harness failed; say so and keep the logs
        log(f"harness failure: {e!r}")
        report["harness_error"] = repr(e)
        status = 2
    finally:
        try:
            cluster.teardown()
        except Exception as e:  # noqa: BLE001 - a broker exited badly or panicked
            report["teardown_error"] = str(e)[:4000]
            status = max(status, 1)
    print(json.dumps({k: v for k, v in report.items() if k != "examples"}, indent=1,
                     default=str), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return status


if __name__ == "__main__":
    sys.exit(main())
