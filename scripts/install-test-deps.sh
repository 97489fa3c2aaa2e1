#!/usr/bin/env bash
# Install the system packages postdesk's integration tests need: a real mail
# stack (Dovecot IMAP + LMTP, Postfix SMTP), openssl for test certificates,
# systemd-nspawn and debootstrap for the live-systemd test, and cargo-deb.
#
# Idempotent: safe to run again; it only (re)installs what is missing and
# always leaves the distro's own mail services stopped and disabled.
#
# Why the distro services must stay down: Debian's packages start dovecot
# (ports 143/993 on all interfaces) and postfix (port 25 on all interfaces)
# right after install. The tests never use those instances; they start private
# instances bound to 127.0.0.1 only, via scripts/mailstack.sh. So we
#   1. block service starts during the install with a temporary policy-rc.d
#      (exit 101 = "action forbidden"), so nothing listens even for a moment;
#   2. afterwards stop and disable the services anyway, whatever the init
#      system (systemd running, systemd installed but not running, sysvinit).
#
# Needs root (apt-get). Works on Debian 12 (bookworm) with only Debian's
# package mirror reachable.
set -euo pipefail

log() { printf 'install-test-deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it uses apt-get); try: sudo $0"
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian/Ubuntu only"

export DEBIAN_FRONTEND=noninteractive

# dovecot-imapd/dovecot-lmtpd: IMAP server + LMTP delivery socket (pull in dovecot-core).
# postfix: the SMTP server (multi-instance capable: each stack has its own
#          config + queue directory, unlike OpenSMTPD's fixed spool/socket).
# openssl: generates the per-stack test CA and server certificate.
# spamassassin: tests/spam.rs has it score a GTUBE mail in local mode (`spamassassin -L`), so the
#               spam headers postdesk reads are the ones a real install writes.
# systemd: provides systemd-analyze, with which tests/systemd.rs checks the shipped unit
#          (`verify`, `security --offline=yes`); systemd need not run as PID 1.
# debootstrap: scripts/debian-root.sh makes the Debian 12 roots tests/mta.rs runs Postfix and OpenSMTPD in
#              (OpenSMTPD conflicts with the host's Postfix, so it is never installed here).
# systemd-container: tests/live_systemd.rs (scripts/live-systemd.sh) boots such a root with systemd as PID 1
#          under systemd-nspawn, and installs the package there. It also needs cargo-deb (installed below,
#          with cargo).
# cyrus-common/cyrus-admin/sasl2-bin: Cyrus IMAP, the second real IMAP server the intake tests run against
#          (its default "INBOX." layout; mailstack.sh cyrus-up starts a private instance, sasldb users).
#          Debian's cyrus-imapd (imapd, idled) conflicts with dovecot-imapd (both Provide and Conflict
#          imap-server), so it is never installed: its two programs are unpacked from the package of the
#          same version into $CYRUS_PRIVATE (below), where mailstack.sh finds them.
# mailstack.sh and live-systemd.sh also use flock, runuser, nsenter, script (util-linux, bsdutils) and
# timeout (coreutils): Essential packages, always present on Debian.
PACKAGES=(dovecot-core dovecot-imapd dovecot-lmtpd postfix openssl systemd spamassassin systemd-container
    debootstrap)
SERVICES=(dovecot postfix opensmtpd exim4 spamd spamassassin)
PACKAGES+=(cyrus-common cyrus-admin sasl2-bin); SERVICES+=(cyrus-imapd saslauthd)

missing=()
for p in "${PACKAGES[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = "installed" ] || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    # Postfix asks "General mail configuration type" via debconf. "No
    # configuration" leaves /etc/postfix/main.cf absent, so even if something
    # starts the system postfix later it has nothing to run; mailstack.sh
    # never uses /etc/postfix/main.cf (it runs `postfix -c <its own dir>`).
    if command -v debconf-set-selections >/dev/null; then
        printf '%s\n' \
            'postfix postfix/main_mailer_type select No configuration' \
            'postfix postfix/mailname string localhost' |
            debconf-set-selections
    fi

    # Forbid service starts during the install (see header). Only if the
    # machine has no policy-rc.d of its own (Docker images often do; keep it).
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# temporary, by postdesk scripts/install-test-deps.sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
        trap '[ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
    fi

    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"

    if [ "$created_policy" = 1 ]; then
        rm -f /usr/sbin/policy-rc.d
        created_policy=0
    fi
else
    log "all packages already installed: ${PACKAGES[*]}"
fi

# --- Cyrus's imapd and idled, unpacked (not installed: see the package list above)
CYRUS_PRIVATE=/usr/local/lib/postdesk-test/cyrus
cyrus_version=$(dpkg-query -W -f='${Version}' cyrus-common)
if [ ! -x "$CYRUS_PRIVATE/bin/imapd" ] || [ "$(cat "$CYRUS_PRIVATE/version" 2>/dev/null)" != "$cyrus_version" ]; then
    log "unpacking cyrus-imapd $cyrus_version (imapd, idled) into $CYRUS_PRIVATE"
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download "cyrus-imapd=$cyrus_version" >/dev/null 2>&1) ||
        { apt-get update && (cd "$tmp" && apt-get download "cyrus-imapd=$cyrus_version"); } ||
        die "cannot download cyrus-imapd $cyrus_version"
    dpkg-deb -x "$tmp"/cyrus-imapd_*.deb "$tmp/x"
    mkdir -p "$CYRUS_PRIVATE/bin"
    install -m 0755 "$tmp/x/usr/lib/cyrus/bin/imapd" "$tmp/x/usr/lib/cyrus/bin/idled" "$CYRUS_PRIVATE/bin/"
    printf '%s\n' "$cyrus_version" >"$CYRUS_PRIVATE/version"
    rm -rf "$tmp"
