#!/usr/bin/env bash
# Fuzz postdesk's pure core (parse → classify → thread → decide → render) for SECONDS (default 600), with a
# per-input time limit: an input that takes longer than FUZZ_TIMEOUT seconds (default 2) is a failure like a
# crash (issue 13: one mail's cost must be linear in its size).
#
#   scripts/fuzz.sh [SECONDS]
#   FUZZ_TIMEOUT=2 FUZZ_MAX_LEN=65536 scripts/fuzz.sh 600
#
# The same by hand: cargo +nightly fuzz run core fuzz/corpus/core -- -timeout=2 -max_total_time=600
#
# Seeds: tests/fixtures/*.eml, small versions of the hostile benchmark's mails (benches/hostile.rs, when
# the bench is built) and `#amp` storm seeds (the target repeats their middle part to 256 KiB, see
# fuzz/fuzz_targets/core.rs). A slow input is saved by libFuzzer as fuzz/artifacts/core/timeout-…; this
# script copies every failure (crash, timeout, oom) to fuzz/regressions/ and fails. Reproduce one with
#   cargo +nightly fuzz run core fuzz/regressions/timeout-… -- -timeout=2
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
# Storm seeds: `#amp` PREFIX NUL UNIT NUL SUFFIX (UNIT is repeated to 256 KiB by the target).
H=$'From: Customer <c@example.net>\r\nTo: support-jp@example.com\r\nMessage-ID: <amp@example.net>\r\n'
printf '#amp%sSubject: Re: order\r\n\r\nOn Friday you wrote:\r\n\0> q\r\n\0new text at the end\r\n' "$H" >"$corpus/amp-quote-storm"
printf '#amp%sSubject: \0[\0\r\n\r\nWhere is my order?\r\n' "$H" >"$corpus/amp-bracket-subject"
printf '#amp%sSubject: \0Re: \0order\r\n\r\nWhere is my order?\r\n' "$H" >"$corpus/amp-prefix-subject"
printf '#amp%sSubject: x\r\nContent-Type: text/html\r\n\r\n\0<blockquote>\0deep\r\n' "$H" >"$corpus/amp-blockquote"
printf '#amp%sSubject: x\r\n\r\n\0line of text\n\0end\n' "$H" >"$corpus/amp-lf-text"
printf '#amp%sSubject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\0--b\r\nContent-Type: text/plain\r\n\r\np\r\n\0--b--\r\n' "$H" >"$corpus/amp-many-parts"
printf '#amp%sSubject: x\r\n\0Content-Type: message/rfc822\r\n\r\nSubject: y\r\n\0\r\ninner\r\n' "$H" >"$corpus/amp-nested-rfc822"
printf '#amp%sSubject: x\r\nReferences: \0<r@example.net> \0\r\n\r\nbody\r\n' "$H" >"$corpus/amp-references"
# Issue 15's raw-byte decoders: encoded-word and `=?` storms, RFC 2231 continuation storms, long address lists,
# delimiter lines inside an unclosed multipart's text part.
printf '#amp%sSubject: \0=?UTF-8?B?5LiA?= \0\r\n\r\nbody\r\n' "$H" >"$corpus/amp-encoded-words"
printf '#amp%sSubject: \0=?\0\r\n\r\nbody\r\n' "$H" >"$corpus/amp-ew-openers"
printf '#amp%sSubject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment\0; filename*9*=%%E4\0\r\n\r\nJVBE\r\n--b--\r\n' "$H" >"$corpus/amp-rfc2231-segments"
printf '#amp%sSubject: x\r\nCc: \0"=?utf-8?Q?a?=" <a@example.net>, \0b@example.net\r\n\r\nbody\r\n' "$H" >"$corpus/amp-address-list"
printf '#amp%sSubject: x\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\0--o-x\r\n\0--o\r\nContent-Type: message/delivery-status\r\n\r\nStatus: 5.1.1\r\n--o--\r\n' "$H" >"$corpus/amp-unclosed-delimiters"
# Small versions of the hostile benchmark's mails, if the bench is built (cargo bench --bench hostile --no-run).
bench="$(ls -t target/release/deps/hostile-* 2>/dev/null | grep -v '\.d$' | head -1 || true)"
if [ -n "$bench" ]; then
    POSTDESK_BENCH_HOSTILE_SAVE="$corpus" POSTDESK_BENCH_HOSTILE_CORPUS_ONLY=1 \
        POSTDESK_BENCH_HOSTILE_SIZES=16000 "$bench" 2>/dev/null || true
fi

# Failures of earlier runs were copied to fuzz/regressions/ at their end: count this run's only.
rm -rf fuzz/artifacts/core
jobs="$(nproc)"
log="fuzz/fuzz-core.log"
echo "fuzzing core for ${SECONDS_TO_RUN}s with ${jobs} worker(s); log in $log"
# -fork runs workers as child processes, so one crash is kept and the run goes on until the time is up;
# -ignore_crashes=0 stops at the first crash instead.
set +e
cargo +nightly fuzz run core "$corpus" -- \
    -max_total_time="$SECONDS_TO_RUN" -fork="$jobs" -max_len="${FUZZ_MAX_LEN:-65536}" \
    -timeout="${FUZZ_TIMEOUT:-2}" -rss_limit_mb=2048 \
    -print_final_stats=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
crashes=$(find fuzz/artifacts/core -type f \( -name 'crash-*' -o -name 'oom-*' \) 2>/dev/null | wc -l)
slow=$(find fuzz/artifacts/core -type f \( -name 'timeout-*' -o -name 'slow-unit-*' \) 2>/dev/null | wc -l)
# Every failure is kept where the lead turns it into a regression test.
if [ $((crashes + slow)) -gt 0 ]; then
    mkdir -p fuzz/regressions
    cp -n fuzz/artifacts/core/* fuzz/regressions/ 2>/dev/null || true
    echo "fuzz: $crashes crash(es), $slow slow input(s) (over ${FUZZ_TIMEOUT:-2}s); copied to fuzz/regressions/" >&2
    [ "$status" -ne 0 ] || status=1
fi
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
    echo "RESULT fuzz_core_slow=$slow files"
    echo "RESULT fuzz_core_timeout=${FUZZ_TIMEOUT:-2} s"
    echo "RESULT fuzz_core_exit=$status -"
} | tee target/bench/fuzz.results
grep -E "oom/timeout/crash" "$log" | tail -1 || true
exit "$status"
