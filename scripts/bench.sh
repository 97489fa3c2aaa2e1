#!/usr/bin/env bash
# Every benchmark of postdesk in one run, and BENCHMARKS.md's measured block written from it.
#
#   sudo scripts/bench.sh                  # everything: about 1 hour 30 on 2 cores, 2 GB of disk
#   sudo scripts/bench.sh pipe roundup     # only these (names below); the other figures keep their last run
#   scripts/bench.sh report                # only rewrite BENCHMARKS.md from the kept results
#
# Benchmarks (each a median of 3 repetitions; see the bench's own header for what it does):
#   daemon        the headline: the real `postdesk run` binary on 10,000 mails in a Dovecot mailbox, IDLE,
#                 agents notified, outbound through the file transport and through Postfix: time to durable
#                 tickets and to every mail sent, vs a raw fetch in the same run; the daemon's peak RSS
#   imap_ingest   IMAP intake of 10,000 mixed mails vs a raw fetch, plain and TLS; peak RSS; bytes per ticket;
#                 SMTP → stored ticket with IDLE (200 mails)
#   e2e_latency   SMTP accepted → acknowledgement in the customer's mailbox, IDLE, p50/p99 over 500 mails
#   outbound      10,000 acknowledgements through Postfix vs a raw SMTP client
#   ingest_core   the intake's core without servers (parse; batches of 500)
#   pipe          `postdesk ingest` per mail (process per mail, with and without a daemon; in-process)
#   scheduler     one timer tick with 10k vs 1M tickets in the store
#   hostile       hostile mails (quote, bracket and prefix storms, deep HTML, many parts, long headers, LF-only
#                 text, base64, nested message/rfc822) at 250 KB and 2.5 MB: ingest and send vs a benign mail
#                 of the same size, each step under a 60 s budget; the built binary's ingest of the large ones
#   roundup       the peer: Roundup's mail gateway on the same 1,000 mails (scripts/bench-roundup.sh)
#
# It starts the project's real mail stack once (scripts/mailstack.sh, needs root and the packages of
# scripts/install-test-deps.sh) and stops it at the end. Each bench prints `RESULT name=value unit` lines;
# they are kept per bench in target/bench/NAME.results (with the date and commit of that run), and the
# block between the `bench.sh` markers of BENCHMARKS.md is rewritten from all of them: the machine, every
# figure with its target and whether it is met, how to reproduce. The rest of BENCHMARKS.md (the analysis)
# is left as it is. The latest fuzzing run (scripts/fuzz.sh) is included when there is one.
#
# Environment: BENCH_NOTE (a line about the run, e.g. that the machine was shared), ROUNDUP_N (1000),
# ROUNDUP_REPS (3), and each bench's own POSTDESK_BENCH_* counts.
set -euo pipefail
cd "$(dirname "$0")/.."
ALL=(daemon imap_ingest e2e_latency outbound ingest_core pipe scheduler hostile roundup)
if [ "${1:-}" = report ]; then
    SELECTED=() # only rewrite BENCHMARKS.md from the kept results
elif [ $# -gt 0 ]; then SELECTED=("$@"); else SELECTED=("${ALL[@]}"); fi
for b in "${SELECTED[@]+"${SELECTED[@]}"}"; do
    [[ " ${ALL[*]} " == *" $b "* ]] || { echo "unknown benchmark $b (known: ${ALL[*]})" >&2; exit 2; }
done
OUT=target/bench
mkdir -p "$OUT"
COMMIT="$(git rev-parse HEAD)"
DIRTY="$(git status --porcelain --untracked-files=no | grep -q . && echo " (with uncommitted changes)" || true)"

needs_stack=0
for b in "${SELECTED[@]+"${SELECTED[@]}"}"; do
    case "$b" in daemon | imap_ingest | e2e_latency | outbound) needs_stack=1 ;; esac
