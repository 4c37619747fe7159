#!/usr/bin/env bash
# Side-by-side A/B of two broker binaries: both brokers run AT THE SAME TIME, each with its own
# load generator, so whatever else the machine does (other builds, other benchmarks, disk
# flushes) falls on both sides at once. For a shared, loaded machine where the interleaved
# tuning/bench-ab.sh cannot separate a change from the drift between its runs. The price: the
# two sides compete with each other (both brokers on the upper half of the CPUs, both load
# generators on the lower half), so use a rate both sustain together, and read the result
# only as a comparison (B / A), never as the broker's latency alone.
#
#   bash tuning/bench-ab-side.sh BIN_A BIN_B [OUT_DIR]
#
# Env: RUNS (3), RATE (MB/s per side, 20), PORT (29270; A uses PORT and PORT+1 for /metrics,
#      B PORT+10 and PORT+11), DATA (/var/tmp/shardlog-ab-side), SCENARIO
#      (4-fixed-rate-latency.toml), VARIANT (80pct; its rate is replaced by RATE).
# Writes OUT_DIR/run-<n>/{a,b}/<scenario>-<variant>.json, each broker's log and /metrics at the
# end, and OUT_DIR/SUMMARY.md: per run both sides' publish latency and the ratio B / A, then
# the medians over the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$(realpath "$1")
B=$(realpath "$2")
OUT=${3:-/var/tmp/shardlog-ab-side-$(date +%F-%H%M)}
RUNS=${RUNS:-3}
RATE=${RATE:-20}
PORT=${PORT:-29270}
DATA=${DATA:-/var/tmp/shardlog-ab-side}
SCENARIO=${SCENARIO:-4-fixed-rate-latency.toml}
VARIANT=${VARIANT:-80pct}
mkdir -p "$OUT"
ulimit -l unlimited 2>/dev/null || true

read -r -a CPUS <<<"$(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))')"
NCPU=${#CPUS[@]}
if [ "$NCPU" -ge 2 ]; then
  HALF=$((NCPU / 2))
  BROKER_PIN=(taskset -c "$(IFS=,; echo "${CPUS[*]:HALF}")")
  BENCH_PIN=(taskset -c "$(IFS=,; echo "${CPUS[*]:0:HALF}")")
  CORES=$((NCPU - HALF))
else
  BROKER_PIN=(); BENCH_PIN=(); CORES=1
fi

cargo build --release -q -p shardlog-bench
BENCH=target/release/shardlog-bench

wait_port() {
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "!! nothing listens on $1" >&2
}

declare -A pid bench port
port[a]=$PORT
port[b]=$((PORT + 10))

start_broker() { # side binary dir; sets pid[side] (a child of this shell, so `wait` works)
  local data="$DATA/$1"
  rm -rf "$data" && mkdir -p "$data"
  SHARDLOG_LOG_CACHE_BYTES=$((160 << 20)) SHARDLOG_RETENTION_CHECK_INTERVAL_MS=2000 \
    "${BROKER_PIN[@]}" "$2" start --listen "127.0.0.1:${port[$1]}" \
    --admin-listen "127.0.0.1:$((port[$1] + 1))" --data-dir "$data" --cores "$CORES" \
    >"$3/broker-$1.log" 2>&1 &
  pid[$1]=$!
}

for run in $(seq "$RUNS"); do
  dir="$OUT/run-$run"
  mkdir -p "$dir/a" "$dir/b"
  # Alternate which side starts first.
  if [ $((run % 2)) = 1 ]; then order=(a b); else order=(b a); fi
  for s in "${order[@]}"; do
    bin=$A; [ "$s" = b ] && bin=$B
    start_broker "$s" "$bin" "$dir"
  done
  for s in a b; do wait_port "${port[$s]}"; done
  uptime >"$dir/load-start"
  echo "== run $run: both sides at $RATE MB/s ($(cat "$dir/load-start"))" >&2
  for s in "${order[@]}"; do
    "${BENCH_PIN[@]}" "$BENCH" run --bootstrap "127.0.0.1:${port[$s]}" \
      --scenario "bench/scenarios/$SCENARIO" --variant "$VARIANT" --set "rate_mb_per_s=$RATE" \
      --out "$dir/$s" --quiet >/dev/null 2>"$dir/$s/bench.err" &
    bench[$s]=$!
  done
  for s in a b; do wait "${bench[$s]}" || echo "!! side $s failed in run $run (see $dir/$s/bench.err)" >&2; done
  uptime >"$dir/load-end"
  for s in a b; do
    curl -s "127.0.0.1:$((port[$s] + 1))/metrics" >"$dir/$s/metrics" || true
    kill "${pid[$s]}" 2>/dev/null || true
  done
  # Both gone before the next run reuses their data directories.
  for s in a b; do wait "${pid[$s]}" 2>/dev/null || true; done
done
rm -rf "$DATA"

python3 - "$OUT" "$A" "$B" "$RATE" <<'EOF'
import glob, json, os, statistics, sys
out, a, b, rate = sys.argv[1:5]
rows = []
for run in sorted(glob.glob(f"{out}/run-*"), key=lambda d: int(d.rsplit("-", 1)[1])):
    got = {}
    for s in "ab":
        js = glob.glob(f"{run}/{s}/*.json")
        if js:
            d = json.load(open(js[0]))
            got[s] = (d["produce"]["mb_per_s"], d["publish_latency"])
    if len(got) == 2:
        load = open(f"{run}/load-start").read().split("load average:")[1].split(",")[0].strip()
        rows.append((os.path.basename(run), load, got["a"], got["b"]))
lines = [f"# Side-by-side A/B: {len(rows)} runs at {rate} MB/s per side", "",
         f"A = `{a}`", f"B = `{b}`", "",
         "Publish latency (ms) of both sides of each run; ratio = B / A. Load is the 1-minute "
         "load average when the run started.", "",
         "| run | load | MB/s A | MB/s B | p50 A | p50 B | p99 A | p99 B | p99 ratio | p99.9 A | p99.9 B | p99.9 ratio |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
ratio = lambda x, y: y / x if x else float("nan")
for name, load, (ta, la), (tb, lb) in rows:
    lines.append(f"| {name} | {load} | {ta:.1f} | {tb:.1f} | {la['p50_ms']:.2f} | {lb['p50_ms']:.2f} | "
                 f"{la['p99_ms']:.2f} | {lb['p99_ms']:.2f} | {ratio(la['p99_ms'], lb['p99_ms']):.2f} | "
                 f"{la['p999_ms']:.2f} | {lb['p999_ms']:.2f} | {ratio(la['p999_ms'], lb['p999_ms']):.2f} |")
if rows:
    med = lambda f: statistics.median(f(r) for r in rows)
    lines.append(f"| median | | {med(lambda r: r[2][0]):.1f} | {med(lambda r: r[3][0]):.1f} | "
                 f"{med(lambda r: r[2][1]['p50_ms']):.2f} | {med(lambda r: r[3][1]['p50_ms']):.2f} | "
                 f"{med(lambda r: r[2][1]['p99_ms']):.2f} | {med(lambda r: r[3][1]['p99_ms']):.2f} | "
                 f"{med(lambda r: ratio(r[2][1]['p99_ms'], r[3][1]['p99_ms'])):.2f} | "
                 f"{med(lambda r: r[2][1]['p999_ms']):.2f} | {med(lambda r: r[3][1]['p999_ms']):.2f} | "
                 f"{med(lambda r: ratio(r[2][1]['p999_ms'], r[3][1]['p999_ms'])):.2f} |")
open(f"{out}/SUMMARY.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
