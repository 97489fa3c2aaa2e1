#!/usr/bin/env bash
# Fuzz postdesk's pure core (parse → classify → thread → decide → render) for SECONDS (default 600).
#
#   scripts/fuzz.sh [SECONDS]
#
# Installs what it needs (the nightly toolchain, cargo-fuzz), seeds the corpus from tests/fixtures/*.eml
# (copied, not committed twice), and runs the `core` target of fuzz/ on every core. A crash leaves its input
# in fuzz/artifacts/core/ and makes this script fail; reproduce it with
#   cargo +nightly fuzz run core fuzz/artifacts/core/crash-…
# The last line of libFuzzer's output (`Done N runs in S second(s)`) is the execution count.
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
echo "RESULT fuzz_core_exit=$status"
echo "RESULT fuzz_core_artifacts=$crashes files"
grep -E '^#[0-9]+|Done [0-9]+ runs|stat::number_of_executed_units' "$log" | tail -3 || true
exit "$status"