done
if [ "$needs_stack" = 1 ]; then
    STACK="/tmp/postdesk-ms-bench-$$"
    scripts/mailstack.sh up "$STACK" >/dev/null
    trap 'scripts/mailstack.sh down "$STACK" >/dev/null 2>&1 || true' EXIT
    export POSTDESK_BENCH_STACK="$STACK"
fi

if [ "${#SELECTED[@]}" -gt 0 ]; then
    cargo bench --no-run >/dev/null 2>&1 || cargo bench --no-run
fi

# Wait until the stack's Postfix has delivered everything it accepted: a bench that sent through it must
# not leave deliveries running into the next one's figures.
postfix_idle() {
    [ -n "${STACK:-}" ] || return 0
    local i
    for i in $(seq 1 900); do
        [ -z "$(postqueue -c "$STACK/postfix" -j 2>/dev/null)" ] && return 0
        sleep 1
    done
    echo "bench.sh: Postfix's queue still not empty after 15 minutes" >&2
}

# run NAME COMMAND...: run a bench, keep its output and its RESULT lines (with date, commit, load).
run() {
    local name="$1"
    shift
    postfix_idle
    echo "=== $name: $*" >&2
    local load0
    load0="$(cut -d' ' -f1-3 /proc/loadavg)"
    # A pipeline (not a process substitution) so that the .out file is complete when it is read below.
    "$@" 2> >(tee "$OUT/$name.err" >&2) | tee "$OUT/$name.out"
    {
        echo "RESULT _date=$(date -u +%Y-%m-%dT%H:%MZ) -"
        echo "RESULT _commit=${COMMIT:0:10}$DIRTY -"
        echo "RESULT _load=$load0 / $(cut -d' ' -f1-3 /proc/loadavg) -"
        grep '^RESULT ' "$OUT/$name.out" || true
    } >"$OUT/$name.results.tmp"
    mv "$OUT/$name.results.tmp" "$OUT/$name.results"
}

CORPUS="$OUT/corpus"
for b in "${SELECTED[@]+"${SELECTED[@]}"}"; do
    case "$b" in
    pipe)
        rm -rf "$CORPUS"
        run pipe env POSTDESK_BENCH_CORPUS_DIR="$CORPUS" cargo bench --bench pipe
        ;;
    roundup)
        if [ ! -d "$CORPUS" ] || [ "$(ls "$CORPUS" | wc -l)" -lt "${ROUNDUP_N:-1000}" ]; then
            rm -rf "$CORPUS"
            POSTDESK_BENCH_CORPUS_DIR="$CORPUS" POSTDESK_BENCH_CORPUS_ONLY=1 POSTDESK_BENCH_PIPE_N="${ROUNDUP_N:-1000}" \
                cargo bench --bench pipe >/dev/null
        fi
        run roundup scripts/bench-roundup.sh "$CORPUS" "${ROUNDUP_N:-1000}" "${ROUNDUP_REPS:-3}"
        ;;
    scheduler)
        run scheduler cargo bench --bench scheduler
        # Its table, as RESULT lines, if the bench does not print them itself.
        if ! grep -q '^RESULT scheduler_' "$OUT/scheduler.results"; then
            awk -F'|' '/^\| [0-9]+ \| [0-9.]+ ms/ {gsub(/ /,"",$2); gsub(/ ms| /,"",$3); n++;
                printf "RESULT scheduler_tick_%s=%s ms\n", (n==1?"small":"large"), $3;
                printf "RESULT scheduler_count_%s=%s tickets\n", (n==1?"small":"large"), $2}' \
                "$OUT/scheduler.out" >>"$OUT/scheduler.results"
        fi
        ;;
    *) run "$b" cargo bench --bench "$b" ;;
    esac
done

python3 - "$OUT" BENCHMARKS.md "${BENCH_NOTE:-}" <<'PY'
import glob, os, re, subprocess, sys

