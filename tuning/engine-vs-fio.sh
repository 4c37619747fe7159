#!/usr/bin/env bash
# Engine append throughput with fdatasync per 1 MiB batch vs fio doing the same pattern
# (1 MiB O_DIRECT sequential writes, fdatasync after each) on the same disk, alternating runs,
# medians of RUNS. Prints the ratio engine/fio (target >= 0.9).
#
#   bash tuning/engine-vs-fio.sh [DIR] [TOTAL_MIB] [RUNS]
#
# The engine runs twice per round: with one producer (QD1: exactly fio's pattern, one write and
# one fdatasync per batch) and with 4 producers in flight (each batch still acknowledged only
# after an fdatasync that covers it; concurrent batches share fdatasyncs: group commit).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-${TMPDIR:-/tmp}/shardlog-engine-vs-fio}
TOTAL_MIB=${2:-1024}
RUNS=${3:-5}
command -v fio >/dev/null || { apt-get update -qq && apt-get install -y -qq fio >/dev/null; }
ulimit -l unlimited 2>/dev/null || true
mkdir -p "$DIR"
cargo build --release -q -p shardlog-engine --example append_fsync
BIN=target/release/examples/append_fsync
engine=() ; engine4=() ; fio_r=()
for i in $(seq "$RUNS"); do
  rm -f "$DIR/fio.dat"
  f=$(fio --name=seqfsync --filename="$DIR/fio.dat" --rw=write --bs=1m --size="${TOTAL_MIB}m" \
        --direct=1 --fdatasync=1 --ioengine=psync --fallocate=native --output-format=json \
      | python3 -c 'import json,sys; j=json.load(sys.stdin); print("%.1f" % (j["jobs"][0]["write"]["bw_bytes"]/1e6))')
  rm -f "$DIR/fio.dat"
  e=$("$BIN" "$DIR" "$TOTAL_MIB" 1024 1 | sed -n 's/.*MB_per_s=\([0-9.]*\).*/\1/p')
  e4=$("$BIN" "$DIR" "$TOTAL_MIB" 1024 4 | sed -n 's/.*MB_per_s=\([0-9.]*\).*/\1/p')
  echo "run $i: fio ${f} MB/s, engine QD1 ${e} MB/s, engine 4 in flight ${e4} MB/s"
  fio_r+=("$f"); engine+=("$e"); engine4+=("$e4")
done
python3 - "${fio_r[*]}" "${engine[*]}" "${engine4[*]}" <<'PY'
import statistics, sys
f, e, e4 = ([float(x) for x in a.split()] for a in sys.argv[1:4])
mf, me, me4 = statistics.median(f), statistics.median(e), statistics.median(e4)
print(f"median fio {mf:.1f} MB/s | engine QD1 {me:.1f} MB/s ratio {me/mf:.3f} | engine 4 in flight {me4:.1f} MB/s ratio {me4/mf:.3f}")
PY
rm -rf "$DIR"
