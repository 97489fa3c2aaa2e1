#!/usr/bin/env bash
# live-systemd.sh — postdesk's package under a real systemd: README's install steps, run as written, and the
# operations they promise, checked (issue 16).
#
#   sudo scripts/live-systemd.sh            (tests/live_systemd.rs runs it; so do scripts/test.sh and CI)
#
# What it does, in a Debian 12 container with systemd as PID 1 (systemd-nspawn; a fresh root from
# scripts/debian-root.sh, cached under target/debian-roots/) and the project's mail stack on the host's
# loopback (scripts/mailstack.sh; the container shares the host's network):
#   1. packages the binary under test with README's build step (scripts/build-deb.sh, with --no-build on a
#      binary it is given, so no release build is needed; CARGO_TARGET_DIR set, as issue 16 asked), three
#      times with different versions for the upgrade;
#   2. runs README's snippets, taken from between its `<!-- live-systemd:begin NAME -->` and
#      `<!-- live-systemd:end -->` markers: `install`, then `configure` with the `config` and `dropin`
#      blocks as what `sudoedit` and `systemctl edit` write, `json-logs`, `upgrade`, `purge`. Only the site's
#      values are put in: the mail stack's ports, its CA, the passwords;
#   3. checks: the shipped config runs as installed; READY, STATUS naming each region; mail through an IMAP
#      region (IMAPS) and a Maildir region (delivered by a member of the group mail) becomes tickets, and
#      acknowledgements go out by SMTP (STARTTLS, AUTH with a LoadCredential= password); the CLI as root and
#      as postdesk; reload good and bad; a bad config and a missing ReadWritePaths= (226) fail the start once,
#      not in a restart loop; a Maildir outside ReadWritePaths= and one postdesk cannot access are one error
#      each, retried with backoff and recovered; the watchdog restarts a stopped daemon; stop under load loses
#      nothing; journalctl -p warning holds every warning and error, one entry per message, in both log
#      formats; upgrade while running; purge.
#
# Environment: POSTDESK_BIN the binary to package (default: target/debug/postdesk, built if missing);
# LIVE_KEEP=1 leaves the work directory (and the container's root) for a look afterwards; LIVE_HOLD=1 keeps
# a failed run's container running for 10 minutes, to look inside.
# Needs root, systemd-nspawn (systemd-container), debootstrap, nsenter and script (util-linux), cargo-deb
# (scripts/install-test-deps.sh installs them all) and the mail stack's servers. The container and the
# stack are stopped on every exit, failure included. About 2 minutes, plus a minute or two the first time
# (debootstrap).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
PROG=live-systemd
started=$(date +%s)

log() { printf '%s: [%3ss] %s\n' "$PROG" "$(($(date +%s) - started))" "$*" >&2; }
die() {
    printf '%s: FAIL: %s\n' "$PROG" "$*" >&2
    exit 1
}
ok() { log "ok: $*"; }

[ "$(id -u)" -eq 0 ] || die "must run as root (containers, the mail stack)"
for tool in systemd-nspawn debootstrap nsenter script; do
    command -v "$tool" >/dev/null || die "$tool not found: run scripts/install-test-deps.sh"
done

# ---------------------------------------------------------------------------------------------- set-up --

work=$(mktemp -d /tmp/postdesk-live.XXXXXX)
chmod 0755 "$work" # the mail stack's users traverse it
root=$work/root
ms=$work/ms
nspawn_pid=
init_pid=