out, doc, note = sys.argv[1], sys.argv[2], sys.argv[3]
R, when = {}, {}
for path in sorted(glob.glob(os.path.join(out, "*.results"))):
    bench = os.path.basename(path)[: -len(".results")]
    meta = {}
    for line in open(path, encoding="utf-8"):
        m = re.match(r"RESULT (\w+)=(.*?)(?: (\S+))?$", line.strip())
        if not m:
            continue
        k, v, unit = m.group(1), m.group(2), m.group(3) or ""
        if k.startswith("_"):
            meta[k[1:]] = (v + " " + unit).strip().rstrip(" -")
        else:
            try:
                R[k] = float(v)
            except ValueError:
                R[k] = v
    when[bench] = meta

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""

cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
mem = sh("awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo")
dovecot = sh("dovecot --version 2>/dev/null").split(" ")[0]
postfix = sh("postconf -d -h mail_version 2>/dev/null")
machine = (f"{cpu}, {sh('nproc')} CPUs (nproc), {mem} RAM, {sh('uname -sr')}, "
           f"{sh('rustc -V')}, Dovecot {dovecot}, Postfix {postfix}")

def g(k):
    return R.get(k)

def fmt(v, digits=0):
    return "—" if v is None else f"{v:,.{digits}f}"

rows = []
def row(what, value, target, ok, bench):
    mark = "" if ok is None else (" ✔ met" if ok else " ✘ missed")
    rows.append(f"| {what} | {value} | {target}{mark} | {bench} |")

def add(what, key, unit, digits, target=None, test=None, bench=""):
    v = g(key)
    if v is None:
        row(what, "not measured", target or "—", None, bench)
    else:
        row(what, f"{fmt(v, digits)} {unit}".strip(), target or "—", None if test is None else test(v), bench)

dn = g("daemon_n")
add(f"**`postdesk run`**, file outbound ({fmt(dn)} mails, IDLE, agents notified)", "daemon_file_rate", "mails/s", 0, "≥ 5,000/s", lambda v: v >= 5000, "daemon")
add("… ratio to a raw fetch in the same run", "daemon_file_ratio", "×", 2, "≤ 4×", lambda v: v <= 4, "daemon")
if g("daemon_file_all_sent") and g("daemon_file_intake"):
    R["daemon_file_sent_ratio"] = g("daemon_file_all_sent") / g("daemon_file_intake")
