#!/usr/bin/env bash
# The standard shardlog-bench scenarios (issue 5) with the machine's limits, in one run:
#   1. iperf3 over loopback (one stream, like one producer connection)
#   2. fio on the data disk: 1 MiB O_DIRECT sequential writes, fdatasync after each
#   3. a release shardlog on 127.0.0.1:$PORT with its data dir on that disk
#   4. bench/scenarios/1..5; scenario 4 first measures its own workload's max (closed loop, with
#      its consumer), then runs "50mbps" and "80pct" at 0.8 x that max
# Writes bench/results/YYYY-MM-DD/: iperf3.json, fio.json, one JSON + .hlog + 3 SVGs per
# scenario variant, the data disk's counters during the 80% run (4-fixed-rate-latency-80pct-
# disk.jsonl, tuning/diskwatch.py), broker.log and README.md (table with ratios to the limits,
# and the 80% run second by second beside the disk).
#
#   bash tuning/bench-standard.sh [DATA_DIR]
#
# Env: PORT (29150), RUN_TIMEOUT (seconds per scenario file, 600),
#      LAYOUT: split (default) gives the broker the upper half of the CPUs (pinned with taskset,
#        one shard per CPU) and the load generator the lower half, so they never share a core;
#        shared runs both on every CPU (the broker with one shard per CPU). One CPU: shared.
#      CORES (broker shards; default: its CPUs in the layout),
#      QUICK=1 (short runs: 1 s warm-up, 4 s measured, small preloads; for a smoke test),
#      REPORT_ONLY=bench/results/DATE (only regenerate that folder's README.md),
#      OUT_DIR (results folder; default bench/results/<today>).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DATA=${1:-/var/tmp/shardlog-bench-data}
PORT=${PORT:-29150}
# The CPUs this script may use (its affinity mask, as numbers), split into two halves.
read -r -a CPUS <<<"$(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))')"
NCPU=${#CPUS[@]}
LAYOUT=${LAYOUT:-split}
if [ "$LAYOUT" = split ] && [ "$NCPU" -ge 2 ]; then
  # The upper half for the broker (the CPUs its shards are pinned to), the rest for the bench.
  HALF=$((NCPU / 2))
  BROKER_CPUS=$(IFS=,; echo "${CPUS[*]:HALF}")
  BENCH_CPUS=$(IFS=,; echo "${CPUS[*]:0:HALF}")
  CORES=${CORES:-$((NCPU - HALF))}
  BROKER_PIN=(taskset -c "$BROKER_CPUS")
  BENCH_PIN=(taskset -c "$BENCH_CPUS")
  LAYOUT_TEXT="split: broker on CPUs $BROKER_CPUS, bench on CPUs $BENCH_CPUS"
else
  LAYOUT=shared
  CORES=${CORES:-$NCPU}
  BROKER_PIN=()
  BENCH_PIN=()
  LAYOUT_TEXT="shared: broker and bench on all $NCPU CPUs"
fi
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
OUT=${OUT_DIR:-bench/results/$(date +%F)}
mkdir -p "$OUT" "$DATA"
ulimit -l unlimited 2>/dev/null || true

report() {
echo "== report" >&2
# The commit, shard count and layout of a run are kept beside its results in run.txt. Folders
# from before that file: the commit their README names, 2 shards, both processes on both CPUs.
local rev cores="2" layout="shared: broker and bench on both CPUs"
rev=$( (sed -n 's/^Commit `\([0-9a-f]*\)`.*/\1/p' "$OUT/README.md" 2>/dev/null || true) | head -1)
if [ -f "$OUT/run.txt" ]; then
  rev=$(sed -n 1p "$OUT/run.txt")
  cores=$(sed -n 2p "$OUT/run.txt")
  layout=$(sed -n 3p "$OUT/run.txt")
fi
python3 - "$OUT" "${rev:-$(git rev-parse --short HEAD)}" "$cores" "$layout" <<'PY' >"$OUT/README.md"
import glob, json, os, sys
out, rev, cores, layout = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
ip = json.load(open(os.path.join(out, "iperf3.json")))
iperf_mb = ip["end"]["sum_received"]["bits_per_second"] / 8 / 1e6
fj = json.load(open(os.path.join(out, "fio.json")))
fio_mb = fj["jobs"][0]["write"]["bw_bytes"] / 1e6
res = {}
for p in sorted(glob.glob(os.path.join(out, "*.json"))):
    if os.path.basename(p) in ("iperf3.json", "fio.json"):
        continue
    r = json.load(open(p))
    res[(r["scenario"], r["variant"])] = r
print(f"# shardlog-bench standard scenarios, {os.path.basename(out)}\n")
print(f"Commit `{rev}`, broker `--cores {cores}`, layout {layout}, produced by `tuning/bench-standard.sh`.")
print("Throughput is MB/s of record keys and values (10^6 bytes); latencies in ms; publish latency in")
print("open-loop runs is measured from each record's due time (coordinated-omission corrected).\n")
print("## Machine limits\n")
print(f"| limit | MB/s |\n|---|---|\n| iperf3 loopback, 1 stream | {iperf_mb:.0f} |\n| fio 1 MiB O_DIRECT write + fdatasync | {fio_mb:.0f} |\n")
def pct(d, q):
    return d.get("percentile", {}).get(q, 0) / 1e6
wl, sl = fj["jobs"][0]["write"]["clat_ns"], fj["jobs"][0]["sync"]["lat_ns"]
print("The disk's own latency under fio (ms): 1 MiB write p50 %.2f, p99 %.2f, p99.9 %.2f; fdatasync p50 %.2f, p99 %.2f, p99.9 %.2f.\n"
      % (pct(wl, "50.000000"), pct(wl, "99.000000"), pct(wl, "99.900000"), pct(sl, "50.000000"), pct(sl, "99.000000"), pct(sl, "99.900000")))
print("## Results\n")
print("| scenario | variant | produce MB/s | produce rec/s | consume MB/s | publish p50 | p99 | p99.9 | p99.99 | max | e2e p50 | e2e p99.9 | errors | broker check |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for (s, v), r in sorted(res.items()):
    pl, el = r["publish_latency"], r["e2e_latency"]
    err = sum(r["errors"].values())
    ok = "ok" if r["broker_check"]["consistent"] else "MISMATCH"
    print(f"| {s} | {v} | {r['produce']['mb_per_s']:.1f} | {r['produce']['records_per_s']:.0f} | {r['consume']['mb_per_s']:.1f} | "
          f"{pl['p50_ms']:.2f} | {pl['p99_ms']:.2f} | {pl['p999_ms']:.2f} | {pl['p9999_ms']:.2f} | {pl['max_ms']:.2f} | "
          f"{el['p50_ms']:.2f} | {el['p999_ms']:.2f} | {err} | {ok} |")
print("\n## Targets\n")
def get(s, v):
    return res.get((s, v))
a1 = get("1-max-produce-acks1", "p1")
a2 = get("2-max-produce-acks-all-fsync", "p1")
r80 = get("4-fixed-rate-latency", "80pct")
rmax = get("4-fixed-rate-latency", "max")
print("| target | measured | met |\n|---|---|---|")
if a1:
    x = a1["produce"]["mb_per_s"] / iperf_mb
    print(f"| produce, 1 producer, acks=1 >= 45% of iperf3 | {x:.1%} ({a1['produce']['mb_per_s']:.0f} / {iperf_mb:.0f} MB/s) | {'yes' if x >= 0.45 else 'no'} |")
if a1 and a2:
    x = a2["produce"]["mb_per_s"] / max(a1["produce"]["mb_per_s"], 1e-9)
    print(f"| acks=all+fsync >= 80% of acks=1 (1 producer) | {x:.1%} | {'yes' if x >= 0.8 else 'no'} |")
    y = a2["produce"]["mb_per_s"] / fio_mb
    print(f"| (acks=all+fsync vs fio fdatasync, for reading) | {y:.1%} | - |")
if r80:
    p = r80["publish_latency"]["p999_ms"]
    m = f"{rmax['produce']['mb_per_s']:.0f} MB/s" if rmax else "?"
    print(f"| p99.9 publish <= 10 ms at 80% of max (max of the same workload {m}; target {r80['target_records_per_s'] or 0:.0f} rec/s) | {p:.2f} ms | {'yes' if p <= 10 else 'no'} |")
disk = os.path.join(out, "4-fixed-rate-latency-80pct-disk.jsonl")
if r80 and os.path.exists(disk) and os.path.getsize(disk) > 0:
    import subprocess, statistics
    rows = json.loads(subprocess.run([sys.executable, "tuning/diskwatch.py", "seconds", disk, os.path.join(out, "4-fixed-rate-latency-80pct.json")], check=True, capture_output=True, text=True).stdout)
    rows = [r for r in rows if r["phase"] == "measure" and "writes" in r]
    if rows:
        wms = [r["write_ms_mean"] for r in rows if r["write_ms_mean"] is not None]
        med = statistics.median(wms) if wms else 0
        bad = lambda r: r["stall_ms"] >= 50 or (r["write_ms_peak_100ms"] or 0) > 5 * med
        print("\n## The 80% run, second by second, beside the data disk\n")
        print("`tuning/diskwatch.py` sampled the data disk's counters every 50 ms during the run. *stall*: the longest")
        print("stretch overlapping that second in which the device was busy and completed no request at all.")
        print("*worst 100 ms*: the mean write service time in that second's worst 100 ms. `!`: a stall of 50 ms")
        print(f"or more, or a worst 100 ms over 5 times the median second's mean write service time ({med:.2f} ms).\n")
        print("| second | produce MB/s | publish p99.9 | publish max | disk writes | mean write ms | worst 100 ms | flushes | mean flush ms | stall ms | |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        f = lambda v: "-" if v is None else f"{v:.2f}"
        for i, r in enumerate(rows, 1):
            print(f"| {i} | {r['produce_mbps']:.0f} | {r['publish_p999_ms']:.1f} | {r['publish_max_ms']:.1f} | {r['writes']} | {f(r['write_ms_mean'])} | {f(r['write_ms_peak_100ms'])} | {r['flushes']} | {f(r['flush_ms_mean'])} | {r['stall_ms']} | {'!' if bad(r) else ''} |")
        good = [r["publish_p999_ms"] for r in rows if not bad(r)]
        nbad = len(rows) - len(good)
        line = f"\nSeconds marked `!`: {nbad} of {len(rows)}."
        if good:
            line += f" Per-second publish p99.9 in the other {len(good)}: {min(good):.1f}-{max(good):.1f} ms, median {statistics.median(good):.1f} ms."
        print(line)
        log = os.path.join(out, "broker.log")
        if os.path.exists(log):
            n = sum(1 for l in open(log, errors="replace") if "slow disk operation" in l)
            print(f"The broker logged {n} slow-disk-operation warnings (`slow_disk_op_ms`, default 100 ms) over the whole run.")
print("\nPlots: `<scenario>-<variant>-spectrum.svg`, `-throughput.svg`, `-latency.svg`; HdrHistogram logs: `.hlog` (µs).")
PY
}

if [ -n "${REPORT_ONLY:-}" ]; then OUT=$REPORT_ONLY; report; cat "$OUT/README.md"; exit 0; fi

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need iperf3 iperf3
need fio fio

echo "== build" >&2
cargo build --release -q -p shardlog-server -p shardlog-bench
BENCH=target/release/shardlog-bench
BROKER=target/release/shardlog

# A previous run's data is removed first, before anything is measured: on a file system mounted
# with online discard, freeing gigabytes stalls the disk for a while.
rm -rf "$DATA/broker"
sync
sleep 3

echo "== iperf3 loopback (10 s, 1 stream)" >&2
iperf3 -s -1 -p $((PORT + 40)) >/dev/null 2>&1 &
IPERF_PID=$!
sleep 0.5
iperf3 -c 127.0.0.1 -p $((PORT + 40)) -t 10 -J >"$OUT/iperf3.json"
wait "$IPERF_PID" 2>/dev/null || true

echo "== fio on $DATA (1 MiB O_DIRECT writes + fdatasync, 1 GiB)" >&2
rm -f "$DATA/fio.dat"
fio --name=seqfsync --filename="$DATA/fio.dat" --rw=write --bs=1m --size=1g --direct=1 \
  --fdatasync=1 --ioengine=psync --fallocate=native --output-format=json >"$OUT/fio.json"
rm -f "$DATA/fio.dat"
sync
sleep 3

echo "== broker on 127.0.0.1:$PORT, $CORES cores ($LAYOUT_TEXT), data in $DATA/broker" >&2
printf '%s\n%s\n%s\n' "$(git rev-parse --short HEAD)" "$CORES" "$LAYOUT_TEXT" >"$OUT/run.txt"
# A batch cache large enough for scenario 3's "cache" preload (2 x 128 MB), and retention checked
# often enough that the scenarios' retention.bytes keeps the data directory small.
SHARDLOG_LOG_CACHE_BYTES=$((160 << 20)) SHARDLOG_RETENTION_CHECK_INTERVAL_MS=2000 \
  "${BROKER_PIN[@]}" "$BROKER" start --listen "127.0.0.1:$PORT" --data-dir "$DATA/broker" --cores "$CORES" \
  >"$OUT/broker.log" 2>&1 &
BROKER_PID=$!
trap 'kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

QUICK_SET=()
if [ "${QUICK:-0}" = 1 ]; then
  QUICK_SET=(--set warmup_s=1 --set duration_s=4)
fi
run() { # scenario-file [extra args...]
  local f=$1; shift
  echo "== $f $*" >&2
  timeout "$RUN_TIMEOUT" "${BENCH_PIN[@]}" "$BENCH" run --bootstrap "127.0.0.1:$PORT" --scenario "bench/scenarios/$f" \
    --out "$OUT" --quiet "${QUICK_SET[@]}" "$@" || echo "!! $f $* failed (exit $?)" >&2
  # The next scenario starts from an empty disk (each run makes topics named bench-*).
  local topics
  topics=$("$BROKER" topic list --brokers "127.0.0.1:$PORT" --format json \
    | python3 -c 'import json,sys; print(" ".join(t["name"] for t in json.load(sys.stdin) if t["name"].startswith("bench-")))' \
    2>/dev/null || true)
  if [ -n "$topics" ]; then
    # shellcheck disable=SC2086  # one argument per topic
    "$BROKER" topic delete --brokers "127.0.0.1:$PORT" $topics >/dev/null || echo "!! deleting $topics failed" >&2
  fi
  # Deleted partitions are freed in the background, paced (segment_delete_*): wait until that is
  # done so one scenario's cleanup does not land in the next one's measurement (up to 120 s).
  for _ in $(seq 240); do
    [ -z "$(find "$DATA/broker/logs" -maxdepth 3 -name '*.deleted*' -print -quit 2>/dev/null)" ] && break
    sleep 0.5
  done
}
run 1-max-produce-acks1.toml
run 2-max-produce-acks-all-fsync.toml
if [ "${QUICK:-0}" = 1 ]; then
  # No warm-up: consumers read a small preload in well under a second.
  run 3-max-consume.toml --variant cache-c1 --variant cache-c2 --set preload_mb=64 --set warmup_s=0
  run 3-max-consume.toml --variant disk-c1 --variant disk-c2 --set preload_mb=256 --set warmup_s=0
else
  run 3-max-consume.toml
fi
run 4-fixed-rate-latency.toml --variant max
MAX=$(python3 -c 'import json,sys
try: print("%.1f" % json.load(open(sys.argv[1]))["produce"]["mb_per_s"])
except Exception: print("")' "$OUT/4-fixed-rate-latency-max.json")
run 4-fixed-rate-latency.toml --variant 50mbps
if [ -n "$MAX" ]; then
  RATE=$(python3 -c "print('%.1f' % (0.8 * $MAX))")
  # What the data disk does meanwhile, sampled every 50 ms (see tuning/diskwatch.py).
  python3 tuning/diskwatch.py record "$DATA" "$OUT/4-fixed-rate-latency-80pct-disk.jsonl" &
  WATCH_PID=$!
  run 4-fixed-rate-latency.toml --variant 80pct --set "rate_mb_per_s=$RATE"
  kill "$WATCH_PID" 2>/dev/null || true
  wait "$WATCH_PID" 2>/dev/null || true
fi
run 5-partitions-connections.toml

report
cat "$OUT/README.md"
