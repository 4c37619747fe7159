#!/usr/bin/env python3
"""Watch the block device under a directory and report when it stalls.

    diskwatch.py record DIR OUT.jsonl [INTERVAL_S]   # samples until SIGTERM/SIGINT
    diskwatch.py seconds OUT.jsonl RESULT.json        # per second of a bench run, as JSON

`record` appends one JSON line per sample: the wall-clock time and the device's counters from
/sys/dev/block/MAJ:MIN/stat (see the kernel's Documentation/block/stat.rst). If DIR is not on a
block device it writes nothing and exits 0.

`seconds` lines the samples up with a shardlog-bench result's timeline (timeline_start_unix_ms + t_s)
and prints, for each second, what the device did: writes and flushes completed, their mean
service time (over the second, and over its worst 100 ms when sampled every 50 ms), and the longest stretch in which the device was busy (requests in flight, io_ticks
advancing) but completed nothing at all. That last figure separates a device that stopped
answering from a broker that was slow: the broker cannot answer a produce request whose write or
fdatasync the device has not completed.
"""
import json
import os
import signal
import sys
import time

# Fields of the stat file (0-based).
WRITES, WRITE_TICKS, IN_FLIGHT, IO_TICKS, FLUSHES, FLUSH_TICKS = 4, 7, 8, 9, 15, 16
READS = 0


def stat_path(d):
    st = os.stat(d)
    p = f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat"
    return p if os.path.exists(p) else None


def record(d, out, interval):
    p = stat_path(d)
    if p is None:
        print(f"diskwatch: {d} is not on a block device; not recording", file=sys.stderr)
        return
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    with open(out, "w") as f:
        while not stop:
            with open(p) as s:
                fields = [int(x) for x in s.read().split()]
            f.write(json.dumps({"t": time.time(), "stat": fields}) + "\n")
            f.flush()
            time.sleep(interval)


def completed(s):
    v = s["stat"]
    return v[READS] + v[WRITES] + (v[FLUSHES] if len(v) > FLUSHES else 0)


def stalls(S):
    """(start, end) of every run of consecutive sample intervals in which the device was busy for
    most of the interval and completed no request."""
    runs, start = [], None
    for x, y in zip(S, S[1:]):
        dt_ms = (y["t"] - x["t"]) * 1000
        busy = y["stat"][IO_TICKS] - x["stat"][IO_TICKS]
        if completed(y) == completed(x) and busy >= 0.8 * dt_ms:
            start = x["t"] if start is None else start
            end = y["t"]
        elif start is not None:
            runs.append((start, end))
            start = None
    if start is not None:
        runs.append((start, end))
    return runs


def seconds(samples_path, result_path):
    S = [json.loads(line) for line in open(samples_path) if line.strip()]
    runs = stalls(S)
    r = json.load(open(result_path))
    t0 = (r.get("timeline_start_unix_ms") or r["started_unix_ms"]) / 1000.0
    rows = []
    prev = 0.0
    for e in r["timeline"]:
        lo, hi = t0 + prev, t0 + e["t_s"]
        prev = e["t_s"]
        win = [s for s in S if lo <= s["t"] <= hi]
        row = {"t_s": e["t_s"], "phase": e["phase"], "produce_mbps": e["produce_mbps"],
               "publish_p999_ms": e["publish"]["p999_ms"], "publish_max_ms": e["publish"]["max_ms"]}
        if len(win) >= 2:
            a, b = win[0]["stat"], win[-1]["stat"]
            wr = b[WRITES] - a[WRITES]
            fl = (b[FLUSHES] - a[FLUSHES]) if len(b) > FLUSHES else 0
            row["writes"] = wr
            row["write_ms_mean"] = (b[WRITE_TICKS] - a[WRITE_TICKS]) / wr if wr else None
            row["flushes"] = fl
            row["flush_ms_mean"] = (b[FLUSH_TICKS] - a[FLUSH_TICKS]) / fl if fl else None
            # The worst 100 ms: a burst of slow writes is diluted in the second's mean.
            peak = None
            for x, y in zip(win, win[2:]):
                n = y["stat"][WRITES] - x["stat"][WRITES]
                if n:
                    ms = (y["stat"][WRITE_TICKS] - x["stat"][WRITE_TICKS]) / n
                    peak = ms if peak is None else max(peak, ms)
            row["write_ms_peak_100ms"] = peak
            # The longest stall overlapping this second, whole (it may span seconds).
            row["stall_ms"] = round(max([(e2 - s2) * 1000 for s2, e2 in runs if s2 < hi and e2 > lo], default=0))
        rows.append(row)
    json.dump(rows, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "record":
        record(sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 0.05)
    elif len(sys.argv) == 4 and sys.argv[1] == "seconds":
        seconds(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
