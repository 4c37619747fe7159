#!/usr/bin/env python3
"""Disk full on one broker of a 3-broker cluster (RF 3, min.insync.replicas=2, acks=all).

Brokers in network namespaces (tuning/netfault/cluster.py); broker `--full-broker`'s data
directory is a small ext4 file system on a loop device (O_DIRECT works there; tmpfs has none),
filled with a pad file down to `--leave-mib` free once the topics exist. An idempotent acks=all
producer and a live consumer record a history (tests/history) on topic `df` (3 partitions, one
led by each broker) while that disk fills. After `--full-for` seconds the pad file is removed;
after `--recover-for` more the producer stops, the history checker judges the final read.

Reported: what the full broker's partitions did (leader, ISR over time, produce errors; when
the leadership of the partition it led moved, sampled every 2 s; when it left and first rejoined
each ISR; how many times its partitions went offline on a storage error), how long each
partition had no acknowledgement, whether the full broker kept answering Metadata and
serving Fetch for what it holds, and the checker's verdict (nothing acknowledged may be lost).

    .venv/bin/python tuning/cluster-diskfull.py [--full-for 40] [--out /tmp/shardlog-diskfull]
Needs root, `ip`, mkfs.ext4 and loop devices. Exit 1 on lost/duplicated data or a panic.

`--fault eio-read`: instead of a full disk, broker `--full-broker`'s data directory is on a
LazyFS mount (build LazyFS with tuning/lazyfs-build.sh; its patch adds the fault) and, from
`--fault-at` seconds for `--full-for` seconds, every read of the topic's files there fails
with EIO (writes and fsyncs work). Its batch cache is small (`log_cache_bytes` 1 MiB), and a
probe fetches each partition it leads from offset 0 every sample, so reads reach the disk.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fault_common import Workload, judge_history, log  # noqa: E402
from history.record import HistoryWriter  # noqa: E402
from netfault.cluster import KAFKA_PORT, NetCluster, create_topic  # noqa: E402

import kwire  # noqa: E402


def mount_small(img: Path, mnt: Path, mib: int) -> None:
    mnt.mkdir(parents=True, exist_ok=True)
    with open(img, "wb") as f:
        f.truncate(mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-m", "0", str(img)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True, capture_output=True)


def umount(mnt: Path) -> None:
    for _ in range(20):
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
            return
        time.sleep(0.5)
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def pad(path: Path, leave_bytes: int) -> int:
    st = os.statvfs(path.parent)
    size = max(0, st.f_bavail * st.f_frsize - leave_bytes)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size


def lazyfs_class():
    """tuning/fault-powerloss-lazyfs.py's `LazyFS` (a mount controlled through its FIFO)."""
    spec = importlib.util.spec_from_file_location("fault_powerloss_lazyfs",
                                                  HERE / "fault-powerloss-lazyfs.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fault_powerloss_lazyfs"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod.LazyFS


def debug_producers(path: Path) -> None:
    """`--client-debug`: the workload's producers log librdkafka's `msg,protocol,broker,eos`
    debug contexts to `path` (every request and response with its correlation id, request
    timeouts, idempotence drains), each line stamped with the UTC time it was polled (the
    producer polls at least every 50 ms), to match with the brokers' logs."""
    import logging

    import fault_common

    logger = logging.getLogger("diskfull-producer")
    handler = logging.FileHandler(path)
    fmt = logging.Formatter("%(asctime)s.%(msecs)03dZ %(message)s", "%H:%M:%S")
    fmt.converter = time.gmtime
    handler.setFormatter(fmt)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    base = fault_common.RecordingProducer

    class DebugProducer(base):  # type: ignore[misc, valid-type]
        def __init__(self, history, conf: dict, process: str):
            super().__init__(history, {**conf, "debug": "msg,protocol,broker,eos",
                                       "log_level": 7, "logger": logger}, process)

    fault_common.RecordingProducer = DebugProducer


def free_mib(path: Path) -> float:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / (1 << 20)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/shardlog-diskfull"))
    ap.add_argument("--full-broker", type=int, default=3)
    ap.add_argument("--fs-mib", type=int, default=128)
    ap.add_argument("--leave-mib", type=int, default=16)
    ap.add_argument("--full-for", type=float, default=40.0)
    ap.add_argument("--recover-for", type=float, default=30.0)
    ap.add_argument("--rate", type=int, default=400)
    ap.add_argument("--value-bytes", type=int, default=1000)
    ap.add_argument("--replica-lag-ms", type=int, default=10000)
    ap.add_argument("--prefix", default="sldf")
    ap.add_argument("--block", type=int, default=2)
    ap.add_argument("--fault", choices=("diskfull", "eio-read"), default="diskfull")
    ap.add_argument("--fault-at", type=float, default=10.0,
                    help="eio-read: seconds into the workload when reads start failing")
    ap.add_argument("--lazyfs", default="/opt/lazyfs/bin/lazyfs")
    ap.add_argument("--client-debug", action="store_true",
                    help="log the producer's librdkafka debug output to OUT/producer-debug.log")
    a = ap.parse_args()
    shutil.rmtree(a.out, ignore_errors=True)
    a.out.mkdir(parents=True)
    fb = a.full_broker
    eio = a.fault == "eio-read"
    settings = {"replica_lag_time_max_ms": str(a.replica_lag_ms)}
    fs = None
    if eio:
        if not os.access(a.lazyfs, os.X_OK):
            print(f"{a.lazyfs} not found: build it with tuning/lazyfs-build.sh", file=sys.stderr)
            return 2
        fs = lazyfs_class()(a.lazyfs, a.out / "lazyfs", 256)
        fs.mount()
        mnt = fs.mnt
        settings["log_cache_bytes"] = str(1 << 20)
    else:
        mnt = a.out / "small"
        mount_small(a.out / "small.img", mnt, a.fs_mib)
    if a.client_debug:
        debug_producers(a.out / "producer-debug.log")
    report: dict = {"args": {k: str(v) for k, v in vars(a).items()}}
    samples: list[dict] = []
    try:
        with NetCluster(a.out, prefix=a.prefix, block=a.block, settings=settings,
                        data_dirs={fb: mnt / "data"}) as c:
            c.start()
            create_topic(c.bootstrap, "df", 3, 3, {"min.insync.replicas": "2",
                                                   "segment.bytes": str(1 << 20)})
            c.wait_isr_full("df", 3, 60)
            if not eio:
                padded = pad(mnt / "pad", a.leave_mib << 20)
                log(f"broker {fb}'s disk padded with {padded >> 20} MiB; {free_mib(mnt):.1f} "
                    f"MiB free")
            h = HistoryWriter(a.out / "history.jsonl.gz", idempotence=True, acks="all",
                              meta={"run": "cluster-diskfull"})
            wl = Workload(c.bootstrap, "df", 3, a.rate, value_bytes=a.value_bytes, history=h,
                          recreate_on_fatal=True, consumer_group="diskfull-live")
            prod, cons = wl.start()
            t0 = time.monotonic()
            log(f"t=0 is {time.strftime('%H:%M:%S', time.gmtime())}Z")
            freed_at = armed_at = None
            fault_end = a.fault_at + a.full_for if eio else a.full_for
            probe_errors: Counter = Counter()
            fetch_errors: Counter = Counter()
            while time.monotonic() - t0 < fault_end + a.recover_for:
                now = time.monotonic() - t0
                if eio and armed_at is None and now >= a.fault_at:
                    # Segment files, indexes and snapshots of the topic (not __consumer_offsets).
                    fs._command("lazyfs::eio-read::path=/logs/df~", r"eio-read armed")
                    armed_at = now
                    log(f"broker {fb}: every read of the topic's files fails with EIO from now")
                if freed_at is None and now >= fault_end:
                    if eio:
                        fs._command("lazyfs::eio-read::off", r"eio-read disarmed")
                        log(f"broker {fb}: reads work again")
                    else:
                        (mnt / "pad").unlink()
                        log(f"pad removed: {free_mib(mnt):.1f} MiB free")
                    freed_at = now
                s = {"t": round(now, 1), "free_mib": round(free_mib(mnt), 1), "parts": {}}
                try:
                    md = c.metadata(["df"], via=fb, timeout=3)
                    s["metadata_from_full_broker"] = True
                    for p in md["topics"]["df"]["partitions"]:
                        s["parts"][p["partition"]] = (p["leader"], sorted(p["isr"]))
                except Exception as e:  # noqa: BLE001 - recorded
                    s["metadata_from_full_broker"] = repr(e)
                # a raw acks=all produce to the full broker for the partition it leads
                led = [p for p, (lead, _) in s["parts"].items() if lead == fb]
                for p in led:
                    try:
                        with kwire.Conn(c[fb].ip, KAFKA_PORT, timeout=8) as conn:
                            r = conn.produce("df", p, kwire.record_batch(
                                [kwire.Record(None, f"probe-{now:.1f}".encode())]),
                                acks=-1, timeout_ms=3000)
                            s[f"probe_p{p}"] = r.error_code
                            probe_errors[r.error_code] += 1
                    except Exception as e:  # noqa: BLE001 - recorded
                        s[f"probe_p{p}"] = type(e).__name__
                    if not eio:
                        continue
                    # a read from the log start: past the batch cache, so from the disk
                    try:
                        with kwire.Conn(c[fb].ip, KAFKA_PORT, timeout=8) as conn:
                            r = conn.fetch("df", p, 0, max_wait_ms=0)
                            s[f"fetch0_p{p}"] = r.error_code
                            fetch_errors[r.error_code] += 1
                    except Exception as e:  # noqa: BLE001 - recorded
                        s[f"fetch0_p{p}"] = type(e).__name__
                samples.append(s)
                log(json.dumps(s))
                time.sleep(2)
            wl.finish(prod, cons)
            c.wait_isr_full("df", 3, 120)
            rep = judge_history(h, c.bootstrap, "df", 3)
            acks: dict[int, list[float]] = defaultdict(list)
            for seq, (p, _o) in wl.acked.items():
                acks[p].append(wl.acked_at[seq] - t0)
            gaps, gaps_at = {}, {}
            for p, ts in acks.items():
                ts = sorted([0.0] + ts)
                gap, at = max((b - a_, a_) for a_, b in zip(ts, ts[1:]))
                gaps[p], gaps_at[p] = round(gap, 2), round(at, 2)
            # Partitions the full broker led at the start: when (sample time) the leadership
            # moved, and to whom; when the full broker left / rejoined their ISR.
            moved: dict = {}
            first = samples[0]["parts"] if samples else {}
            for p, (lead, _isr) in first.items():
                if lead != fb:
                    continue
                for s_ in samples:
                    cur = s_["parts"].get(p)
                    if cur and cur[0] != fb:
                        moved[p] = {"moved_at_s": s_["t"], "new_leader": cur[0]}
                        break
            isr_out = {}
            for p in first:
                out_at = next((s_["t"] for s_ in samples
                               if p in s_["parts"] and fb not in s_["parts"][p][1]), None)
                back_at = next((s_["t"] for s_ in samples
                                if out_at is not None and s_["t"] > out_at and p in s_["parts"]
                                and fb in s_["parts"][p][1]), None)
                isr_out[p] = {"left_isr_at_s": out_at, "first_back_in_isr_at_s": back_at}
            blog = a.out / f"broker-{fb}.log"
            offline_lines = 0
            if blog.exists():
                offline_lines = blog.read_text(errors="replace").count(
                    "partition offline on this broker")
            panics = [b.node_id for b in c.brokers if b.panicked()]
            dead = [b.node_id for b in c.brokers if not b.alive()]
            report.update({
                "acknowledged": len(wl.acked), "sent": wl.sent, "failed": dict(wl.failed),
                "fatal": wl.fatal[:3], "checker": {k: rep.get(k) for k in
                                                   ("valid", "counts", "stats")},
                "max_ack_gap_s_by_partition": gaps, "max_ack_gap_from_s": gaps_at, "probe_errors": dict(probe_errors),
                "fetch_from_start_errors": dict(fetch_errors), "fault_at_s": armed_at,
                "freed_at_s": freed_at, "leadership_moved": moved, "full_broker_isr": isr_out,
                "full_broker_offline_log_lines": offline_lines,
                "samples": samples, "panics": panics, "dead": dead})
    finally:
        if fs is not None:
            fs.unmount()
        else:
            umount(mnt)
    (a.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1,
                     default=str))
    counts = report.get("checker", {}).get("counts", {})
    bad = any(counts.values()) or report.get("panics") or report.get("dead")
    log("FAIL" if bad else "PASS")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