cleanup() {
    local rc=$?
    set +e
    if [ "$rc" -ne 0 ] && [ -n "$init_pid" ] && kill -0 "$init_pid" 2>/dev/null; then
        log "diagnostics:"
        inside systemctl status postdesk --no-pager -n 0 >&2
        inside journalctl -u postdesk --no-pager -n 60 -o short-monotonic >&2
        if [ "${LIVE_HOLD:-0}" = 1 ]; then
            log "holding the container for 10 minutes: nsenter -t $init_pid -m -u -i -p -n -C -- bash"
            sleep 600
        fi
    fi
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        # Nothing in it needs a clean shutdown: killing its PID 1 ends every process of its PID namespace
        # at once, and nspawn then exits (killed too, if it does not within 10 s).
        [ -n "$init_pid" ] && kill -KILL "$init_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$nspawn_pid" 2>/dev/null
        wait "$nspawn_pid" 2>/dev/null
    fi
    [ -d "$ms" ] && scripts/mailstack.sh down "$ms" >/dev/null 2>&1
    if [ "${LIVE_KEEP:-0}" = 1 ]; then
        log "kept $work"
    else
        rm -rf "$work"
    fi
    if [ "$rc" -eq 0 ]; then
        log "passed in $(($(date +%s) - started)) s"
    else
        printf '%s: failed after %s s (exit %s)\n' "$PROG" "$(($(date +%s) - started))" "$rc" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Run a command inside the container as root, with a clean environment of its own.
inside() {
    nsenter -t "$init_pid" -m -u -i -p -n -C -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 "$@"
}
# … as the user postdesk (or another), as an MTA or an admin with `sudo -u postdesk` would.
as_user() {
    local user=$1
    shift
    inside runuser -u "$user" -- "$@"
}
prop() { inside systemctl show -p "$1" --value postdesk; }
main_pid() { prop MainPID; }

# Poll `cmd…` (a shell string, run on the host) every 0.2 s until it succeeds or TIMEOUT seconds pass.
wait_until() {
    local timeout=$1 what=$2 cmd=$3 i
    for i in $(seq $((timeout * 5))); do
        if eval "$cmd" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    die "timed out after ${timeout}s waiting for $what"
}

# README's snippet NAME: the lines between its markers, fences and the marker's indentation removed.
snippet() {
    local name=$1 text
    text=$(awk -v name="$name" '
        $0 ~ "<!-- live-systemd:begin " name " -->" { on = 1; match($0, /^ */); indent = RLENGTH; next }
        on && /<!-- live-systemd:end -->/ { exit }
        on && /^ *```/ { next }
        on { print substr($0, indent + 1) }' README.md)
    [ -n "$text" ] || die "README.md has no snippet '$name' between live-systemd markers"
    printf '%s\n' "$text"
}

# Replace FROM by TO in the text on stdin; fail if FROM is not there (README changed: adapt this test).
subst() {
    local from=$1 to=$2 text
    text=$(cat)
    [[ $text == *"$from"* ]] || die "README snippet lost '$from': the test cannot put in the site's value"
    printf '%s\n' "${text//"$from"/"$to"}"
}

# Run README snippet text TEXT inside the container as root, in a terminal (`systemctl edit` wants one),
# with the test's editors for sudoedit and systemctl edit; ANSWER (optional) is typed at apt's questions.
# Fails on the first failing line.
run_snippet() {
    local name=$1 text=$2 answer=${3:-}
    printf 'set -euo pipefail\ncd /root/postdesk\n%s\n' "$text" >"$root/root/live/$name.sh"
    log "README '$name':"
    printf '%s\n' "$text" | sed 's/^/    | /' >&2
    local typed=/dev/null
    if [ -n "$answer" ]; then
        printf '%s\n' "$answer" >"$work/$name.answer"
        typed=$work/$name.answer
    fi
    inside env SUDO_EDITOR=/root/live/put-config SYSTEMD_EDITOR=/root/live/put-dropin \
        script -qec "bash /root/live/$name.sh" /dev/null <"$typed" >"$work/$name.out" 2>&1 ||
        {
            tr -d '\r' <"$work/$name.out" | tail -40 >&2
            die "README snippet '$name' failed"
        }
}

# Now, for "what the journal got since": `journalctl --since "@$(mark)"` (the container has the host's
# clock). Not a cursor: journalctl 252 finds nothing after a cursor whose entry its matches (-p) exclude.
mark() { date +%s.%6N; }

# Deliver mail (stdin) into a Maildir in the container as USER:GROUP, the way an MTA does (tmp/, then new/).
deliver() {
    local maildir=$1 name=$2 owner=$3
    inside runuser -u "${owner%%:*}" -g "${owner##*:}" -- sh -c \
        "umask 007; cat >'$maildir/tmp/$name' && mv '$maildir/tmp/$name' '$maildir/new/$name'"
}

customer_mail() { # FROM TO SUBJECT MESSAGE-ID
    printf 'From: %s\nTo: %s\nSubject: %s\nMessage-ID: <%s>\nDate: Mon, 1 Dec 2026 10:00:00 +0000\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n\nHello, my order has not arrived.\n' \
        "$1" "$2" "$3" "$4"
}

# SMTP from the host to the stack's Postfix (as a customer's server would), plain: mail to a region's mailbox.
smtp_expect() {
    local code=$1 line
    while IFS= read -r -t 20 line <&3; do
        line=${line%$'\r'}
        case $line in
        "$code "*) return 0 ;;
        "$code-"*) ;;
        *) die "SMTP: expected $code, got: $line" ;;
        esac
    done
    die "SMTP: no answer (expected $code)"
}
smtp_send() { # FROM TO (mail on stdin)
    exec 3<>"/dev/tcp/127.0.0.1/$SMTP_PORT"
    smtp_expect 220
    printf 'EHLO live.test\r\n' >&3 && smtp_expect 250
    printf 'MAIL FROM:<%s>\r\n' "$1" >&3 && smtp_expect 250
    printf 'RCPT TO:<%s>\r\n' "$2" >&3 && smtp_expect 250
    printf 'DATA\r\n' >&3 && smtp_expect 354
    sed -e 's/^\./../' -e 's/$/\r/' >&3
    printf '.\r\n' >&3 && smtp_expect 250
    printf 'QUIT\r\n' >&3 && smtp_expect 221
    exec 3<&- 3>&-
}

# Whether ADDRESS's mailbox in the stack holds a mail replying to MESSAGE-ID (an acknowledgement).
has_reply() {
    grep -rlsq "^In-Reply-To: <$2>" "$ms/mail/$1/Maildir/new" "$ms/mail/$1/Maildir/cur"
}

tickets_json() { inside postdesk tickets list --json; }
ticket_ids() { grep -oE '"id": "[A-Z]+-[0-9]+"' | sed 's/.*"\([A-Z]*-[0-9]*\)"/\1/'; }

# What postdesk itself wrote to the journal (not systemd about it, nor systemd's set-up of its process), as
# text; more journalctl options (-p, --since) may follow.
service_journal() {
    inside journalctl _SYSTEMD_UNIT=postdesk.service SYSLOG_IDENTIFIER=postdesk --no-pager -o cat "$@"
}

# ------------------------------------------------------------------------------------- the packages --

bin=${POSTDESK_BIN:-$here/target/debug/postdesk}
if [ ! -x "$bin" ]; then
    log "building $bin (cargo build --locked)"
    cargo build --locked --bin postdesk
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[ "$(snippet build)" = 'scripts/build-deb.sh                        # on the build machine; copy target/debian/ to the server' ] ||
    die "README's build snippet changed; adapt scripts/live-systemd.sh"
# README's build step, on the binary under test: put where cargo-deb looks for a release build, in a
# target directory of our own (CARGO_TARGET_DIR: build-deb.sh must find the package there, issue 16).
mkdir -p "$work/target/release"
ln "$bin" "$work/target/release/postdesk" 2>/dev/null || cp "$bin" "$work/target/release/postdesk"
debs=()
for n in 1 2 3; do
    deb=$(CARGO_TARGET_DIR=$work/target scripts/build-deb.sh --no-build --fast \
        --deb-version "$version-live$n" 2>"$work/build-deb-$n.log") ||
        { tail -20 "$work/build-deb-$n.log" >&2; die "scripts/build-deb.sh failed"; }
    [ "$deb" = "$work/target/debian/postdesk_${version}-live${n}_$(dpkg --print-architecture).deb" ] ||
        die "build-deb.sh printed '$deb', not the package under \$CARGO_TARGET_DIR/debian"
    # cargo deb removes the other versions from its directory: keep each aside.
    mkdir -p "$work/debs"
    mv "$deb" "$work/debs/"
    debs+=("$work/debs/$(basename "$deb")")
done
ok "3 packages built by scripts/build-deb.sh with CARGO_TARGET_DIR=$work/target"

# --------------------------------------------------------------------------------- the mail stack --

MAILSTACK_ACCEPT_ALL=1 scripts/mailstack.sh up "$ms" >/dev/null
# shellcheck disable=SC1091
. "$ms/env"
SMTP_PW=live-smtp-secret
JP_PW=live-imap-secret
scripts/mailstack.sh add-user "$ms" postdesk@example.com "$SMTP_PW" 2>/dev/null
scripts/mailstack.sh add-user "$ms" support-jp@example.com "$JP_PW" 2>/dev/null
for u in hanako@example.jp minsu@example.kr jp-agents@example.com kr-agents@example.com; do
    scripts/mailstack.sh add-user "$ms" "$u" "pw-$u" 2>/dev/null
done
ok "mail stack on 127.0.0.1 (SMTP $SMTP_PORT, IMAPS $IMAPS_PORT)"

# ---------------------------------------------------------------------------------- the container --

scripts/debian-root.sh "$root" sudo >"$work/debian-root.log" 2>&1 ||
    { cat "$work/debian-root.log" >&2; die "scripts/debian-root.sh failed"; }
grep -q debootstrap "$work/debian-root.log" && log "built the Debian root (cached for next time)"
# What an installed Debian has and debootstrap leaves out.
printf '127.0.0.1\tlocalhost\n127.0.1.1\tpostdesk-live\n::1\tlocalhost ip6-localhost\n' >"$root/etc/hosts"
echo postdesk-live >"$root/etc/hostname"
# The test's editors reach through sudo (sudo resets the environment).
printf 'Defaults env_keep += "SYSTEMD_EDITOR SUDO_EDITOR"\n' >"$root/etc/sudoers.d/live-test"
chmod 0440 "$root/etc/sudoers.d/live-test"
mkdir -p "$root/root/live" "$root/root/postdesk/target/debian"
# What `sudoedit /etc/postdesk/config.toml` and `systemctl edit postdesk` write: README's blocks.
cat >"$root/root/live/put-config" <<'EOF'
#!/bin/sh
cp /root/live/config.toml "$1"
EOF
cat >"$root/root/live/put-dropin" <<'EOF'
#!/bin/sh
cp /root/live/dropin.conf "$1"
EOF
chmod 0755 "$root/root/live/put-config" "$root/root/live/put-dropin"

SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn -D "$root" -b --register=no --keep-unit \
    --console=read-only -M "pdlive$$" >"$work/console.log" 2>&1 &
nspawn_pid=$!
wait_until 30 "the container's systemd" 'init_pid=$(pgrep -P "$nspawn_pid" -x systemd)'
init_pid=$(pgrep -P "$nspawn_pid" -x systemd)
boot_state() { inside systemctl is-system-running 2>/dev/null || true; }
for _ in $(seq 300); do
    case $(boot_state) in running | degraded | maintenance | stopping) break ;; esac
    sleep 0.2
done
state=$(boot_state)
if [ "$state" != running ]; then
    inside systemctl --failed --no-pager >&2 || true
    die "the container booted '$state', not 'running'"
fi
ok "container booted (systemd $(inside systemctl --version | head -1 | cut -d' ' -f2) as PID 1)"

# ------------------------------------------------------------ 1. install: the shipped config runs --

cp "${debs[0]}" "$root/root/postdesk/target/debian/"
run_snippet install "$(snippet install)"
[ "$(prop ActiveState)" = active ] || die "postdesk not active after README's install"
[ "$(prop Type)" = notify ] || die "the unit is not Type=notify"
wait_until 3 "STATUS 'HQ: maildir ok'" '[ "$(prop StatusText)" = "HQ: maildir ok; outbox 0 queued" ]'
ok "installed, enabled, active via READY: STATUS '$(prop StatusText)'"

spool=/var/spool/postdesk
mode_of() { inside stat -c '%A %U:%G' "$1"; }
[ "$(mode_of $spool)" = "drwxr-x--- postdesk:postdesk" ] || die "$spool: $(mode_of $spool)"
[ "$(mode_of $spool/out)" = "drwxr-x--- postdesk:postdesk" ] || die "$spool/out: $(mode_of $spool/out)"
for d in "" /new /cur /tmp; do
    m=$(mode_of "$spool/mail/support$d")
    [ "$m" = "drwxrws--- postdesk:postdesk" ] || die "$spool/mail/support$d is '$m', not group-writable setgid"
done
customer_mail someone@example.org support@localhost "first try" live-hq-1@example.org |
    deliver "$spool/mail/support" 1000.live-hq-1.postdesk-live nobody:postdesk
wait_until 10 "ticket HQ-1000" 'tickets_json | ticket_ids | grep -qx HQ-1000'
wait_until 10 "HQ-1000's acknowledgement file" \
    'inside sh -c "grep -lqs \"^In-Reply-To: <live-hq-1@example.org>\" $spool/out/*.eml"'
ok "the shipped config: a mail delivered by the group postdesk is HQ-1000, its acknowledgement a file"

# ---------------------------------------- 2. failures at start: once, not a restart every 5 seconds --

# A ReadWritePaths= that does not exist, without README's `-`: 226/NAMESPACE, and no restart.
inside mkdir -p /etc/systemd/system/postdesk.service.d
printf '[Service]\nReadWritePaths=/var/mail/postdesk-live-absent\n' \
    >"$root/etc/systemd/system/postdesk.service.d/zz-live-absent.conf"
inside systemctl daemon-reload
inside systemctl restart postdesk 2>/dev/null && die "a start with a missing ReadWritePaths= succeeded"
sleep 6 # RestartSec=5s: a restart would have come by now
[ "$(prop ExecMainStatus)" = 226 ] || die "ExecMainStatus $(prop ExecMainStatus), not 226"
[ "$(prop NRestarts)" = 0 ] || die "restarted $(prop NRestarts) times after 226/NAMESPACE"
[ "$(prop ActiveState)" = failed ] || die "state $(prop ActiveState) after 226"
# README's `-` prefix: the same path absent, and it starts.
printf '[Service]\nReadWritePaths=-/var/mail/postdesk-live-absent\n' \
    >"$root/etc/systemd/system/postdesk.service.d/zz-live-absent.conf"
inside systemctl daemon-reload
inside systemctl reset-failed postdesk
inside systemctl start postdesk
rm "$root/etc/systemd/system/postdesk.service.d/zz-live-absent.conf"
inside systemctl daemon-reload
ok "226/NAMESPACE: failed once, not restarted (RestartPreventExitStatus); with '-' it starts"

# A config that does not parse: exit 2, not restarted, the error one entry in journalctl -p warning.
cp "$root/etc/postdesk/config.toml" "$work/config.good"
printf '[storage]\npath = "/var/lib/postdesk"\n[[region]]\ncode = \n' >"$root/etc/postdesk/config.toml"
since=$(mark)
inside systemctl restart postdesk 2>/dev/null && die "a start with a broken config succeeded"
sleep 6
[ "$(prop ExecMainStatus)" = 2 ] || die "ExecMainStatus $(prop ExecMainStatus), not 2"
[ "$(prop NRestarts)" = 0 ] || die "restarted $(prop NRestarts) times after a config error"
warn=$(service_journal -p warning --since "@$since")
[ "$(printf '%s\n' "$warn" | grep -c .)" = 1 ] || die "journalctl -p warning after a bad start: '$warn'"
[[ $warn == "postdesk: config file "*"TOML parse error"*'\n'* ]] || die "the config error entry: '$warn'"
cp "$work/config.good" "$root/etc/postdesk/config.toml"
inside systemctl reset-failed postdesk
inside systemctl start postdesk
ok "a broken config: exit 2, not restarted, one entry in journalctl -p warning: ${warn:0:90}…"

# ------------------------------------------------------------------ 3. README's configuration --

cp "$CA_PEM" "$root/etc/postdesk/private-ca.pem"
chmod 0644 "$root/etc/postdesk/private-ca.pem"
snippet config |
    subst 'host = "smtp.example.com"' 'host = "localhost"' |
    subst 'port = 587' "port = $SMTP_PORT" |
    subst 'host = "imap.example.com"' 'host = "localhost"' |
    subst 'port = 993' "port = $IMAPS_PORT" |
    sed 's|^# ca_file = "/etc/postdesk/private-ca.pem".*|ca_file = "/etc/postdesk/private-ca.pem"|' \
        >"$root/root/live/config.toml"
[ "$(grep -c '^ca_file' "$root/root/live/config.toml")" = 2 ] || die "README's config lost its ca_file lines"
snippet dropin >"$root/root/live/dropin.conf"
run_snippet configure "$(snippet configure |
    subst "'the SMTP password'" "'$SMTP_PW'" |
    subst "'the IMAP password of support-jp'" "'$JP_PW'")"
cmp -s "$root/root/live/config.toml" "$root/etc/postdesk/config.toml" || die "sudoedit did not write the config"
[ "$(mode_of /etc/postdesk/config.toml)" = "-rw-r----- root:postdesk" ] ||
    die "config.toml is $(mode_of /etc/postdesk/config.toml)"
inside test -f /etc/systemd/system/postdesk.service.d/override.conf || die "systemctl edit wrote no drop-in"
wait_until 10 "STATUS 'JP: imap ok, KR: maildir ok'" \
    '[ "$(prop StatusText)" = "JP: imap ok, KR: maildir ok; outbox 0 queued" ]'
ok "README's configuration runs: STATUS '$(prop StatusText)'"
# The passwords reached it through LoadCredential= only: the user postdesk cannot read them.
as_user postdesk cat /etc/postdesk/credentials/smtp.pass 2>/dev/null && die "postdesk can read the credentials"
score=$(inside systemd-analyze security postdesk --no-pager | sed -n 's/.*Overall exposure level for postdesk.service: \([0-9.]*\).*/\1/p')
awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.0) }' || die "systemd-analyze security: '$score'"
ok "systemd-analyze security postdesk (live, with the drop-in): $score"

# ------------------------------------------------------------------------------ 4. mail flows --

customer_mail hanako@example.jp support-jp@example.com "注文が届きません" live-jp-1@example.jp |
    smtp_send hanako@example.jp support-jp@example.com
kr=/var/mail/support-kr
for d in new cur tmp; do
    m=$(mode_of "$kr/$d")
    [ "$m" = "drwxrws--- postdesk:mail" ] || die "$kr/$d is '$m' (UMask=0077 must not make it 0700)"
done
customer_mail minsu@example.kr support-kr@example.com "배송 문의" live-kr-1@example.kr |
    deliver "$kr" 1000.live-kr-1.postdesk-live nobody:mail
wait_until 15 "tickets JP-1000 and KR-1000" \
    '[ "$(tickets_json | ticket_ids | grep -cxE "JP-1000|KR-1000")" = 2 ]'
wait_until 15 "JP-1000's acknowledgement at hanako@example.jp" 'has_reply hanako@example.jp live-jp-1@example.jp'
wait_until 15 "KR-1000's acknowledgement at minsu@example.kr" 'has_reply minsu@example.kr live-kr-1@example.kr'
wait_until 10 "the JP mail moved to Processed" \
    '[ -n "$(ls -A "$ms/mail/support-jp@example.com/Maildir/.Processed/"{new,cur} 2>/dev/null)" ]'
inside test -e "$kr/cur/1000.live-kr-1.postdesk-live:2,S" || die "the KR mail did not move to cur/"
ok "IMAPS and Maildir (group mail) became JP-1000 and KR-1000; acknowledgements by SMTP STARTTLS + AUTH"

# The CLI as root and as postdesk, through the control socket; ingest as the MTA runs it.
for who in root postdesk; do
    ids=$(as_user "$who" postdesk tickets list --json | ticket_ids | sort | tr '\n' ' ')
    [ "$ids" = "HQ-1000 JP-1000 KR-1000 " ] || die "tickets list as $who: '$ids'"
done
customer_mail pipe@example.kr support-kr@example.com "by pipe" live-pipe-1@example.kr >"$root/root/live/pipe.eml"
out=$(inside sh -c 'runuser -u postdesk -- postdesk ingest --region KR </root/live/pipe.eml')
[[ $out == "stored as new ticket KR-1001" ]] || die "ingest as postdesk said '$out'"
ok "the CLI as root and as postdesk; ingest as postdesk: $out"

# Messages for what the sandbox refuses (issue 16, item 7).
err=$(inside sh -c 'cd /root && postdesk customer export minsu@example.kr' 2>&1) && die "an export into /root worked"
[[ $err == *"ReadWritePaths="*"ProtectHome="* ]] || die "customer export into /root said: $err"
err=$(inside postdesk check-config 2>&1) && die "check-config without \$CREDENTIALS_DIRECTORY passed"
[[ $err == *'looked up in $CREDENTIALS_DIRECTORY'*"CREDENTIALS_DIRECTORY set to /etc/postdesk/credentials"* ]] ||
    die "check-config without \$CREDENTIALS_DIRECTORY said: $err"
ok "customer export into /root and check-config without \$CREDENTIALS_DIRECTORY say what to do"

# -------------------------------------------------------------------------------- 5. reload --

pid=$(main_pid)
cp "$root/etc/postdesk/config.toml" "$work/config.good"
printf '\n[[region]]\ncode = "CN"\nlocale = "zh"\ntimezone = "Asia/Shanghai"\naddress = "support-cn@example.com"\n' \
    >>"$root/etc/postdesk/config.toml"
inside systemctl reload postdesk
wait_until 5 "STATUS with CN after the reload" '[[ "$(prop StatusText)" == *"CN: pipe"* ]]'
[ "$(main_pid)" = "$pid" ] || die "a reload changed the main PID"
ok "reload, good config: STATUS '$(prop StatusText)', same process"
since=$(mark)
printf 'this is = = not toml\n' >>"$root/etc/postdesk/config.toml"
inside systemctl reload postdesk
wait_until 5 "the rejected reload in the journal" \
    'service_journal -p err --since "@$since" | grep -q "reload rejected"'
sleep 1
[ "$(prop ActiveState)" = active ] && [ "$(main_pid)" = "$pid" ] || die "a bad reload stopped the daemon"
[[ "$(prop StatusText)" == *"CN: pipe"* ]] || die "a bad reload changed the running config"
rejected=$(service_journal -p err --since "@$since")
[ "$(printf '%s\n' "$rejected" | grep -c .)" = 1 ] && [[ $rejected == *'TOML parse error'*'\n'* ]] ||
    die "the rejected reload is not one error entry: '$rejected'"
ok "reload, bad config: rejected in one error entry, the old config runs on"

# ---------------------------- 6. a Maildir outside ReadWritePaths=, one postdesk cannot access --

inside install -d -o postdesk -g mail -m 2770 /var/mail/support-cn /var/mail/support-cn/new /var/mail/support-cn/cur /var/mail/support-cn/tmp
customer_mail li@example.cn support-cn@example.com "ro" live-cn-1@example.cn |
    deliver /var/mail/support-cn 1000.live-cn-1.postdesk-live nobody:mail
cp "$work/config.good" "$root/etc/postdesk/config.toml"
printf '\n[[region]]\ncode = "CN"\nlocale = "zh"\ntimezone = "Asia/Shanghai"\naddress = "support-cn@example.com"\n[region.intake]\nkind = "maildir"\npath = "/var/mail/support-cn"\n' \
    >>"$root/etc/postdesk/config.toml"
since=$(mark)
inside systemctl reload postdesk
wait_until 5 "STATUS 'CN: maildir failing'" '[[ "$(prop StatusText)" == *"CN: maildir failing (maildir)"* ]]'
sleep 5 # a hot loop would have logged thousands of lines by now
cn=$(service_journal --since "@$since" | grep -c 'region=CN\|region="CN"' || true)
[ "$cn" -le 3 ] || die "$cn journal entries about CN in 5 s: a hot loop"
errs=$(service_journal -p err --since "@$since")
[ "$(printf '%s\n' "$errs" | grep -c .)" = 1 ] && [[ $errs == *"/var/mail/support-cn"*"ReadWritePaths=-/var/mail/support-cn"* ]] ||
    die "the read-only Maildir's error: '$errs'"
inside test -e /var/mail/support-cn/new/1000.live-cn-1.postdesk-live || die "the CN mail left new/"
ok "a Maildir outside ReadWritePaths=: one error naming it, STATUS failing, no hot loop: ${errs:0:110}…"
cp "$work/config.good" "$root/etc/postdesk/config.toml"
inside systemctl reload postdesk
wait_until 5 "STATUS without CN" '[ "$(prop StatusText)" = "JP: imap ok, KR: maildir ok; outbox 0 queued" ]'

since=$(mark)
inside chown root:root "$kr/new"
inside chmod 0700 "$kr/new"
wait_until 5 "STATUS 'KR: maildir failing'" '[[ "$(prop StatusText)" == *"KR: maildir failing (maildir)"* ]]'
errs=$(service_journal -p err --since "@$since")
[[ $errs == *"cannot access $kr/new: Permission denied"* ]] || die "an inaccessible new/ said: '$errs'"
inside chown postdesk:mail "$kr/new"
inside chmod 2770 "$kr/new"
wait_until 10 "KR to recover by itself" '[ "$(prop StatusText)" = "JP: imap ok, KR: maildir ok; outbox 0 queued" ]'
service_journal --since "@$since" | grep -q "Maildir intake recovered" || die "no 'recovered' line"
[ "$(main_pid)" = "$pid" ] || die "the daemon restarted"
ok "a Maildir it cannot access: 'cannot access', retried, recovered without a restart"

# ---------------------------------------------------------------------------- 7. the watchdog --

printf '[Service]\nWatchdogSec=2s\n' >"$root/etc/systemd/system/postdesk.service.d/zz-live-watchdog.conf"
inside systemctl daemon-reload
inside systemctl restart postdesk
restarts=$(prop NRestarts)
pid=$(main_pid)
inside kill -STOP "$pid"
wait_until 30 "the watchdog to restart the stopped daemon" \
    '[ "$(prop NRestarts)" -gt "$restarts" ] && [ "$(prop ActiveState)" = active ] && [ "$(main_pid)" != "$pid" ]'
inside journalctl -u postdesk --no-pager -o cat | grep -q "Watchdog timeout" || die "no watchdog timeout in the journal"
rm "$root/etc/systemd/system/postdesk.service.d/zz-live-watchdog.conf"
inside systemctl daemon-reload
inside systemctl restart postdesk
ok "the watchdog killed the stopped daemon and systemd restarted it"

# ------------------------------------------------------------- 8. stop under load, nothing lost --

n=400
# An MTA delivering all the while (in the background), and the stop in the middle of it.
inside runuser -u nobody -g mail -- sh -c "
    umask 007
    i=0
    while [ \$i -lt $n ]; do
        printf 'From: load%s@example.kr\nTo: support-kr@example.com\nSubject: load-%s\nMessage-ID: <load-%s@example.kr>\n\nload %s\n' \$i \$i \$i \$i >$kr/tmp/2000.load-\$i.live
        mv $kr/tmp/2000.load-\$i.live $kr/new/2000.load-\$i.live
        i=\$((i + 1))
    done" &
mta=$!
sleep 1.5
t0=$(date +%s%N)
inside systemctl stop postdesk
took=$((($(date +%s%N) - t0) / 1000000))
wait "$mta"
[ "$(prop ActiveState)" = inactive ] && [ "$(prop ExecMainStatus)" = 0 ] ||
    die "stop: $(prop ActiveState), exit $(prop ExecMainStatus)"
[ "$took" -lt 10000 ] || die "stopping took $took ms"
# Stopped: the admin commands open the store themselves, as postdesk (README).
moved=$(inside sh -c "ls $kr/cur | grep '^2000\.load-' | sed 's/^2000\.\(load-[0-9]*\)\..*/\1/'" || true)
stored=$(as_user postdesk postdesk tickets list --json | { grep -oE '"subject": "load-[0-9]+"' || true; } |
    sed 's/"subject": "\(.*\)"/\1/' | sort)
[ -z "$(printf '%s\n' "$stored" | uniq -d)" ] || die "a load mail is in two tickets"
lost=$(comm -23 <(printf '%s\n' "$moved" | grep . | sort) <(printf '%s\n' "$stored" | grep . | sort) || true)
[ -z "$lost" ] || die "left new/ but in no ticket: $lost"
n_moved=$(printf '%s\n' "$moved" | grep -c . || true)
n_stored=$(printf '%s\n' "$stored" | grep -c . || true)
inside systemctl start postdesk
wait_until 60 "every load mail stored" \
    '[ "$(as_user postdesk postdesk tickets list --json | grep -cE "\"subject\": \"load-[0-9]+\"")" = "$n" ]'
[ -z "$(inside ls "$kr/new")" ] || die "mail left in new/"
ok "stop while mail flowed in: $took ms, exit 0; $n_moved of $n had left new/, each in one of its $n_stored tickets; after start all $n, once each"

# ---------------------------------------------------------- 9. the journal: priorities, one entry each --

# Everything the service wrote: each entry one whole message, at the priority it says.
all=$(service_journal)
warn=$(service_journal -p warning)
n_levels=$(printf '%s\n' "$all" | grep -cE '^ ?(WARN|ERROR) |^postdesk: |^\{.*"level":"(WARN|ERROR)"' || true)
n_warn=$(printf '%s\n' "$warn" | grep -c . || true)
[ "$n_levels" = "$n_warn" ] || die "$n_levels warnings and errors written, $n_warn in journalctl -p warning"
printf '%s\n' "$warn" | grep -qE '^ ?(INFO|DEBUG) ' && die "journalctl -p warning shows info lines"
strays=$(printf '%s\n' "$all" | grep -vE '^ ?(ERROR|WARN|INFO|DEBUG|TRACE) |^postdesk: |^\{' || true)
[ -z "$strays" ] || die "journal entries that are pieces of a message: $strays"
ok "journalctl -p warning: all $n_warn warnings and errors, none else; every entry a whole message"

# The same with --log-format json (README's drop-in).
snippet json-logs >"$root/etc/systemd/system/postdesk.service.d/zz-json.conf"
inside systemctl daemon-reload
inside systemctl restart postdesk
wait_until 10 "JSON lines in the journal" 'service_journal -n 1 | grep -q "^{"'
since=$(mark)
printf 'this is = = not toml\n' >>"$root/etc/postdesk/config.toml"
inside systemctl reload postdesk
wait_until 5 "the JSON rejection at priority err" \
    'service_journal -p err --since "@$since" | grep -q "reload rejected"'
rejected=$(service_journal -p err --since "@$since")
[ "$(printf '%s\n' "$rejected" | grep -c .)" = 1 ] && [[ $rejected == '{'*'"level":"ERROR"'*'reload rejected'* ]] ||
    die "the JSON rejection: '$rejected'"
[ -z "$(service_journal -p warning --since "@$since" | grep -v '^{')" ] || die "non-JSON entries in JSON mode"
cp "$work/config.good" "$root/etc/postdesk/config.toml"
rm "$root/etc/systemd/system/postdesk.service.d/zz-json.conf"
inside systemctl daemon-reload
inside systemctl restart postdesk
ok "--log-format json: the error is one JSON entry at priority err"

# ------------------------------------------------------------------ 10. upgrade while running --

# (The outbox may still be sending the load's acknowledgements.)
wait_until 20 "STATUS ok" '[[ "$(prop StatusText)" == "JP: imap ok, KR: maildir ok; outbox "* ]]'
pid=$(main_pid)
# The new package unpacked, not yet configured: the new CLI and the old daemon.
cp "${debs[1]}" "$root/root/live/"
inside dpkg --unpack "/root/live/$(basename "${debs[1]}")" >/dev/null
[ "$(main_pid)" = "$pid" ] || die "unpacking restarted the daemon"
as_user postdesk postdesk tickets list >/dev/null || die "the new CLI and the old daemon do not talk"
customer_mail up@example.kr support-kr@example.com "upgrade window" live-up-0@example.kr >"$root/root/live/up.eml"
inside sh -c 'runuser -u postdesk -- postdesk ingest --region KR </root/live/up.eml' >/dev/null ||
    die "ingest by the new CLI into the old daemon failed"
inside dpkg --configure postdesk >/dev/null
wait_until 10 "the restart after the upgrade" '[ "$(main_pid)" != "$pid" ] && [ "$(prop ActiveState)" = active ]'
ok "unpacked over a running daemon: the new CLI talked to the old daemon; configured: restarted"
# README's upgrade step, with mail and admin commands going on all the while.
rm -f "$root/root/postdesk/target/debian/"*.deb
cp "${debs[2]}" "$root/root/postdesk/target/debian/"
inside sh -c '
    i=0; : >/root/live/loop.codes
    while [ ! -e /root/live/loop.stop ]; do
        printf "From: u$i@example.kr\nTo: support-kr@example.com\nSubject: during-$i\nMessage-ID: <during-$i@example.kr>\n\nx\n" |
            runuser -u postdesk -- postdesk ingest --region KR >/dev/null 2>>/root/live/loop.err
        echo "ingest $?" >>/root/live/loop.codes
        runuser -u postdesk -- postdesk tickets list >/dev/null 2>>/root/live/loop.err
        echo "list $?" >>/root/live/loop.codes
        i=$((i + 1))
    done' &
loop=$!
sleep 1
pid=$(main_pid)
run_snippet upgrade "$(snippet upgrade)"
wait_until 10 "the restart after README's upgrade" '[ "$(main_pid)" != "$pid" ] && [ "$(prop ActiveState)" = active ]'
sleep 1
touch "$root/root/live/loop.stop"
wait "$loop"
[ "$(inside dpkg-query -W -f='${Version}' postdesk)" = "$version-live3" ] || die "not upgraded"
bad=$(grep -v ' 0$' "$root/root/live/loop.codes" || true)
[ -z "$bad" ] || die "commands failed during the upgrade: $bad $(cat "$root/root/live/loop.err")"
during=$(grep -c '^ingest' "$root/root/live/loop.codes")
wait_until 10 "every mail ingested during the upgrade in a ticket" \
    '[ "$(tickets_json | grep -cE "\"subject\": \"during-[0-9]+\"")" = "$during" ]'
ok "README's upgrade while running: $during ingests and as many listings during it, all exit 0, all stored"

# Every acknowledgement and notification went out, none failed: all through the upgrade.
wait_until 180 "the outbox to drain" '[ "$(prop StatusText)" = "JP: imap ok, KR: maildir ok; outbox 0 queued" ]'
failed=$(inside postdesk outbox list --status failed --json | tr -d ' \n')
[ "$failed" = "[]" ] || die "outbox rows failed: $failed"
sent=$(inside postdesk outbox list --status sent --json | grep -c '"status": "sent"')
ok "the outbox drained: $sent mails sent, none failed"

# ---------------------------------------------------------------------------------- 11. purge --

run_snippet purge "$(snippet purge)" y
[ "$(prop LoadState)" = not-found ] || die "the unit is still there after purge: $(prop LoadState)"
for p in /var/lib/postdesk /var/spool/postdesk /usr/bin/postdesk /etc/postdesk/config.toml /etc/postdesk/credentials; do
    inside test -e "$p" && die "$p is still there after purge"
done
# What the admin (this test) put there stays, as dpkg leaves any file it does not know.
[ "$(inside ls -A /etc/postdesk)" = private-ca.pem ] || die "/etc/postdesk after purge: $(inside ls -A /etc/postdesk)"
inside getent passwd postdesk >/dev/null || die "purge removed the user postdesk"
ok "purge: unit, config, credentials, store and spool gone (the admin's CA file stays); the user stays"