fi

# --- make sure the distro's own mail services are neither running nor enabled
systemd_running=0
[ -d /run/systemd/system ] && systemd_running=1

for svc in "${SERVICES[@]}"; do
    # Skip services whose package is not installed at all.
    if [ ! -e "/etc/init.d/$svc" ] && ! { command -v systemctl >/dev/null &&
        systemctl list-unit-files "$svc.service" 2>/dev/null | grep -q "^$svc.service"; }; then
        continue
    fi
    if [ "$systemd_running" = 1 ]; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
        systemctl disable --now "$svc.socket" >/dev/null 2>&1 || true
    else
        # systemd installed but not PID 1 (containers): `systemctl disable`
        # still works offline (it only edits symlinks); stop via init script.
        if command -v systemctl >/dev/null; then
            systemctl disable "$svc" >/dev/null 2>&1 || true
            # dovecot.socket would make systemd itself listen on 143/993.
            systemctl disable "$svc.socket" >/dev/null 2>&1 || true
        fi
        if [ -x "/etc/init.d/$svc" ]; then
            command -v update-rc.d >/dev/null && update-rc.d "$svc" disable >/dev/null 2>&1 || true
            # policy-rc.d does not apply to a direct init-script call.
            "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
        fi
    fi
done

# Last resort: a system instance started some other way (no init system at all)
# still runs from its default config. Stop exactly those, never our private
# mailstack.sh instances (which always run with `-c <dir>`).
if [ -s /run/dovecot/master.pid ]; then
    pid=$(cat /run/dovecot/master.pid)
    if kill -0 "$pid" 2>/dev/null && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- ' -c '; then
        log "stopping system dovecot (pid $pid)"
        kill "$pid" || true
    fi
fi
if [ -s /var/spool/postfix/pid/master.pid ]; then
    pid=$(tr -d ' ' </var/spool/postfix/pid/master.pid)
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping system postfix (pid $pid)"
        postfix stop >/dev/null 2>&1 || kill "$pid" || true
    fi
fi

# cargo-deb: scripts/build-deb.sh packages with it (the version it pins; a build of a minute or two).
CARGO_DEB_VERSION=$(sed -n 's/^CARGO_DEB_VERSION=//p' "$(dirname "$0")/build-deb.sh")
if command -v cargo >/dev/null; then
    if ! cargo deb --version >/dev/null 2>&1; then
        log "installing cargo-deb $CARGO_DEB_VERSION (cargo install --locked)"
        cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
    fi
else
    log "warning: cargo not found, cargo-deb not installed (tests/live_systemd.rs needs it)"
fi

# Report versions (useful in CI logs) and verify the binaries are there.
for b in /usr/sbin/dovecot /usr/lib/dovecot/imap /usr/sbin/postfix /usr/bin/openssl /usr/bin/systemd-analyze \
    /usr/lib/cyrus/bin/master "$CYRUS_PRIVATE/bin/imapd" /usr/sbin/saslpasswd2 /usr/bin/systemd-nspawn \
    /usr/sbin/debootstrap; do
    [ -x "$b" ] || die "$b missing after install"
done
log "dovecot $(/usr/sbin/dovecot --version 2>/dev/null | cut -d' ' -f1), $(/usr/sbin/postconf -d mail_version 2>/dev/null), $(/usr/bin/openssl version | cut -d' ' -f1-2), $(/usr/bin/systemd-analyze --version | head -1)"
log "ok: now run scripts/mailstack.sh up DIR"
