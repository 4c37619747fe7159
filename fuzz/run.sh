#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each), starting from the committed
# seeds. Crashes land in fuzz/artifacts/<target>/; add each one to seeds/ as a regression input
# once fixed.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# cargo-fuzz needs nightly-only compiler flags (-Zsanitizer); RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
cargo fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  [ -d "seeds/$t" ] && cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  echo "== $t (${SECS}s)"
  cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$SECS" -max_len=65536 2>&1 \
    | grep -E "^Done|ERROR|SUMMARY|panicked" || true
done