add("… every acknowledgement and notification sent / intake time", "daemon_file_sent_ratio", "×", 2, "≤ 2×", lambda v: v <= 2, "daemon")
add("… the daemon's peak RSS", "daemon_file_peak_rss", "MiB", 0, "< 150 MiB", lambda v: v < 150, "daemon")
add("**`postdesk run`**, SMTP outbound into Postfix", "daemon_smtp_rate", "mails/s", 0, "≥ 5,000/s", lambda v: v >= 5000, "daemon")
add("… ratio to a raw fetch in the same run", "daemon_smtp_ratio", "×", 2, "≤ 4×", lambda v: v <= 4, "daemon")
add("… every mail accepted by Postfix", "daemon_smtp_all_sent", "s", 2, None, None, "daemon")
add("… the daemon's peak RSS", "daemon_smtp_peak_rss", "MiB", 0, "< 150 MiB", lambda v: v < 150, "daemon")
n = g("imap_n")
add(f"IMAP intake, plain ({fmt(n)} mails)", "imap_rate_plain", "mails/s", 0, "≥ 5,000/s", lambda v: v >= 5000, "imap_ingest")
add("… ratio to a raw fetch, plain", "imap_ratio_plain", "×", 2, "≤ 4×", lambda v: v <= 4, "imap_ingest")
add("IMAP intake, TLS", "imap_rate_tls", "mails/s", 0, "≥ 5,000/s", lambda v: v >= 5000, "imap_ingest")
add("… ratio to a raw fetch, TLS", "imap_ratio_tls", "×", 2, "≤ 4×", lambda v: v <= 4, "imap_ingest")
add("Peak RSS during the IMAP ingest", "imap_peak_rss", "MiB", 0, "< 150 MiB", lambda v: v < 150, "imap_ingest")
add("Store on disk per ticket", "imap_disk_per_ticket", "bytes", 0, None, None, "imap_ingest")
add("SMTP → ticket stored (IDLE), p99", "idle_stored_p99", "ms", 0, None, None, "imap_ingest")
add(f"SMTP → acknowledgement in the customer's mailbox, p50 ({fmt(g('e2e_n'))} mails)", "e2e_ack_p50", "ms", 0, None, None, "e2e_latency")
add("SMTP → acknowledgement in the customer's mailbox, p99", "e2e_ack_p99", "ms", 0, "< 1,000 ms", lambda v: v < 1000, "e2e_latency")
add("… of which SMTP → ticket stored (IDLE), p99", "e2e_stored_p99", "ms", 0, None, None, "e2e_latency")
add("… of which the outbox: queued → accepted by Postfix, p99", "e2e_send_p99", "ms", 0, None, None, "e2e_latency")
add(f"Outbound through Postfix ({fmt(g('outbound_n'))} mails)", "outbound_rate", "mails/s", 0, None, None, "outbound")
add("… ratio to a raw SMTP client", "outbound_ratio", "×", 2, "≤ 1.5×", lambda v: v <= 1.5, "outbound")
add("Intake core: parse only", "core_parse", "µs/mail", 1, None, None, "ingest_core")
add("Intake core: batches of 500", "core_batched", "µs/mail", 1, None, None, "ingest_core")
add(f"`postdesk ingest`, one process per mail, daemon running ({fmt(g('pipe_n'))} mails)", "pipe_forward_ms", "ms/mail", 2, None, None, "pipe")
add("`postdesk ingest`, one process per mail, no daemon", "pipe_process_ms", "ms/mail", 2, None, None, "pipe")
add("`postdesk ingest` in-process (`pipe::deliver`: ingest + flush)", "pipe_inprocess_ms", "ms/mail", 3, None, None, "pipe")
small, large = g("scheduler_tick_small"), g("scheduler_tick_large")
add(f"Scheduler tick, {fmt(g('scheduler_count_small'))} tickets", "scheduler_tick_small", "ms", 1, None, None, "scheduler")
add(f"Scheduler tick, {fmt(g('scheduler_count_large'))} tickets", "scheduler_tick_large", "ms", 1, None, None, "scheduler")
if small and large:
    R["scheduler_ratio"] = large / small
add("… ratio large / small", "scheduler_ratio", "×", 2, "< 2×", lambda v: v < 2, "scheduler")
csmall, clarge = g("scheduler_cpu_small"), g("scheduler_cpu_large")
if csmall and clarge:
    R["scheduler_cpu_ratio"] = clarge / csmall
add("… ratio of the ticking thread's CPU time", "scheduler_cpu_ratio", "×", 2, "< 2×", lambda v: v < 2, "scheduler")
add(f"Roundup mail gateway, one process per mail ({fmt(g('roundup_n'))} mails)", "roundup_process_rate", "issues/s", 2, None, None, "roundup")
add("Roundup mail gateway, one mbox", "roundup_mbox_rate", "issues/s", 2, None, None, "roundup")
rp, rm = g("roundup_process_rate"), g("roundup_mbox_rate")
best = max([x for x in (rp, rm) if x] or [0]) or None
if rp and g("pipe_forward_rate"):
    R["x_pipe_forward"] = g("pipe_forward_rate") / rp
if rp and g("pipe_process_rate"):
    R["x_pipe_process"] = g("pipe_process_rate") / rp
if best and g("imap_rate_plain"):
    R["x_imap"] = g("imap_rate_plain") / best
if best and g("pipe_inprocess_rate"):
    R["x_inprocess"] = g("pipe_inprocess_rate") / best
