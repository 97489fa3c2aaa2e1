#!/usr/bin/env bash
# The peer of postdesk's benchmarks: Roundup's mail gateway creating one issue per mail.
#
#   scripts/bench-roundup.sh CORPUS_DIR [N] [REPS]
#
# Installs Roundup (pip, into a venv under target/roundup) if missing; then, REPS times (default 3), into a
# fresh "classic" tracker with the sqlite backend: feeds the first N (default 1000) mails of CORPUS_DIR
# (NNNN.eml files, written by `POSTDESK_BENCH_CORPUS_DIR=DIR cargo bench --bench pipe`) through
# `roundup-mailgw TRACKER < mail`, one process per mail as an MTA would, and once more as one mbox through
# `roundup-mailgw TRACKER mailbox FILE`. Unknown senders are registered (the classic schema's commented-out
# "Anonymous may use email" line is enabled: a helpdesk takes mail from anyone, as postdesk does), and
# outgoing mail goes to a file (`[mail] debug`), so no mail server is involved.
# Prints `RESULT name=value unit` lines (medians) for scripts/bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS="${1:?usage: scripts/bench-roundup.sh CORPUS_DIR [N] [REPS]}"
N="${2:-1000}"
REPS="${3:-3}"
VENV=target/roundup/venv
if [ ! -x "$VENV/bin/roundup-mailgw" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q roundup
fi
echo "RESULT roundup_version=$("$VENV/bin/python" -c 'import roundup; print(roundup.__version__)') -"
mapfile -t MAILS < <(ls "$CORPUS"/*.eml | sort | head -n "$N")
[ "${#MAILS[@]}" -eq "$N" ] || { echo "need $N mails in $CORPUS, found ${#MAILS[@]}" >&2; exit 1; }
WORK="$(mktemp -d /tmp/postdesk-roundup.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

tracker() { # fresh tracker in $1
    "$VENV/bin/roundup-admin" -i "$1" install classic sqlite \
        "mail_domain=example.com,tracker_web=http://localhost:8917/tracker/,mail_host=localhost" >/dev/null
    sed -i 's|^#db.security.addPermissionToRole(.Anonymous., .Email Access.)|db.security.addPermissionToRole("Anonymous", "Email Access")|' "$1/schema.py"
    grep -q '^db.security.addPermissionToRole("Anonymous", "Email Access")' "$1/schema.py"
    sed -i "s|^debug = \$|debug = $1/outgoing.mbox|" "$1/config.ini"
    "$VENV/bin/roundup-admin" -i "$1" initialise adminpw >/dev/null
}
issues() { "$VENV/bin/roundup-admin" -i "$1" list issue | grep -c ':' || true; }

# One mbox of the same mails for the mbox mode.
"$VENV/bin/python" - "$WORK/all.mbox" "${MAILS[@]}" <<'PY'
import mailbox, sys
box = mailbox.mbox(sys.argv[1])
for path in sys.argv[2:]:
    with open(path, 'rb') as f:
        box.add(mailbox.mboxMessage(f.read()))
box.flush()
PY

per_mail=(); mbox=()
for rep in $(seq 1 "$REPS"); do
    T="$WORK/t$rep"; tracker "$T"
    start=$(date +%s.%N)
    for m in "${MAILS[@]}"; do
        "$VENV/bin/roundup-mailgw" "$T" < "$m" || { echo "roundup-mailgw failed on $m" >&2; exit 1; }
    done
    end=$(date +%s.%N)
    got=$(issues "$T")
    [ "$got" -eq "$N" ] || { echo "roundup made $got issues from $N mails" >&2; exit 1; }
    per_mail+=("$(echo "$end - $start" | bc -l)")
    rm -rf "$T"

    T="$WORK/m$rep"; tracker "$T"
    start=$(date +%s.%N)
    cp "$WORK/all.mbox" "$WORK/spool" # the gateway empties the spool it read
    "$VENV/bin/roundup-mailgw" "$T" mailbox "$WORK/spool" >/dev/null
    end=$(date +%s.%N)
    got=$(issues "$T")
    [ "$got" -eq "$N" ] || { echo "roundup (mbox) made $got issues from $N mails" >&2; exit 1; }
    mbox+=("$(echo "$end - $start" | bc -l)")
    rm -rf "$T"
    echo "rep $rep: one process per mail ${per_mail[-1]} s, mbox ${mbox[-1]} s" >&2
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
p=$(median "${per_mail[@]}"); b=$(median "${mbox[@]}")
echo "RESULT roundup_n=$N mails"
echo "RESULT roundup_process=$p s"
echo "RESULT roundup_process_rate=$(echo "$N / $p" | bc -l | xargs printf '%.2f') issues/s"
echo "RESULT roundup_mbox=$b s"
echo "RESULT roundup_mbox_rate=$(echo "$N / $b" | bc -l | xargs printf '%.2f') issues/s"
