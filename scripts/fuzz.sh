#!/usr/bin/env bash
# Fuzz postdesk's pure core (parse → classify → thread → decide → render) for SECONDS (default 600).
#
#   scripts/fuzz.sh [SECONDS]
#
# Installs what it needs (the nightly toolchain, cargo-fuzz), seeds the corpus from tests/fixtures/*.eml
# (copied, not committed twice), and runs the `core` target of fuzz/ on every core. A crash leaves its input
# in fuzz/artifacts/core/ and makes this script fail; reproduce it with
#   cargo +nightly fuzz run core fuzz/artifacts/core/crash-…
# libFuzzer's status lines (`#N: cov: … exec/s: … oom/timeout/crash: 0/0/0`) give the execution count; the
# figures go to target/bench/fuzz.results for scripts/bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN="${1:-600}"

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

corpus=fuzz/corpus/core
mkdir -p "$corpus"
for f in tests/fixtures/*.eml; do
    cp -n "$f" "$corpus/seed-$(basename "$f")"
done

jobs="$(nproc)"
log="fuzz/fuzz-core.log"
echo "fuzzing core for ${SECONDS_TO_RUN}s with ${jobs} worker(s); log in $log"
# -fork runs workers as child processes, so one crash is kept and the run goes on until the time is up;
# -ignore_crashes=0 stops at the first crash instead.
set +e
cargo +nightly fuzz run core "$corpus" -- \
    -max_total_time="$SECONDS_TO_RUN" -fork="$jobs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
crashes=$(find fuzz/artifacts/core -type f 2>/dev/null | wc -l)
execs=$(grep -oE "^#[0-9]+" "$log" | tail -1 | tr -d "#")
# The figures for scripts/bench.sh, which puts the latest run into BENCHMARKS.md.
mkdir -p target/bench
{
    echo "RESULT _date=$(date -u +%Y-%m-%dT%H:%MZ) -"
    echo "RESULT _commit=$(git rev-parse --short=10 HEAD) -"
    echo "RESULT _load=$(cut -d' ' -f1-3 /proc/loadavg) -"
    echo "RESULT fuzz_core_seconds=$SECONDS_TO_RUN s"
    echo "RESULT fuzz_core_execs=${execs:-0} runs"
    echo "RESULT fuzz_core_artifacts=$crashes files"
    echo "RESULT fuzz_core_exit=$status -"
} | tee target/bench/fuzz.results
grep -E "oom/timeout/crash" "$log" | tail -1 || true
exit "$status"
