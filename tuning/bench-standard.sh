#!/usr/bin/env bash
# The standard shardlog-bench scenarios (issue 5) with the machine's limits, in one run: a thin
# wrapper over the tuning lab's standard experiment, tuning/experiments/standard.toml (the
# workloads of bench/scenarios/1..5, broker on the upper half of the CPUs and the load
# generator on the lower half, iperf3 and fio first; scenario 4's "80%" rate is taken from its
# "max" runs). Writes tuning/results/standard-<date>/ (REPORT.md with the targets, summary.json,
# plots; raw/ holds each run's JSON and HdrHistogram log, ignored by git).
#
#   bash tuning/bench-standard.sh [DATA_DIR] [shardlog-bench tune options, e.g. --out DIR]
#
# Env: OUT_DIR (results folder, the same as --out), REPORT_ONLY=DIR (only rewrite DIR's report:
# shardlog-bench report DIR). Ports, shards, CPUs and timings are in standard.toml; for a
# quick check of the whole pipeline use tuning/lab-smoke.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
for v in PORT RUN_TIMEOUT LAYOUT CORES QUICK; do
  if [ -n "${!v:-}" ]; then
    echo "!! $v is no longer read: set it in tuning/experiments/standard.toml (or use tuning/lab-smoke.sh for a quick run)" >&2
    exit 2
  fi
done
if [ -n "${REPORT_ONLY:-}" ]; then
  cargo build --release -q -p shardlog-bench
  exec target/release/shardlog-bench report "$REPORT_ONLY"
fi
if [ $# -ge 1 ] && [ "${1#-}" = "$1" ]; then
  export DATA_DIR=$1
  shift
fi
OUT=()
if [ -n "${OUT_DIR:-}" ]; then OUT=(--out "$OUT_DIR"); fi
exec bash tuning/lab.sh tuning/experiments/standard.toml "${OUT[@]}" "$@"