add("postdesk pipe (daemon running) / Roundup, both one process per mail", "x_pipe_forward", "×", 0, "≥ 500×", lambda v: v >= 500, "pipe, roundup")
add("postdesk pipe (no daemon) / Roundup, both one process per mail", "x_pipe_process", "×", 0, "≥ 500×", lambda v: v >= 500, "pipe, roundup")
add("postdesk IMAP intake / Roundup's faster mode", "x_imap", "×", 0, "≥ 500×", lambda v: v >= 500, "imap_ingest, roundup")
add("postdesk in-process pipe / Roundup's faster mode", "x_inprocess", "×", 0, "≥ 500×", lambda v: v >= 500, "pipe, roundup")
wr, wg = g("hostile_worst_ratio"), g("hostile_worst_growth")
if isinstance(wr, float):
    add("Hostile mail: worst ratio to a benign mail of the same size (ingest or send)", "hostile_worst_ratio", "×", 1, "≤ 3×", lambda v: v <= 3, "hostile")
if isinstance(wg, float):
    add("Hostile mail: worst growth from 250 KB to 2.5 MB", "hostile_worst_growth", "×", 1, "≤ about 10× (15)", lambda v: v <= 15, "hostile")
if g("fuzz_core_execs") is not None:
    crashes = g("fuzz_core_artifacts")
    slow = g("fuzz_core_slow")
    limit = g("fuzz_core_timeout")
    what = f"{fmt(g('fuzz_core_execs'))} executions, {fmt(crashes)} crashes"
    if slow is not None:
        what += f", {fmt(slow)} slow inputs (> {fmt(limit)} s)"
    row(f"Fuzzing `core` for {fmt(g('fuzz_core_seconds'))} s", what,
        "no crash, no slow input", crashes == 0 and (slow or 0) == 0, "fuzz")

runs = []
for bench, meta in sorted(when.items()):
    runs.append(f"| {bench} | {meta.get('date', '?')} | `{meta.get('commit', '?')}` | {meta.get('load', '?')} |")

block = [
    "<!-- bench.sh:begin — written by scripts/bench.sh from target/bench/*.results; edits here are overwritten -->",
    "## Measured figures (scripts/bench.sh)",
    "",
    f"**Machine**: {machine}.",
    "",
]
if note:
    block += [f"**Note**: {note}", ""]
block += [
    "| figure | measured | target | bench |",
    "| --- | --- | --- | --- |",
    *rows,
    "",
    "When and on which commit each bench last ran (load average: 1, 5, 15 min at start / end):",
    "",
    "| bench | finished (UTC) | commit | load |",
    "| --- | --- | --- | --- |",
    *runs,
    "",
    "Reproduce: `sudo scripts/bench.sh` (all, about 1 h 30), or `sudo scripts/bench.sh NAME…` for some",
    "(imap_ingest e2e_latency outbound ingest_core pipe scheduler hostile roundup); `scripts/fuzz.sh [SECONDS]` for the",
    "fuzzer. Raw output of the last run of each bench: `target/bench/NAME.out`.",
    "<!-- bench.sh:end -->",
]
text = open(doc, encoding="utf-8").read() if os.path.exists(doc) else "# Benchmarks\n"
begin, end = text.find("<!-- bench.sh:begin"), text.find("<!-- bench.sh:end -->")
if begin >= 0 and end > begin:
    text = text[:begin] + "\n".join(block) + text[end + len("<!-- bench.sh:end -->"):]
else:
    # First run: the block goes after the title and intro, before the first section.
    at = text.find("\n## ")
    at = len(text) if at < 0 else at + 1
    text = text[:at] + "\n".join(block) + "\n\n" + text[at:]
open(doc, "w", encoding="utf-8").write(text)
print(f"BENCHMARKS.md: {len(rows)} figures written", file=sys.stderr)
PY
