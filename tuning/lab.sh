#!/usr/bin/env bash
# The tuning lab: runs an experiment's matrix (acks x replication factor x flush policy x
# min.insync.replicas, tuning/experiments/*.toml) against fresh local brokers and writes
# tuning/results/<name>-<date>/REPORT.md with the machine's limits, a table per metric, plots,
# what each configuration survives and the recommended profiles. See bench/README.md, "Tuning lab".
#
#   bash tuning/lab.sh tuning/experiments/default.toml [tune options, e.g. --out DIR]
#
# An interrupted run resumes when started again with the same --out (finished runs are kept).
# This script installs what the lab measures the machine with (iperf3, fio; Debian packages) and
# builds the binaries; `shardlog-bench tune` itself records "not measured" for a missing tool.
# Env: DATA_DIR (brokers' data and fio's file; default /var/tmp/shardlog-lab-data, must support
# O_DIRECT, i.e. not tmpfs).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 EXPERIMENT.toml [tune options]" >&2; exit 2; }
need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; } || echo "!! could not install $2: the report will say not measured" >&2; }
need iperf3 iperf3
need fio fio
ulimit -l unlimited 2>/dev/null || true
echo "== build" >&2
cargo build --release -q -p shardlog -p shardlog-bench
exec target/release/shardlog-bench tune --shardlog target/release/shardlog \
  --data-dir "${DATA_DIR:-/var/tmp/shardlog-lab-data}" "$@"
