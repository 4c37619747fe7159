#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each), starting from the committed
# seeds. Crashes land in fuzz/artifacts/<target>/; add each one to seeds/ as a regression input
# once fixed.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Seeds come from `cargo run -p shardlog-server --example fuzz_seeds -- fuzz/seeds` (server
# targets) and the engine's and coordinator's encoders; a target with `dicts/<target>.dict`
# gets that libFuzzer dictionary. Targets linking shardlog-server use its guarded global
# allocator (server/src/alloc.rs): allocations of 1 GiB or more are MAP_NORESERVE mappings that
# bypass ASan's malloc, so keep libFuzzer's default -rss_limit_mb=2048 (it measures what is
# really touched) and do not lower -malloc_limit_mb below 1024.
#
# Builds are `-O -a`: release optimisations with debug assertions and overflow checks (plain
# `-O` turns the checks off, and an arithmetic overflow on bad input then goes unnoticed).
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
cargo fuzz build -O -a
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  [ -d "seeds/$t" ] && cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  dict=()
  [ -f "dicts/$t.dict" ] && dict=(-dict="dicts/$t.dict")
  echo "== $t (${SECS}s)"
  cargo fuzz run -O -a "$t" "corpus/$t" -- -max_total_time="$SECS" -max_len=65536 "${dict[@]}" 2>&1 \
    | grep -E -A1 "^Done|ERROR|SUMMARY|panicked|Test unit written" || true
done
