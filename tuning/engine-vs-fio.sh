#!/usr/bin/env bash
# Engine append throughput with fdatasync per 1 MiB batch vs fio doing the same pattern
# (1 MiB O_DIRECT sequential writes, fdatasync after each) on the same disk, alternating runs,
# medians of RUNS. Prints the ratio engine/fio (target >= 0.9).
#
#   bash tuning/engine-vs-fio.sh [DIR] [TOTAL_MIB] [RUNS]
#
# The engine runs three times per round: with one producer (QD1: exactly fio's pattern, one
# write and one fdatasync per batch) on a fresh log, with 4 producers in flight (each batch still
# acknowledged only after an fdatasync that covers it; concurrent batches share fdatasyncs: group
# commit), and QD1 in steady state ("steady": retention running, rolls reuse deleted segments'
# files). Like is compared with like: fresh log vs fio on a fresh fallocated file; steady state
# vs fio overwriting the file it has just written (no unwritten extents in either).
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
engine=() ; engine4=() ; fio_r=() ; fio_us=() ; eng_app=() ; eng_wait=() ; fio_ow=() ; steady=()
# Each engine run removes its log on exit; the paced deleter may not have finished by then.
# Removing the rest frees (and, on a discard mount, discards) hundreds of MiB: let that settle
# before the next measurement starts.
clean() { rm -rf "$DIR"/append-fsync-0* "$DIR/fio.dat"; sync; sleep 1; }
# fio's sequential 1 MiB O_DIRECT writes with fdatasync each, on $DIR/fio.dat; prints
# "MB/s us-per-MiB" (write completion + fdatasync latency, means).
fio_seq() {
  fio --name=seqfsync --filename="$DIR/fio.dat" --rw=write --bs=1m --size="${TOTAL_MIB}m" \
      --direct=1 --fdatasync=1 --ioengine=psync --fallocate=native --output-format=json \
    | python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print("%.1f %.0f" % (j["write"]["bw_bytes"]/1e6, (j["write"]["clat_ns"]["mean"] + j["sync"]["lat_ns"]["mean"])/1e3))'
}
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; } # KEY LINE: the number after KEY=
for i in $(seq "$RUNS"); do
  clean
  read -r f fus < <(fio_seq)
  read -r fow _ < <(fio_seq) # the same file again: overwriting written blocks
  clean; es=$(field MB_per_s "$("$BIN" "$DIR" "$TOTAL_MIB" 1024 1 steady)")
  clean; line=$("$BIN" "$DIR" "$TOTAL_MIB" 1024 1)
  e=$(field MB_per_s "$line"); ea=$(field append_us "$line"); ew=$(field commit_wait_us "$line")
  clean; e4=$(field MB_per_s "$("$BIN" "$DIR" "$TOTAL_MIB" 1024 4)")
  echo "run $i: fio ${f} MB/s (write+fdatasync ${fus} us per MiB), engine QD1 ${e} MB/s (append ${ea} us + commit wait ${ew} us per batch), engine 4 in flight ${e4} MB/s; fio overwrite ${fow} MB/s, engine QD1 steady state ${es} MB/s"
  fio_r+=("$f"); fio_us+=("$fus"); engine+=("$e"); engine4+=("$e4"); eng_app+=("$ea"); eng_wait+=("$ew"); fio_ow+=("$fow"); steady+=("$es")
done
python3 - "${fio_r[*]}" "${engine[*]}" "${engine4[*]}" "${fio_us[*]}" "${eng_app[*]}" "${eng_wait[*]}" "${fio_ow[*]}" "${steady[*]}" <<'PY'
import statistics, sys
f, e, e4, fus, ea, ew, fow, es = ([float(x) for x in a.split()] for a in sys.argv[1:9])
mf, me, me4 = statistics.median(f), statistics.median(e), statistics.median(e4)
ratios = sorted(x / y for x, y in zip(e, f))
print(f"median fio {mf:.1f} MB/s | engine QD1 {me:.1f} MB/s ratio {me/mf:.3f} | engine 4 in flight {me4:.1f} MB/s ratio {me4/mf:.3f}")
print(f"per-run QD1 ratios (engine/fio of the same round): {' '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.3f}")
print(f"per batch (medians): fio write+fdatasync {statistics.median(fus):.0f} us; engine append (validate, CRC, copy) {statistics.median(ea):.0f} us + commit wait {statistics.median(ew):.0f} us")
sr = sorted(x / y for x, y in zip(es, fow))
print(f"steady state: median fio overwrite {statistics.median(fow):.1f} MB/s | engine QD1 steady {statistics.median(es):.1f} MB/s ratio {statistics.median(es)/statistics.median(fow):.3f}; per-run {' '.join(f'{r:.2f}' for r in sr)}")
PY
rm -rf "$DIR"
