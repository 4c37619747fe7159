#!/usr/bin/env bash
# Paired A/B of two broker binaries on a subset of the standard scenarios: does a change keep the
# benchmark within noise? Runs are interleaved (A B B A A B ...) so drift on a shared machine
# falls on both sides, each on a fresh data directory, with the standard script's split layout
# (broker pinned to the upper half of the CPUs, the load generator to the lower half).
#
#   bash tuning/bench-ab.sh BIN_A BIN_B [OUT_DIR]
#
# Env: REPS (3 pairs), PORT (29170), DATA (/var/tmp/shardlog-ab-data),
#      CASES (default below: "scenario-file:variant[:extra --set args]" separated by ';').
# Writes OUT_DIR/{a,b}-<rep>/<scenario>-<variant>.json and OUT_DIR/SUMMARY.md: per case the
# median over the repetitions of each side and the ratio B/A. Raw JSON stays out of git.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$(realpath "$1")
B=$(realpath "$2")
OUT=${3:-/var/tmp/shardlog-ab-$(date +%F-%H%M)}
REPS=${REPS:-3}
PORT=${PORT:-29170}
DATA=${DATA:-/var/tmp/shardlog-ab-data}
CASES=${CASES:-"1-max-produce-acks1.toml:p1;2-max-produce-acks-all-fsync.toml:p1;3-max-consume.toml:cache-c1;4-fixed-rate-latency.toml:50mbps;4-fixed-rate-latency.toml:80pct:--set rate_mb_per_s=700"}
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

run_side() { # side binary rep
  local side=$1 bin=$2 rep=$3 dir="$OUT/$1-$3"
  mkdir -p "$dir"
  rm -rf "$DATA" && mkdir -p "$DATA"
  SHARDLOG_LOG_CACHE_BYTES=$((160 << 20)) SHARDLOG_RETENTION_CHECK_INTERVAL_MS=2000 \
    "${BROKER_PIN[@]}" "$bin" start --listen "127.0.0.1:$PORT" --data-dir "$DATA" --cores "$CORES" \
    >"$dir/broker.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  local cases c file variant extra args
  IFS=';' read -r -a cases <<<"$CASES"
  for c in "${cases[@]}"; do
    IFS=':' read -r file variant extra <<<"$c"
    read -r -a args <<<"$extra"
    echo "== $side rep $rep: $file $variant $extra" >&2
    "${BENCH_PIN[@]}" "$BENCH" run --bootstrap "127.0.0.1:$PORT" --scenario "bench/scenarios/$file" \
      --variant "$variant" --out "$dir" --quiet "${args[@]}" >/dev/null || echo "!! $side $file $variant failed" >&2
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

for rep in $(seq "$REPS"); do
  if [ $((rep % 2)) = 1 ]; then run_side a "$A" "$rep"; run_side b "$B" "$rep"
  else run_side b "$B" "$rep"; run_side a "$A" "$rep"; fi
done
rm -rf "$DATA"

python3 - "$OUT" "$A" "$B" "$REPS" <<'EOF'
import glob, json, os, statistics, sys
out, a, b, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = {}
for side in ("a", "b"):
    for f in glob.glob(f"{out}/{side}-*/*.json"):
        d = json.load(open(f))
        key = f"{d['scenario']} {d['variant']}"
        r = rows.setdefault(key, {"a": [], "b": []})
        tput = d["produce"]["mb_per_s"] or d["consume"]["mb_per_s"]
        lat = d["publish_latency"] if d["publish_latency"]["count"] else d["e2e_latency"]
        r[side].append((tput, lat["p50_ms"], lat["p99_ms"], lat["p999_ms"]))
lines = [f"# A/B: {reps} interleaved pairs", "", f"A = `{a}`", f"B = `{b}`", "",
         "Medians over the repetitions; ratio = B / A. Latency is publish (produce runs) or "
         "end-to-end (consume-only runs have none: 0).", "",
         "| case | MB/s A | MB/s B | ratio | p50 A | p50 B | p99 A | p99 B | p99.9 A | p99.9 B | p99.9 ratio |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
for key in sorted(rows):
    r = rows[key]
    if not r["a"] or not r["b"]:
        continue
    med = {s: [statistics.median(x[i] for x in r[s]) for i in range(4)] for s in ("a", "b")}
    ratio = lambda i: f"{med['b'][i] / med['a'][i]:.2f}" if med["a"][i] else "-"
    lines.append(f"| {key} | {med['a'][0]:.1f} | {med['b'][0]:.1f} | {ratio(0)} | "
                 f"{med['a'][1]:.2f} | {med['b'][1]:.2f} | {med['a'][2]:.2f} | {med['b'][2]:.2f} | "
                 f"{med['a'][3]:.2f} | {med['b'][3]:.2f} | {ratio(3)} |")
open(f"{out}/SUMMARY.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
