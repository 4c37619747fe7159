#!/usr/bin/env bash
# The test command: lint, build, unit/property tests, then the end-to-end suite
# against real `shardlog` processes with real Kafka clients.
#
#   bash tests/run.sh
#
# Works on a fresh Debian machine (Rust toolchain + python3.11 present, root):
# installs kcat (and node/npm when absent) with apt-get, the Python clients into ./.venv and
# the JavaScript client (kafkajs) into tests/e2e/js/node_modules when missing or stale.
# Environment knobs:
#   SKIP_LINT=1        skip cargo fmt / clippy
#   PYTEST_ARGS="..."  extra arguments for pytest (e.g. "-k kcat -x")
set -uo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
START=$(date +%s)
STAGE=""

log() { printf '\n==> [%4ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }

fail() {
    printf '\n!!! tests/run.sh FAILED at stage: %s (after %ss)\n' "$STAGE" "$(( $(date +%s) - START ))" >&2
    exit 1
}

stage() { STAGE="$1"; log "$1"; }

run() {
    # run a command as part of the current stage; any failure ends the whole run
    "$@" || { echo "command failed (exit $?): $*" >&2; fail; }
}

# --- environment -------------------------------------------------------------
stage "environment"
# glommio registers its I/O buffers with io_uring and needs locked memory.
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true
echo "locked-memory limit: $(ulimit -l)"
if [ "$(ulimit -l)" != unlimited ] && [ "$(ulimit -l)" -lt 65536 ]; then
    echo "warning: ulimit -l is $(ulimit -l) KiB; glommio may fall back or refuse to start" >&2
fi
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export DEBIAN_FRONTEND=noninteractive

# --- system packages ---------------------------------------------------------
stage "system packages (kcat, node)"
need_apt=()
command -v kcat >/dev/null 2>&1 || need_apt+=(kcat)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
PY=""
for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY=$(command -v "$cand"); break; fi
done
[ -n "$PY" ] || need_apt+=(python3 python3-venv)
if [ -n "$PY" ] && ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need_apt+=(python3-venv)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing: ${need_apt[*]}"
    run $SUDO apt-get update -q </dev/null
    run $SUDO apt-get install -y -q --no-install-recommends "${need_apt[@]}" </dev/null
    if [ -z "$PY" ]; then PY=$(command -v python3); fi
fi
run kcat -V >/dev/null
echo "kcat: $(kcat -V 2>&1 | grep -o 'librdkafka [0-9.]*' | head -1)"
echo "python: $PY ($("$PY" --version 2>&1))"
echo "node: $(node --version 2>&1), npm $(npm --version 2>&1)"

# --- Python virtualenv ---------------------------------------------------------
stage "python venv (.venv)"
VENV="$REPO/.venv"
REQ="$REPO/tests/requirements.txt"
REQ_SUM=$( (sha256sum "$REQ"; "$PY" --version 2>&1) | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    run "$PY" -m venv "$VENV"
fi
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$REQ_SUM" ]; then
    run "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
    echo "$REQ_SUM" >"$VENV/.requirements.sha256"
else
    echo "requirements unchanged; skipping pip install"
fi
run "$VENV/bin/python" -c 'import confluent_kafka, kafka, aiokafka, pytest, snappy, lz4, zstandard
print("confluent-kafka", confluent_kafka.version(), "librdkafka", confluent_kafka.libversion()[0], "| kafka-python", kafka.__version__, "| aiokafka", aiokafka.__version__)'

# --- JavaScript client (kafkajs) -------------------------------------------------
# The pinned kafkajs of tests/e2e/js/package-lock.json, installed with `npm ci` when
# node_modules is missing or was installed from another lock file.
stage "node packages (tests/e2e/js: kafkajs)"
JS_DIR="$REPO/tests/e2e/js"
JS_SUM=$( (sha256sum "$JS_DIR/package-lock.json"; node --version 2>&1) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$JS_DIR/node_modules/.lock.sha256" 2>/dev/null)" != "$JS_SUM" ]; then
    run npm --prefix "$JS_DIR" ci --no-audit --no-fund --loglevel=error
    echo "$JS_SUM" >"$JS_DIR/node_modules/.lock.sha256"
else
    echo "package-lock.json unchanged; skipping npm ci"
fi
run node -e 'console.log("kafkajs", require(process.argv[1] + "/node_modules/kafkajs/package.json").version)' "$JS_DIR"

# --- Python unit tests (no broker) ----------------------------------------------
# The operation-history checker of the fault harnesses (tests/history), on hand-made and
# generated histories: a few seconds.
stage "python unit tests (tests/history: the history checker)"
run "$VENV/bin/python" -m pytest -q tests/history

# --- Rust: lint, unit/property/crash tests ------------------------------------
# One release build: `cargo test --release` also builds the `shardlog` and `shardlog-bench`
# binaries (their crates have integration tests that run them), with the same feature set as
# the tests, so nothing is compiled twice.
if [ "${SKIP_LINT:-0}" != 1 ]; then
    stage "cargo fmt --check"
    run cargo fmt --all --check
    stage "cargo clippy -D warnings"
    run cargo clippy --workspace --all-targets -- -D warnings
fi

stage "cargo test --release (unit, property, crash tests; builds the binaries)"
# The bench's end-to-end tests run the broker binary, which this same `cargo test` builds first
# (the `shardlog` crate's own integration tests need it).
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null) || true
[ -n "$TARGET_DIR" ] || TARGET_DIR="$REPO/target"
export SHARDLOG_BIN="${SHARDLOG_BIN:-$TARGET_DIR/release/shardlog}"
run cargo test --release --workspace

# --- end-to-end ----------------------------------------------------------------
stage "e2e (pytest tests/e2e against target/release/shardlog)"
echo "SHARDLOG_BIN=$SHARDLOG_BIN"
[ -x "$SHARDLOG_BIN" ] || { echo "no shardlog binary at $SHARDLOG_BIN" >&2; fail; }
# The whole suite is bounded (each test also has its own pytest-timeout).
JUNIT="$VENV/e2e-junit.xml"
rm -f "$JUNIT"
# shellcheck disable=SC2086
timeout --kill-after=30 20m "$VENV/bin/python" -m pytest -q tests/e2e --junitxml="$JUNIT" ${PYTEST_ARGS:-}
rc=$?
case $rc in
    0) ;;
    5) echo "pytest collected no tests: that is a failure here" >&2; fail ;;
    124) echo "the e2e suite hit its 20-minute limit" >&2; fail ;;
    *) fail ;;
esac

log "all stages passed in $(( $(date +%s) - START ))s"
# Closing summary line of the end-to-end suite (the Rust test counts are above).
"$VENV/bin/python" - "$JUNIT" <<'PY' || true
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
s = r if r.tag == "testsuite" else r.find("testsuite")
t, f, e, sk = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
print(f"e2e: {t - f - e - sk} passed, {f + e} failed, {sk} skipped")
PY
