#!/usr/bin/env bash
# mailstack.sh — a real, private mail stack for postdesk's integration tests.
#
#   Dovecot (IMAP, IMAPS, LMTP)  +  Postfix (SMTP, SMTPS)  →  LMTP  →  Maildir
#   and, on demand (cyrus-up), Cyrus IMAP beside it: Postfix  →  LMTP  →  Cyrus
#
# Everything listens on 127.0.0.1 or on unix sockets inside the state DIR;
# nothing is bound to any other address. Install the packages first with
# scripts/install-test-deps.sh (Debian 12).
#
# Usage
#   mailstack.sh up DIR                       start (or reuse) the stack in DIR, print its env
#   mailstack.sh add-user DIR ADDRESS PASSWORD [--inbox-prefix] [--imap4rev1-only]
#                                              add a Dovecot mailbox (or change its password); immediate.
#                                              --inbox-prefix: this user's personal namespace is "INBOX."
#                                              (folders INBOX.Processed, ...), as Courier-era hosts have it;
#                                              --imap4rev1-only: its CAPABILITY after login is just IMAP4rev1
#                                              (no MOVE, UIDPLUS, IDLE: the oldest servers)
#   mailstack.sh cyrus-up DIR                  start (or reuse) a Cyrus IMAP in DIR/cyrus, print DIR/cyrus/env
#   mailstack.sh cyrus-add-user DIR ADDRESS PASSWORD
#                                              add a Cyrus mailbox (sasldb user and its INBOX)
#   mailstack.sh hold DIR                      keep DIR's servers up while this command's stdin is open;
#                                              when it closes (the holding process exited, however it
#                                              ended) and no other holder is left, stop them all
#   mailstack.sh status DIR                    exit 0 = up, 1 = partly up, 3 = down
#   mailstack.sh env DIR                       print DIR/env
#   mailstack.sh down DIR                      stop every server in DIR; DIR (mail, users, logs) is kept
#   mailstack.sh restart-imap DIR              stop Dovecot (and Cyrus, if it runs), end their open sessions,
#                                              start them again (same ports, users, mail)
#   mailstack.sh stop-smtp DIR                 stop Postfix only (SMTP refuses connections; Dovecot stays up)
#   mailstack.sh start-smtp DIR                start Postfix again after stop-smtp (same ports)
#
# `up` writes DIR/env, shell-sourceable KEY=VALUE lines:
#   MAILSTACK_DIR  IMAP_PORT  IMAPS_PORT  SMTP_PORT  SMTPS_PORT  CA_PEM
#   LMTP_SOCKET  DOVECOT_CONF  POSTFIX_CONF_DIR  USERS_DIR  MAIL_ROOT
# `cyrus-up` writes DIR/cyrus/env:
#   CYRUS_IMAP_PORT (plain + STARTTLS)  CYRUS_IMAPS_PORT  CYRUS_NOMOVE_PORT (the same
#   mailboxes with MOVE left out of CAPABILITY)  CYRUS_LMTP_SOCKET  CA_PEM
#
# Ports: IMAP_PORT, IMAPS_PORT, SMTP_PORT, SMTPS_PORT from the environment are
# used if set; otherwise free ports are picked at random (below the kernel's
# ephemeral range). If MAILSTACK_DIR is set in the environment to a *different*
# directory, the *_PORT variables are ignored: they were sourced from another
# stack's env file and would collide.
#
# What the servers do
#   IMAP  127.0.0.1:IMAP_PORT   plaintext, STARTTLS offered, LOGIN/AUTH PLAIN/LOGIN allowed
#   IMAPS 127.0.0.1:IMAPS_PORT  implicit TLS
#   SMTP  127.0.0.1:SMTP_PORT   STARTTLS offered; AUTH PLAIN/LOGIN offered (checked
#                               against the same users, via Dovecot) but not required
#   SMTPS 127.0.0.1:SMTPS_PORT  implicit TLS, same rules
#   Any recipient domain is accepted and delivered through Dovecot's LMTP unix
#   socket (DIR/run/dovecot/lmtp) into DIR/mail/<address>/Maildir. Recipients that
#   are not users are rejected at RCPT time with "550 5.1.1 ... User unknown" by a
#   tiny Postfix policy service that looks for the user's passwd-file (the
#   same one Dovecot reads) on every RCPT, so users added with add-user are
#   accepted at once, by open SMTP sessions too. "+detail" is stripped
#   (a+x@d is delivered to a@d's INBOX); addresses are case-insensitive. Set MAILSTACK_ACCEPT_ALL=1 at `up` to accept
#   every recipient instead (Dovecot LMTP then rejects unknown users after the
#   SMTP transaction, and Postfix sends a bounce to the envelope sender).
#   Messages are passed on as sent; Postfix adds only its Received: header (no
#   Message-ID/Date/From are invented). Size limit 50 MiB. No per-session
#   message limit, no per-client connection limit (loopback is exempt), no
#   delays after SMTP errors, no auth failure delay or penalty (a failed login
#   is still answered only on Dovecot's 500 ms failure timer: 0-0.5 s).
#   Delivery SMTP -> INBOX takes ~10-50 ms.
#   TLS: a throw-away CA (DIR/tls/ca.pem) signs a server certificate for
#   DNS:localhost and IP:127.0.0.1 (rustls/webpki refuse a bare self-signed
#   certificate, hence the CA). Connect to "localhost" or 127.0.0.1 with CA_PEM.
#   IDLE: Dovecot watches the Maildir with inotify and sends "* N EXISTS"
#   about 0.5 s after delivery (it batches change notifications for 500 ms,
#   not configurable); mailbox_idle_check_interval = 1s is the fallback where
#   inotify does not work; "* OK Still here" every imap_idle_notify_interval
#   (10s).
#
#   Cyrus (cyrus-up): Debian's Cyrus IMAP 3.6 with its default folder layout
#   (altnamespace: no, unixhierarchysep: no: NAMESPACE (("INBOX." ".")), folders
#   INBOX.Processed), virtdomains: userid (logins are full addresses), sasldb
#   users (DIR/cyrus/sasldb2, saslpasswd2), idled for IDLE (Cyrus notifies an
#   idling client only when DIR/cyrus/conf/socket/ exists), an LMTP unix socket
#   for delivery, no duplicate suppression (mail is delivered as sent). Its own
#   imapd.conf and cyrus.conf; one `master` process (-C -M -p, in the
#   foreground of its own session) that takes its children down on SIGTERM.
#   Postfix delivers mail for ...@cyrus.example.com to it; users made with
#   cyrus-add-user log in with that address. An IMAP admin (cyrus-admin, the
#   password in DIR/cyrus/admin.pass) creates the mailboxes. Logs: Cyrus logs
#   to syslog only (DIR/log/cyrus.log has the master's own output).
#
# Behaviour of `up` (documented because tests depend on it)
#   * New or empty DIR: generates config and certificates, starts both servers,
#     waits until every port answers (IMAP/SMTP greeting, TLS handshake verified
#     against CA_PEM), then writes and prints DIR/env. About 0.4-0.6 s.
#   * DIR already has a running stack: does nothing but print DIR/env (exit 0,
#     ~0.05 s). Exception: a stack made by an older version of this script
#     (DIR/.mailstack-version differs) is restarted with the current config,
#     keeping ports, users and mail.
#     Concurrent `up` calls on the same DIR are serialised with a lock, so
#     parallel test binaries can all call `up DIR`: one starts it, the others
#     reuse it.
#   * DIR has a stopped stack (after `down`, or crashed/killed processes): kills
#     any leftovers recorded in DIR's pid files, then starts again keeping its
#     users, mail and ports (unless ports are given in the environment).
#   * Another DIR already runs a stack: both run side by side, independently,
#     on different ports. Postfix supports this (own config, queue and data
#     directories per instance) — the reason Postfix was chosen over OpenSMTPD,
#     whose spool and control socket paths are compiled in (one per machine).
#   * If a port is in use, `up` fails and says which; nothing is left running.
#   `down` takes ~1.2 s (Dovecot's master needs ~1 s to exit after SIGTERM).
#   * `hold DIR` is how test runs make sure they leave nothing running: the
#     test process starts `hold DIR` with a pipe on its stdin and never writes
#     to or closes it. The kernel closes it when the test process exits,
#     whatever the way (normal end, failed test, panic, SIGKILL, Ctrl-C): the
#     holder then deregisters and, once MAILSTACK_GRACE seconds (default 0)
#     later no other holder of DIR is alive, stops every server in DIR (the
#     grace lets the next test binary of the same `cargo test` keep the stack).
#     The holder ignores SIGINT and SIGHUP (an interrupted run is when it is
#     needed) and cleans up at once on SIGTERM. The servers themselves run in
#     sessions of their own, so a Ctrl-C of the test run does not hit them
#     half-way. Only SIGKILL of the holder itself leaves them running; the
#     next `hold` of DIR prunes dead holders.
#
# Requirements and gotchas
#   * Must run as root: Postfix's master daemon only runs as root. Daemon
#     processes drop privileges: Dovecot uses the distro users "dovecot"
#     (internal processes and mail owner) and "dovenull" (login processes),
#     Postfix uses "postfix", and the recipient check runs as "nobody".
#     Dovecot refuses root for these roles, which is why the running user is not
#     used.
#   * DIR and all its parents must be traversable by those users (DIR is chmod
#     0755; a DIR under /root, mode 0700, does not work — use /tmp or the work
#     tree). DIR must be short enough for unix socket paths (checked).
#   * Users are DIR/users/<address>, one passwd-file each, with the plaintext
#     test password, world-readable (the policy service runs as nobody). Test
#     data only. add-user for an existing address changes its password (and
#     takes ~1 s: Dovecot notices changed files at most once a second).
#   * Logs: DIR/log/dovecot.log and DIR/log/postfix.log.
#   * `down` is needed to stop the servers; deleting DIR does not. A stack whose
#     DIR was deleted while running must be stopped by its pids (see `ps`).
#   * Debian's own dovecot/postfix services are not used and must stay
#     stopped (install-test-deps.sh disables them); they would hold 143/993/25
#     on all interfaces but never collide with our random ports.
set -euo pipefail

# dovecot, postfix and postconf live in /usr/sbin, which a non-login PATH may lack.
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

PROG=$(basename "$0")
SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)

die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
note() { printf '%s: %s\n' "$PROG" "$*" >&2; }

usage() {
    sed -n '/^# Usage/,/^# `up` writes/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------- helpers ----

require_bins() {
    local missing=() b
    for b in dovecot postfix postconf openssl flock timeout runuser; do
        command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || missing+=("$b")
    done
    [ -x /usr/lib/postfix/sbin/master ] || missing+=("postfix master")
    [ -x /usr/lib/dovecot/lmtp ] || missing+=("dovecot lmtp (dovecot-lmtpd)")
    [ -x /usr/lib/dovecot/imap ] || missing+=("dovecot imap (dovecot-imapd)")
    if [ "${#missing[@]}" -gt 0 ]; then
        die "missing: ${missing[*]}. Install the test dependencies first: sudo $SCRIPT_DIR/install-test-deps.sh"
    fi
}

require_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root: Postfix's master daemon refuses to run as any other user (the servers drop privileges themselves)"
}

# abs_dir DIR -> absolute path, without requiring it to exist.
abs_dir() {
    local d=$1
    case $d in
        /*) ;;
        *) d="$PWD/$d" ;;
    esac
    # strip trailing slashes (but keep "/")
    while [ "${#d}" -gt 1 ] && [ "${d%/}" != "$d" ]; do d=${d%/}; done
    printf '%s\n' "$d"
}

set_paths() {
    DIR=$(abs_dir "$1")
    # The path goes unquoted into Dovecot and Postfix configs and into unix
    # socket names: keep it plain.
    [[ $DIR =~ ^[A-Za-z0-9._/+-]+$ ]] ||
        die "DIR '$DIR' has characters the server configs cannot take (use letters, digits, . _ - + /)"
    RUN="$DIR/run"
    DOVECOT_BASE="$RUN/dovecot"
    DOVECOT_CONF="$DIR/dovecot.conf"
    PF_CONF="$DIR/postfix"
    PF_QUEUE="$DIR/postfix-queue"
    PF_DATA="$DIR/postfix-data"
    TLS="$DIR/tls"
    LOGS="$DIR/log"
    USERS="$DIR/users"
    MAIL_ROOT="$DIR/mail"
    ENV_FILE="$DIR/env"
    LMTP_SOCKET="$DOVECOT_BASE/lmtp"
    AUTH_SOCKET="$DOVECOT_BASE/auth-postfix"
    POLICY="$DIR/rcpt-policy.sh"
    DOVECOT_PID="$DOVECOT_BASE/master.pid"
    VERSION_FILE="$DIR/.mailstack-version"
    PF_PID="$PF_QUEUE/pid/master.pid"
    HOLDERS="$DIR/holders"
    CY="$DIR/cyrus"
    CY_CONFIG="$CY/conf"
    CY_CONF="$CY/imapd.conf"
    CY_NOMOVE_CONF="$CY/imapd-nomove.conf"
    CY_MASTER_CONF="$CY/cyrus.conf"
    CY_PID="$CY/run/master.pid"
    CY_ENV="$CY/env"
    CY_LMTP="$CY_CONFIG/socket/lmtp"
    CY_SASLDB="$CY/sasldb2"
    CY_USERS="$CY/users"
    CY_ADMIN=cyrus-admin
    CY_ADMIN_PASS="$CY/admin.pass"
}

# Cyrus's programs: Debian's cyrus-common has master and lmtpd; imapd and idled are in cyrus-imapd,
# which conflicts with dovecot-imapd, so install-test-deps.sh unpacks those two privately.
CYRUS_LIBEXEC=/usr/lib/cyrus/bin
CYRUS_PRIVATE=/usr/local/lib/postdesk-test/cyrus/bin
cyrus_prog() {
    if [ -x "$CYRUS_LIBEXEC/$1" ]; then printf '%s\n' "$CYRUS_LIBEXEC/$1"; else printf '%s\n' "$CYRUS_PRIVATE/$1"; fi
}
require_cyrus() {
    local missing=() b
    for b in "$CYRUS_LIBEXEC/master" "$CYRUS_LIBEXEC/lmtpd" "$CYRUS_LIBEXEC/ctl_cyrusdb" "$(cyrus_prog imapd)" "$(cyrus_prog idled)" /usr/sbin/saslpasswd2; do
        [ -x "$b" ] || missing+=("$b")
    done
    id cyrus >/dev/null 2>&1 || missing+=("user cyrus")
    if [ "${#missing[@]}" -gt 0 ]; then
        die "Cyrus missing: ${missing[*]}. Install the test dependencies first: sudo $SCRIPT_DIR/install-test-deps.sh"
    fi
}

# Take DIR's lock (fd 9) so up/down/add-user on one DIR never interleave.
lock_dir() {
    mkdir -p "$DIR"
    exec 9>>"$DIR/.lock"
    flock -w 120 9 || die "timed out waiting for the lock on $DIR/.lock"
}

# pid_of_dovecot / pid_of_postfix: print the pid if the process recorded in the
# pid file is alive *and* really is this DIR's server (guards against pid reuse).
pid_of_dovecot() {
    local pid
    [ -s "$DOVECOT_PID" ] || return 1
    pid=$(tr -dc '0-9' <"$DOVECOT_PID")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$DOVECOT_CONF" || return 1
    printf '%s\n' "$pid"
}
pid_of_cyrus() {
    local pid
    [ -s "$CY_PID" ] || return 1
    pid=$(tr -dc '0-9' <"$CY_PID")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$CYRUS_LIBEXEC/master" ] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$CY_CONF" || return 1
    alive "$pid" || return 1
    printf '%s\n' "$pid"
}
pid_of_postfix() {
    local pid
    [ -s "$PF_PID" ] || return 1
    pid=$(tr -dc '0-9' <"$PF_PID")
    [ -n "$pid" ] && [ -r "/proc/$pid/environ" ] || return 1
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/lib/postfix/sbin/master ] || return 1
    tr '\0' '\n' <"/proc/$pid/environ" | grep -qxF -- "MAIL_CONFIG=$PF_CONF" || return 1
    printf '%s\n' "$pid"
}

# alive PID: true if the process exists and is not a zombie. (Daemons are
# reparented to PID 1; in containers PID 1 may never reap them, and a zombie
# still answers kill -0.)
alive() {
    local state
    state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# wait_gone PID SECONDS: wait for a process to exit; 0 if it did.
wait_gone() {
    local pid=$1 i
    for ((i = 0; i < $2 * 20; i++)); do
        alive "$pid" || return 0
        sleep 0.05
    done
    return 1
}

# port_busy PORT: true if something accepts connections on 127.0.0.1:PORT.
port_busy() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# pick_port: a random free port in 20000-32767 (below Linux's default
# ephemeral range 32768-60999, so outgoing connections don't take it first),
# distinct from the ones already picked in this run.
PICKED=" "
pick_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 12768))
        case $PICKED in *" $p "*) continue ;; esac
        port_busy "$p" && continue
        PICKED="$PICKED$p "
        printf '%s\n' "$p"
        return 0
    done
    die "could not find a free port on 127.0.0.1"
}

valid_port() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }

# read_env_key KEY [FILE]: value of KEY in DIR/env (or FILE), or nothing.
read_env_key() {
    local file=${2:-$ENV_FILE}
    [ -f "$file" ] || return 0
    sed -n "s/^$1=//p" "$file" | tail -n1 | tr -d "'\""
}

# ------------------------------------------------------------- generation ----

# Bump when the generated configuration changes in a way a running stack must
# pick up: `up` restarts a running stack whose DIR/.mailstack-version differs.
STACK_VERSION=3

# Earlier versions kept all users in one DIR/passwd; move them to DIR/users/.
migrate_users() {
    [ -f "$DIR/passwd" ] || return 0
    mkdir -p "$USERS"
    chmod 0755 "$USERS"
    local name rest
    while IFS=: read -r name rest; do
        case $name in "" | \#* | */* | .*) continue ;; esac
        [ -e "$USERS/$name" ] ||
            printf '%s:%s::::%s::\n' "$name" "${rest%%:*}" "$MAIL_ROOT/$name" >"$USERS/$name"
        chmod 0644 "$USERS/$name"
    done <"$DIR/passwd"
    mv -f "$DIR/passwd" "$DIR/passwd.migrated"
}

gen_tls() {
    [ -s "$TLS/ca.pem" ] && [ -s "$TLS/server.pem" ] && [ -s "$TLS/server.key" ] && return 0
    mkdir -p "$TLS"
    # Own minimal openssl config: no dependence on the distro's openssl.cnf
    # default extensions. EC P-256 keys: generated in milliseconds, accepted by
    # rustls, openssl and Python.
    cat >"$TLS/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = postdesk mailstack test CA
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF
    (
        cd "$TLS"
        openssl req -x509 -new -nodes -config openssl.cnf -extensions v3_ca \
            -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout ca.key -out ca.pem \
            -days 3650 -subj "/CN=postdesk mailstack test CA" 2>/dev/null
        openssl req -new -nodes -config openssl.cnf \
            -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout server.key -out server.csr \
            -subj "/CN=localhost" 2>/dev/null
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 12)" \
            -days 3650 -extfile openssl.cnf -extensions v3_server -out server.pem 2>/dev/null
        rm -f server.csr
        chmod 600 ca.key server.key # read by the servers while still root
        chmod 644 ca.pem server.pem
    ) || die "openssl failed to create the test certificates in $TLS"
}

gen_dovecot_conf() {
    cat >"$DOVECOT_CONF" <<EOF
# Generated by scripts/mailstack.sh — private test instance, do not edit.
# Started as: dovecot -c $DOVECOT_CONF
base_dir = $DOVECOT_BASE
state_dir = $DIR/dovecot-state
instance_name = mailstack-$(printf '%s' "$DIR" | cksum | cut -d' ' -f1)
log_path = $LOGS/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
verbose_proctitle = yes

# Dovecot refuses root for its processes; use the distro's unprivileged users.
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1

# Tests authenticate in plaintext on loopback; no penalties for failures.
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0 secs
auth_cache_size = 0
auth_username_format = %Lu
auth_verbose = yes
recipient_delimiter = +

# Users: one passwd-file per user, DIR/users/<address>, holding the line
# "address:{PLAIN}password". Why not one file for all: Dovecot stats a
# passwd-file at most once per second, so a user appended to a shared file
# could be "unknown" for up to a second; a new user's file is a new path and
# is read at its first lookup, so add-user takes effect immediately.
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu $USERS/%Lu
}
userdb {
  driver = passwd-file
  args = username_format=%Lu $USERS/%Lu
  default_fields = uid=dovecot gid=dovecot home=$MAIL_ROOT/%Lu
}
mail_location = maildir:~/Maildir
mail_fsync = never
# Named, so that a user's passwd-file can override its prefix (add-user --inbox-prefix:
# userdb_namespace/inbox/prefix=INBOX.). Without an override: NAMESPACE (("" ".")).
namespace inbox {
  inbox = yes
}

ssl = yes
ssl_cert = <$TLS/server.pem
ssl_key = <$TLS/server.key
ssl_min_protocol = TLSv1.2

# Parallel tests: many connections per user and in total.
default_process_limit = 1000
default_client_limit = 10000
protocol imap {
  mail_max_userip_connections = 200
  # "* OK Still here" during IDLE every 10s; new mail is pushed at once via
  # inotify, or checked every second where inotify is unavailable.
  imap_idle_notify_interval = 10 secs
}
mailbox_idle_check_interval = 1 secs

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $IMAPS_PORT
    ssl = yes
  }
  # "high-performance" login mode: few processes, many connections each.
  service_count = 0
  process_min_avail = 1
}
service lmtp {
  # Postfix's lmtp client (user postfix) delivers here.
  unix_listener lmtp {
    mode = 0666
  }
}
service auth {
  # Postfix smtpd asks Dovecot to check SMTP AUTH credentials here.
  unix_listener auth-postfix {
    mode = 0666
  }
}
protocol lmtp {
  postmaster_address = postmaster@localhost
}
# No auth penalty: Dovecot otherwise delays every login from an IP (up to 15s)
# after failed ones, and all tests share 127.0.0.1. The auth process disables
# the penalty when it cannot connect to this socket; mode 0 makes sure of that
# (the auth process does not run as root).
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
EOF
}

gen_postfix_conf() {
    mkdir -p "$PF_CONF"
    cat >"$PF_CONF/main.cf" <<EOF
# Generated by scripts/mailstack.sh — private test instance, do not edit.
# Started as: postfix -c $PF_CONF start
compatibility_level = 3.6
queue_directory = $PF_QUEUE
data_directory = $PF_DATA
maillog_file = $LOGS/postfix.log
maillog_file_prefixes = $LOGS/
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-mailstack

myhostname = mailstack.localhost
mydomain = localhost
myorigin = \$myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtp_bind_address = 127.0.0.1
smtpd_banner = \$myhostname ESMTP postdesk mailstack

# No local delivery at all: every domain is "remote" and goes to the default
# transport, Dovecot's LMTP unix socket.
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains =
default_transport = lmtp:unix:$LMTP_SOCKET
relay_transport = lmtp:unix:$LMTP_SOCKET
# Users of the Cyrus beside Dovecot (cyrus-up) live at cyrus.example.com.
transport_maps = inline:{ {cyrus.example.com = lmtp:unix:$CY_LMTP} }
lmtp_host_lookup = native

# Who may send: anyone on loopback (we listen nowhere else), or authenticated.
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = $(if [ "${MAILSTACK_ACCEPT_ALL:-0}" = 1 ]; then echo permit; else echo "check_policy_service unix:private/rcptcheck, permit"; fi)
smtpd_policy_service_default_action = 451 4.3.5 mailstack recipient check unavailable

# Pass messages on as sent: no header rewriting/additions for "local" clients.
local_header_rewrite_clients =
always_add_missing_headers = no
smtputf8_enable = yes
message_size_limit = 52428800
mailbox_size_limit = 0

# Test traffic: no penalties, no DNS, quick retries.
smtpd_peername_lookup = no
smtpd_error_sleep_time = 0s
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 10000
smtpd_junk_command_limit = 100000
smtpd_client_event_limit_exceptions = \$mynetworks
in_flow_delay = 0s
default_process_limit = 500
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 10s
maximal_queue_lifetime = 1h
bounce_queue_lifetime = 1h
delay_warning_time = 0h
biff = no

# TLS: STARTTLS offered on SMTP_PORT, implicit TLS on SMTPS_PORT.
smtpd_tls_cert_file = $TLS/server.pem
smtpd_tls_key_file = $TLS/server.key
smtpd_tls_security_level = may
smtpd_tls_auth_only = no
smtpd_tls_loglevel = 0
smtp_tls_security_level = none
lmtp_tls_security_level = none

# SMTP AUTH checked by Dovecot (same users), offered but never required.
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = $AUTH_SOCKET
smtpd_sasl_security_options = noanonymous
smtpd_sasl_tls_security_options = noanonymous
EOF

    # chroot column is "n" everywhere: the instance's paths live under DIR.
    cat >"$PF_CONF/master.cf" <<EOF
# Generated by scripts/mailstack.sh — private test instance, do not edit.
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:$SMTP_PORT inet n - n - - smtpd
127.0.0.1:$SMTPS_PORT inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
# Recipient check: one policy process per smtpd connection, as user nobody.
rcptcheck unix  -       n       n       -       0       spawn
  user=nobody argv=/bin/sh $POLICY $USERS $CY_USERS
EOF
    # The postfix command waits (in 0.3s steps, ~2s) while main.cf looks
    # like it is still being edited, i.e. was modified in the last moments.
    # Backdate the generated files to skip that.
    touch -d "@$(($(date +%s) - 60))" "$PF_CONF/main.cf" "$PF_CONF/master.cf"
}

gen_policy() {
    # A Postfix policy service (SMTPD_POLICY_README): reads "name=value" lines
    # ending with an empty line, answers "action=..." and an empty line. It
    # checks that DIR/users/<recipient> exists on every request (no cache), so
    # users added with add-user are accepted at once.
    cat >"$POLICY" <<'EOF'
#!/bin/sh
# Generated by scripts/mailstack.sh: Postfix policy service. Rejects
# recipients that have no passwd-file in the users directory given as $1.
users=$1
cyrus_users=${2:-/nonexistent}
rcpt=
while IFS= read -r line; do
    case $line in
        recipient=*) rcpt=${line#recipient=} ;;
        "")
            addr=$(printf '%s' "$rcpt" | tr 'A-Z' 'a-z')
            case $addr in
                *@*) user=${addr%@*}; domain=${addr##*@}; addr="${user%%+*}@$domain" ;;
                *) addr=${addr%%+*} ;;
            esac
            case $addr in
                "" | */* | .*) found=no ;;
                *) if [ -f "$users/$addr" ] || [ -f "$cyrus_users/$addr" ]; then found=yes; else found=no; fi ;;
            esac
            if [ "$found" = yes ]; then
                printf 'action=DUNNO\n\n'
            else
                printf 'action=550 5.1.1 User unknown (no such mailstack user)\n\n'
            fi
            rcpt=
            ;;
    esac
done
EOF
    chmod 755 "$POLICY"
}

write_env() {
    local tmp="$ENV_FILE.tmp.$$"
    cat >"$tmp" <<EOF
MAILSTACK_DIR=$DIR
IMAP_PORT=$IMAP_PORT
IMAPS_PORT=$IMAPS_PORT
SMTP_PORT=$SMTP_PORT
SMTPS_PORT=$SMTPS_PORT
CA_PEM=$TLS/ca.pem
LMTP_SOCKET=$LMTP_SOCKET
DOVECOT_CONF=$DOVECOT_CONF
POSTFIX_CONF_DIR=$PF_CONF
USERS_DIR=$USERS
MAIL_ROOT=$MAIL_ROOT
EOF
    mv -f "$tmp" "$ENV_FILE"
}

# ------------------------------------------------------------ start / stop ----

stop_servers() {
    # SIGTERM is what `postfix stop` and `dovecot stop` send; signalling both
    # masters directly and waiting in parallel is faster than `postfix stop`
    # (which polls once a second). Both masters take their children down.
    local pids=() pid
    pid=$(pid_of_postfix) && pids+=("$pid")
    pid=$(pid_of_dovecot) && pids+=("$pid")
    pid=$(pid_of_cyrus) && pids+=("$pid")
    [ "${#pids[@]}" -gt 0 ] || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for pid in "${pids[@]}"; do
        if ! wait_gone "$pid" 10; then
            note "master process $pid did not stop within 10s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || true
        fi
    done
    # Children (smtpd, imap-login, ...) follow their master within moments;
    # wait until the ports are free, so an immediate `up` can reuse them.
    local i name port busy
    for ((i = 0; i < 40; i++)); do
        busy=0
        for name in IMAP_PORT IMAPS_PORT SMTP_PORT SMTPS_PORT; do
            port=$(read_env_key "$name")
            if [ -n "$port" ] && port_busy "$port"; then busy=1; fi
        done
        for name in CYRUS_IMAP_PORT CYRUS_IMAPS_PORT CYRUS_NOMOVE_PORT; do
            port=$(read_env_key "$name" "$CY_ENV")
            if [ -n "$port" ] && port_busy "$port"; then busy=1; fi
        done
        [ "$busy" = 0 ] && break
        sleep 0.05
    done
    rm -f "$DOVECOT_PID" "$CY_PID"
}

show_logs() {
    local f
    for f in "$LOGS/dovecot.log" "$LOGS/postfix.log" "$LOGS/postfix-start.log" "$LOGS/dovecot-start.log"; do
        [ -s "$f" ] || continue
        printf -- '--- last lines of %s\n' "$f" >&2
        tail -n 15 "$f" >&2
    done
}

fail_up() {
    note "error: $*"
    show_logs
    stop_servers
    exit 1
}

# wait_greeting PORT PREFIX: wait until 127.0.0.1:PORT sends a line starting with PREFIX.
wait_greeting() {
    local port=$1 prefix=$2 i line
    for ((i = 0; i < 300; i++)); do
        line=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && IFS= read -r l <&3 && printf "%s" "$l"' _ "$port" 2>/dev/null || true)
        case $line in "$prefix"*) return 0 ;; esac
        sleep 0.05
    done
    return 1
}

# wait_tls PORT: wait until 127.0.0.1:PORT completes a TLS handshake whose
# certificate verifies against ca.pem for the name "localhost".
wait_tls() {
    local port=$1 i
    for ((i = 0; i < 100; i++)); do
        if timeout 5 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
            -CAfile "$TLS/ca.pem" -verify_hostname localhost -verify_return_error \
            -brief </dev/null >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

check_dir_usable() {
    # Unix socket paths are limited to 107 bytes; Dovecot's longest under its
    # base_dir is about 30 characters.
    [ "${#DOVECOT_BASE}" -le 70 ] ||
        die "DIR path too long for unix socket paths ($DOVECOT_BASE is ${#DOVECOT_BASE} chars, max 70): use a shorter DIR, e.g. under /tmp"
    chmod 0755 "$DIR"
    local u
    for u in dovecot postfix nobody "$@"; do
        runuser -u "$u" -- test -x "$DIR" 2>/dev/null ||
            die "user $u cannot reach $DIR (a parent directory is not world-traversable, e.g. /root is 0700): use a DIR under /tmp or chmod o+x the parents"
    done
}

cmd_up() {
    require_bins
    require_root
    set_paths "$1"
    lock_dir
    check_dir_usable

    # Already running here? Reuse it, if this version of the script made it.
    local dpid ppid
    dpid=$(pid_of_dovecot || true)
    ppid=$(pid_of_postfix || true)
    if [ -n "$dpid" ] && [ -n "$ppid" ] && [ -s "$ENV_FILE" ]; then
        if [ "$(cat "$VERSION_FILE" 2>/dev/null)" = "$STACK_VERSION" ]; then
            note "already up in $DIR (dovecot pid $dpid, postfix pid $ppid); reusing it"
            cat "$ENV_FILE"
            return 0
        fi
        note "$DIR runs a stack made by an older mailstack.sh; restarting it with the current configuration (same ports, users and mail)"
    elif [ -n "$dpid" ] || [ -n "$ppid" ]; then
        note "$DIR has a partly running stack; stopping it first"
    fi
    stop_servers
    rm -f "$VERSION_FILE"
    migrate_users

    # Ports: environment (unless sourced from another stack), else the ones
    # this DIR used before, else random free ones.
    local from_env=1 name val
    if [ -n "${MAILSTACK_DIR:-}" ] && [ "$(abs_dir "$MAILSTACK_DIR")" != "$DIR" ]; then
        from_env=0
        note "ignoring *_PORT variables: MAILSTACK_DIR in the environment is another stack ($MAILSTACK_DIR)"
    fi
    for name in IMAP_PORT IMAPS_PORT SMTP_PORT SMTPS_PORT; do
        val=""
        if [ "$from_env" = 1 ] && [ -n "${!name:-}" ]; then
            val=${!name}
            valid_port "$val" || die "$name=$val is not a port number"
            port_busy "$val" && die "$name=$val (from the environment) is already in use on 127.0.0.1; unset $name to get a free port"
        else
            val=$(read_env_key "$name")
            if [ -n "$val" ] && { ! valid_port "$val" || port_busy "$val"; }; then
                val=""
            fi
            [ -n "$val" ] || val=$(pick_port)
        fi
        case $PICKED in *" $val "*) ;; *) PICKED="$PICKED$val " ;; esac
        printf -v "$name" '%s' "$val"
    done
    [ "$(printf '%s\n' "$IMAP_PORT" "$IMAPS_PORT" "$SMTP_PORT" "$SMTPS_PORT" | sort -u | wc -l)" -eq 4 ] ||
        die "IMAP_PORT, IMAPS_PORT, SMTP_PORT and SMTPS_PORT must differ"

    mkdir -p "$RUN" "$LOGS" "$MAIL_ROOT" "$DIR/dovecot-state" "$PF_QUEUE" "$PF_DATA"
    chown dovecot:dovecot "$MAIL_ROOT"
    chmod 0755 "$RUN" "$LOGS"
    # Postfix's postlogd (user postfix) appends to the log file.
    touch "$LOGS/postfix.log" "$LOGS/dovecot.log"
    chown postfix "$LOGS/postfix.log"
    # Per-user passwd-files: readable by Dovecot's auth process (user
    # dovecot) and the policy service (user nobody).
    mkdir -p "$USERS"
    chmod 0755 "$USERS"
    chown postfix:postfix "$PF_DATA"

    gen_tls
    gen_dovecot_conf
    gen_postfix_conf
    gen_policy
    rm -f "$ENV_FILE"

    # 9>&-: the daemons must not inherit (and so hold) DIR's lock.
    dovecot -c "$DOVECOT_CONF" >"$LOGS/dovecot-start.log" 2>&1 9>&- ||
        fail_up "dovecot failed to start (config: $DOVECOT_CONF)"
    # `postfix start` runs its own consistency checks and creates the queue
    # directories with the right owners.
    if ! postfix -c "$PF_CONF" start >"$LOGS/postfix-start.log" 2>&1 9>&-; then
        # Before its logger runs, the postfix command reports errors only to
        # syslog or to a terminal: re-run its checks on a pseudo-terminal
        # (util-linux `script`) to show why.
        if command -v script >/dev/null; then
            script -qec "postfix -c '$PF_CONF' check" /dev/null >>"$LOGS/postfix-start.log" 2>&1 </dev/null || true
        fi
        fail_up "postfix failed to start (config: $PF_CONF/main.cf)"
    fi

    wait_greeting "$IMAP_PORT" "* OK" || fail_up "IMAP on 127.0.0.1:$IMAP_PORT did not answer"
    wait_greeting "$SMTP_PORT" "220" || fail_up "SMTP on 127.0.0.1:$SMTP_PORT did not answer"
    wait_tls "$IMAPS_PORT" || fail_up "IMAPS on 127.0.0.1:$IMAPS_PORT did not complete a verified TLS handshake"
    wait_tls "$SMTPS_PORT" || fail_up "SMTPS on 127.0.0.1:$SMTPS_PORT did not complete a verified TLS handshake"
    [ -S "$LMTP_SOCKET" ] || fail_up "LMTP socket $LMTP_SOCKET missing"
    [ -S "$AUTH_SOCKET" ] || fail_up "Dovecot auth socket $AUTH_SOCKET missing"
    pid_of_dovecot >/dev/null || fail_up "dovecot is not running"
    pid_of_postfix >/dev/null || fail_up "postfix is not running"

    write_env
    printf '%s\n' "$STACK_VERSION" >"$VERSION_FILE"
    cat "$ENV_FILE"
}

cmd_down() {
    require_root
    set_paths "$1"
    [ -d "$DIR" ] || { note "$DIR does not exist; nothing to stop"; return 0; }
    lock_dir
    stop_servers
    note "stopped mail stack in $DIR (DIR kept)"
}

# The fault tests' switches: one server down or restarted while the other keeps running, on the same
# ports, so that a client configured for the stack just sees the server go away and come back.
wait_port_free() {
    local port=$1 i
    for ((i = 0; i < 100; i++)); do
        port_busy "$port" || return 0
        sleep 0.05
    done
    return 1
}

stop_one() {
    local pid=$1 what=$2
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 10; then
        note "$what master $pid did not stop within 10s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || true
    fi
}

cmd_restart_imap() {
    require_root
    set_paths "$1"
    [ -s "$ENV_FILE" ] || [ -s "$CY_ENV" ] || die "no env file in $DIR (not up?)"
    lock_dir
    local pid children="" restarted=0
    if [ -s "$ENV_FILE" ] && pid=$(pid_of_dovecot); then
        # Dovecot's master leaves running IMAP sessions alive when it stops; a restart that a client must
        # notice ends them too, like a crash or a reboot of the server would.
        children=$(pgrep -P "$pid" 2>/dev/null || true)
        stop_one "$pid" dovecot
        [ -z "$children" ] || kill -KILL $children 2>/dev/null || true
        rm -f "$DOVECOT_PID"
        IMAP_PORT=$(read_env_key IMAP_PORT)
        IMAPS_PORT=$(read_env_key IMAPS_PORT)
        wait_port_free "$IMAP_PORT" && wait_port_free "$IMAPS_PORT" ||
            die "IMAP ports $IMAP_PORT/$IMAPS_PORT still busy after stopping dovecot"
        dovecot -c "$DOVECOT_CONF" >"$LOGS/dovecot-start.log" 2>&1 9>&- ||
            die "dovecot failed to start again (config: $DOVECOT_CONF); see $LOGS/dovecot-start.log"
        wait_greeting "$IMAP_PORT" "* OK" || die "IMAP on 127.0.0.1:$IMAP_PORT did not answer after the restart"
        wait_tls "$IMAPS_PORT" || die "IMAPS on 127.0.0.1:$IMAPS_PORT did not answer after the restart"
        note "dovecot restarted in $DIR (IMAP $IMAP_PORT, IMAPS $IMAPS_PORT)"
        restarted=1
    fi
    if pid=$(pid_of_cyrus); then
        # Cyrus's master ends its children (and so every session) itself on SIGTERM.
        stop_one "$pid" cyrus
        rm -f "$CY_PID"
        cyrus_start_locked
        note "cyrus restarted in $DIR (IMAP $(read_env_key CYRUS_IMAP_PORT "$CY_ENV"))"
        restarted=1
    fi
    [ "$restarted" = 1 ] || die "no IMAP server is running in $DIR"
}

cmd_stop_smtp() {
    require_root
    set_paths "$1"
    [ -s "$ENV_FILE" ] || die "no env file in $DIR (not up?)"
    lock_dir
    local pid
    if pid=$(pid_of_postfix); then stop_one "$pid" postfix; fi
    wait_port_free "$(read_env_key SMTP_PORT)" && wait_port_free "$(read_env_key SMTPS_PORT)" ||
        die "SMTP ports still busy after stopping postfix"
    note "postfix stopped in $DIR (dovecot still running)"
}

cmd_start_smtp() {
    require_root
    set_paths "$1"
    [ -s "$ENV_FILE" ] || die "no env file in $DIR (not up?)"
    lock_dir
    if pid_of_postfix >/dev/null; then
        note "postfix already running in $DIR"
        return 0
    fi
    postfix -c "$PF_CONF" start >"$LOGS/postfix-start.log" 2>&1 9>&- ||
        die "postfix failed to start again (config: $PF_CONF/main.cf); see $LOGS/postfix-start.log"
    wait_greeting "$(read_env_key SMTP_PORT)" "220" || die "SMTP did not answer after start-smtp"
    note "postfix started in $DIR"
}

cmd_status() {
    set_paths "$1"
    local up=0 total=2 pid
    if pid=$(pid_of_dovecot); then
        up=$((up + 1)); echo "dovecot: running (pid $pid)"
    else
        echo "dovecot: stopped"
    fi
    if pid=$(pid_of_postfix); then
        up=$((up + 1)); echo "postfix: running (pid $pid)"
    else
        echo "postfix: stopped"
    fi
    if [ -s "$CY_ENV" ]; then
        total=$((total + 1))
        if pid=$(pid_of_cyrus); then
            up=$((up + 1)); echo "cyrus: running (pid $pid)"
        else
            echo "cyrus: stopped"
        fi
    fi
    if [ -s "$ENV_FILE" ]; then
        local name port
        for name in IMAP_PORT IMAPS_PORT SMTP_PORT SMTPS_PORT; do
            port=$(read_env_key "$name")
            if [ -n "$port" ] && port_busy "$port"; then
                echo "$name=$port: answering"
            else
                echo "$name=${port:-?}: not answering"
            fi
        done
        echo "users: $(find "$USERS" -maxdepth 1 -type f ! -name '.*' 2>/dev/null | wc -l)"
    fi
    if [ "$up" -eq "$total" ]; then return 0; elif [ "$up" -gt 0 ]; then return 1; else return 3; fi
}

cmd_add_user() {
    set_paths "$1"
    local name=$2 password=$3 extra="" flag
    shift 3
    for flag in "$@"; do
        case $flag in
            --inbox-prefix) extra="$extra userdb_namespace/inbox/prefix=INBOX." ;;
            # passwd-file extra fields are split at spaces: one capability is all a field can hold.
            --imap4rev1-only) extra="$extra userdb_imap_capability=IMAP4rev1" ;;
            *) die "add-user: unknown option $flag (--inbox-prefix, --imap4rev1-only)" ;;
        esac
    done
    extra=${extra# }
    [ -f "$DOVECOT_CONF" ] || die "$DIR is not a mail stack directory (no dovecot.conf); run: $PROG up $DIR"
    name=$(printf '%s' "$name" | tr 'A-Z' 'a-z')
    # Dovecot's default auth_username_chars allow only these; '+' separates
    # the detail (a+x@d is delivered to a@d) so it cannot be part of a name.
    [[ $name =~ ^[a-z0-9._-]+@[a-z0-9.-]+$ ]] && [[ $name != .* ]] ||
        die "bad address '$2': expected local@domain made of ASCII letters, digits, '.', '_', '-'"
    [ -n "$password" ] || die "empty password"
    case $password in *:* | *$'\n'* | *$'\r'*)
        die "password must not contain ':' or line breaks (passwd-file format)" ;;
    esac
    [ "$(id -u)" -eq 0 ] || die "must run as root (the mailbox belongs to user dovecot)"
    mkdir -p "$USERS"
    chmod 0755 "$USERS"
    # Create the Maildir first, so the mailbox exists (empty) the moment the
    # user does.
    local home="$MAIL_ROOT/$name"
    mkdir -p "$home/Maildir/cur" "$home/Maildir/new" "$home/Maildir/tmp"
    chown -R dovecot:dovecot "$home"
    chmod -R u+rwX,go-rwx "$home"
    # Write the user's passwd-file atomically (rename), so Dovecot and the
    # policy service never see a half-written line. Fields: user, password,
    # uid, gid, gecos, home, shell. The home field must be there: a line with
    # no userdb field at all makes the passwd-file userdb fail with "missing
    # userdb info" (default_fields do not count); uid/gid come from
    # default_fields.
    local file="$USERS/$name" tmp
    tmp=$(mktemp "$USERS/.new.XXXXXX")
    printf '%s:{PLAIN}%s::::%s::%s\n' "$name" "$password" "$home" "$extra" >"$tmp"
    chmod 0644 "$tmp"
    if [ -e "$file" ]; then
        # Password change: Dovecot notices a changed passwd-file by its mtime
        # (seconds) or size, checked at most once a second; make the mtime
        # differ, and wait that second out so the next login sees it.
        local old
        old=$(stat -c %Y "$file")
        touch -d "@$((old + 1))" "$tmp"
        mv -f "$tmp" "$file"
        sleep 1.1
        note "user $name: password changed"
    else
        mv -f "$tmp" "$file"
        note "user $name ready"
    fi
}

cmd_env() {
    set_paths "$1"
    [ -s "$ENV_FILE" ] || die "no env file in $DIR (not up?)"
    cat "$ENV_FILE"
}


# ------------------------------------------------------------------ cyrus ----

gen_cyrus_conf() {
    local imapd idled common
    imapd=$(cyrus_prog imapd)
    idled=$(cyrus_prog idled)
    common=$(cat <<EOF
# Generated by scripts/mailstack.sh — private Cyrus test instance, do not edit.
configdirectory: $CY_CONFIG
defaultpartition: default
partition-default: $CY/spool
# Debian's default layout: personal namespace "INBOX." with "." as separator.
altnamespace: no
unixhierarchysep: no
# Logins are full addresses (as on the Dovecot beside it).
virtdomains: userid
admins: $CY_ADMIN
allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: $CY_SASLDB
sasl_mech_list: PLAIN LOGIN
tls_server_cert: $CY/tls/server.pem
tls_server_key: $CY/tls/server.key
lmtpsocket: $CY_LMTP
idlesocket: $CY_CONFIG/socket/idle
notifysocket: $CY_CONFIG/socket/notify
lmtp_downcase_rcpt: yes
# Mail is delivered as sent: no suppression of a Message-ID seen before.
duplicatesuppression: 0
# A deleted folder is gone at once (a new one of the same name gets a new UIDVALIDITY).
delete_mode: immediate
syslog_prefix: cyrus-mailstack
EOF
)
    printf '%s\n' "$common" >"$CY_CONF"
    printf '%s\n# This port leaves MOVE out of CAPABILITY (a client must COPY, STORE \\Deleted, EXPUNGE).\nsuppress_capabilities: MOVE\n' \
        "$common" >"$CY_NOMOVE_CONF"
    cat >"$CY_MASTER_CONF" <<EOF
# Generated by scripts/mailstack.sh — private Cyrus test instance, do not edit.
# Started as: master -C $CY_CONF -M $CY_MASTER_CONF -p $CY_PID
START {
  recover cmd="ctl_cyrusdb -C $CY_CONF -r"
}
SERVICES {
  imap cmd="$imapd -C $CY_CONF" listen="127.0.0.1:$CYRUS_IMAP_PORT" prefork=1
  imaps cmd="$imapd -s -C $CY_CONF" listen="127.0.0.1:$CYRUS_IMAPS_PORT" prefork=0
  imapnomove cmd="$imapd -C $CY_NOMOVE_CONF" listen="127.0.0.1:$CYRUS_NOMOVE_PORT" prefork=0
  lmtpunix cmd="lmtpd -C $CY_CONF" listen="$CY_LMTP" prefork=0
}
EVENTS {
  checkpoint cmd="ctl_cyrusdb -C $CY_CONF -c" period=30
}
DAEMON {
  idled cmd="$idled -C $CY_CONF"
}
EOF
}

# Start Cyrus's master (DIR's lock held, config written, ports in CY_ENV) and wait until it serves.
cyrus_start_locked() {
    CYRUS_IMAP_PORT=$(read_env_key CYRUS_IMAP_PORT "$CY_ENV")
    CYRUS_IMAPS_PORT=$(read_env_key CYRUS_IMAPS_PORT "$CY_ENV")
    CYRUS_NOMOVE_PORT=$(read_env_key CYRUS_NOMOVE_PORT "$CY_ENV")
    local port
    for port in "$CYRUS_IMAP_PORT" "$CYRUS_IMAPS_PORT" "$CYRUS_NOMOVE_PORT"; do
        wait_port_free "$port" || die "port $port is busy: cannot start cyrus"
    done
    # Its own session (setsid): a Ctrl-C of the test run does not reach it; `hold` stops it.
    # 9>&-: the daemon must not hold DIR's lock.
    setsid -f "$CYRUS_LIBEXEC/master" -C "$CY_CONF" -M "$CY_MASTER_CONF" -p "$CY_PID" \
        -L "$LOGS/cyrus.log" </dev/null >>"$LOGS/cyrus.log" 2>&1 9>&-
    wait_greeting "$CYRUS_IMAP_PORT" "* OK" || { show_cyrus_log; die "Cyrus IMAP on 127.0.0.1:$CYRUS_IMAP_PORT did not answer"; }
    wait_greeting "$CYRUS_NOMOVE_PORT" "* OK" || { show_cyrus_log; die "Cyrus IMAP on 127.0.0.1:$CYRUS_NOMOVE_PORT did not answer"; }
    wait_tls "$CYRUS_IMAPS_PORT" || { show_cyrus_log; die "Cyrus IMAPS on 127.0.0.1:$CYRUS_IMAPS_PORT did not complete a verified TLS handshake"; }
    local i
    for ((i = 0; i < 100; i++)); do
        [ -S "$CY_LMTP" ] && [ -S "$CY_CONFIG/socket/idle" ] && break
        sleep 0.05
    done
    [ -S "$CY_LMTP" ] || die "Cyrus LMTP socket $CY_LMTP missing"
    [ -S "$CY_CONFIG/socket/idle" ] || die "Cyrus idled socket missing (IDLE would not be notified)"
    pid_of_cyrus >/dev/null || die "cyrus master is not running (pid file $CY_PID)"
}

show_cyrus_log() {
    [ -s "$LOGS/cyrus.log" ] && { printf -- '--- last lines of %s\n' "$LOGS/cyrus.log" >&2; tail -n 15 "$LOGS/cyrus.log" >&2; }
    return 0
}

cmd_cyrus_up() {
    require_root
    require_cyrus
    set_paths "$1"
    lock_dir
    check_dir_usable cyrus
    local pid
    if pid=$(pid_of_cyrus) && [ -s "$CY_ENV" ] && [ "$(cat "$CY/.version" 2>/dev/null)" = "$STACK_VERSION" ]; then
        note "cyrus already up in $DIR (master pid $pid); reusing it"
        cat "$CY_ENV"
        return 0
    fi
    if pid=$(pid_of_cyrus); then stop_one "$pid" cyrus; fi
    rm -f "$CY_PID" "$CY/.version"
    # Ports: the ones this DIR's Cyrus used before, else free ones (never Dovecot's or Postfix's).
    local name val
    for name in IMAP_PORT IMAPS_PORT SMTP_PORT SMTPS_PORT; do
        val=$(read_env_key "$name")
        [ -z "$val" ] || PICKED="$PICKED$val "
    done
    for name in CYRUS_IMAP_PORT CYRUS_IMAPS_PORT CYRUS_NOMOVE_PORT; do
        val=$(read_env_key "$name" "$CY_ENV")
        if [ -n "$val" ] && { ! valid_port "$val" || port_busy "$val"; }; then val=""; fi
        [ -n "$val" ] || val=$(pick_port)
        case $PICKED in *" $val "*) ;; *) PICKED="$PICKED$val " ;; esac
        printf -v "$name" '%s' "$val"
    done
    mkdir -p "$CY_CONFIG/socket" "$CY/spool" "$CY/run" "$CY/tls" "$CY_USERS" "$LOGS"
    chmod 0755 "$CY" "$CY_USERS" "$LOGS"
    gen_tls
    install -m 0644 "$TLS/server.pem" "$CY/tls/server.pem"
    install -m 0600 "$TLS/server.key" "$CY/tls/server.key"
    # The administrator that creates mailboxes: a fresh password each start.
    openssl rand -hex 16 >"$CY_ADMIN_PASS"
    chmod 0600 "$CY_ADMIN_PASS"
    tr -d '\n' <"$CY_ADMIN_PASS" | saslpasswd2 -p -c -f "$CY_SASLDB" "$CY_ADMIN" ||
        die "saslpasswd2 could not write $CY_SASLDB"
    gen_cyrus_conf
    chown -R cyrus:mail "$CY_CONFIG" "$CY/spool" "$CY/run" "$CY/tls" "$CY_SASLDB"
    chown cyrus:mail "$CY_CONF" "$CY_NOMOVE_CONF" "$CY_MASTER_CONF"
    touch "$LOGS/cyrus.log"
    local tmp="$CY_ENV.tmp.$$"
    cat >"$tmp" <<EOF
CYRUS_IMAP_PORT=$CYRUS_IMAP_PORT
CYRUS_IMAPS_PORT=$CYRUS_IMAPS_PORT
CYRUS_NOMOVE_PORT=$CYRUS_NOMOVE_PORT
CYRUS_LMTP_SOCKET=$CY_LMTP
CA_PEM=$TLS/ca.pem
EOF
    mv -f "$tmp" "$CY_ENV"
    cyrus_start_locked
    printf '%s\n' "$STACK_VERSION" >"$CY/.version"
    cat "$CY_ENV"
}

# imap_admin PORT COMMAND...: log in as Cyrus's admin and run each IMAP command; fails on a NO/BAD
# (except "already exists"), naming the server's answer.
imap_admin() {
    local port=$1 n=0 line cmd
    shift
    exec 4<>"/dev/tcp/127.0.0.1/$port" || die "cannot connect to Cyrus on 127.0.0.1:$port"
    IFS= read -r -t 10 line <&4 || die "Cyrus sent no greeting"
    for cmd in "LOGIN $CY_ADMIN $(cat "$CY_ADMIN_PASS")" "$@" LOGOUT; do
        n=$((n + 1))
        printf 'a%d %s\r\n' "$n" "$cmd" >&4
        while IFS= read -r -t 10 line <&4; do
            line=${line%$'\r'}
            case $line in
                "a$n OK"*) break ;;
                "a$n "*)
                    case $line in *"already exists"* | *"Mailbox already"*) break ;; esac
                    exec 4<&-
                    die "Cyrus answered '${cmd%% *} …' with: $line"
                    ;;
            esac
        done
    done
    exec 4<&-
}

cmd_cyrus_add_user() {
    require_root
    set_paths "$1"
    local name=$2 password=$3
    [ -s "$CY_ENV" ] || die "no Cyrus in $DIR; run: $PROG cyrus-up $DIR"
    name=$(printf '%s' "$name" | tr 'A-Z' 'a-z')
    # With unixhierarchysep: no, '.' separates folders: the local part may not hold one.
    [[ $name =~ ^[a-z0-9_-]+@[a-z0-9.-]+$ ]] ||
        die "bad address '$2': expected local@domain, the local part of ASCII letters, digits, '_', '-' (no '.': Cyrus's hierarchy separator)"
    [ -n "$password" ] || die "empty password"
    lock_dir
    printf '%s' "$password" | saslpasswd2 -p -c -f "$CY_SASLDB" "$name" ||
        die "saslpasswd2 could not add $name"
    chown cyrus:mail "$CY_SASLDB"
    imap_admin "$(read_env_key CYRUS_IMAP_PORT "$CY_ENV")" "CREATE \"user.${name%@*}@${name#*@}\""
    touch "$CY_USERS/$name"
    chmod 0644 "$CY_USERS/$name"
    note "cyrus user $name ready"
}

# ------------------------------------------------------------------- hold ----

# start_time PID: the process's start time (clock ticks since boot), to tell it from a later process
# that got the same pid.
start_time() {
    sed -n 's/^[0-9]* (.*) [A-Za-z] \(.*\)$/\1/p' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f19
}

# prune_holders: forget holders that are gone (killed with SIGKILL, say); true if one is still alive.
prune_holders() {
    local f pid started any=1
    for f in "$HOLDERS"/*; do
        [ -e "$f" ] || continue
        pid=${f##*/}
        started=$(cat "$f" 2>/dev/null || true)
        if alive "$pid" && [ "$(start_time "$pid")" = "$started" ]; then
            any=0
        else
            rm -f "$f"
        fi
    done
    return $any
}

cmd_hold() {
    require_root
    set_paths "$1"
    local grace=${MAILSTACK_GRACE:-0} me=$$
    [[ $grace =~ ^[0-9]+$ ]] || die "MAILSTACK_GRACE=$grace is not a number of seconds"
    mkdir -p "$HOLDERS"
    (
        lock_dir
        prune_holders || true
        start_time "$me" >"$HOLDERS/$me"
    )
    # An interrupted test run (Ctrl-C reaches the whole process group, a closed terminal sends SIGHUP)
    # is when this is needed most: keep going. SIGTERM: clean up now.
    trap '' INT HUP
    trap 'release_hold; exit 0' TERM
    echo "holding $DIR"
    # Block until the holding process's end closes our stdin (nothing is ever written to it).
    while IFS= read -r _; do :; done
    release_hold
}

release_hold() {
    rm -f "$HOLDERS/$$"
    [ "${MAILSTACK_GRACE:-0}" = 0 ] || sleep "$MAILSTACK_GRACE"
    # A private stack's DIR may be gone already (its owner stopped and removed it): nothing to do.
    [ -d "$DIR" ] || return 0
    lock_dir
    if prune_holders; then
        return 0
    fi
    stop_servers
    note "last holder gone: stopped the servers in $DIR"
}

# ------------------------------------------------------------------ main ----

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
    up) [ $# -eq 1 ] || usage; cmd_up "$1" ;;
    down) [ $# -eq 1 ] || usage; cmd_down "$1" ;;
    status) [ $# -eq 1 ] || usage; cmd_status "$1" ;;
    env) [ $# -eq 1 ] || usage; cmd_env "$1" ;;
    add-user) [ $# -ge 3 ] || usage; cmd_add_user "$@" ;;
    cyrus-up) [ $# -eq 1 ] || usage; cmd_cyrus_up "$1" ;;
    cyrus-add-user) [ $# -eq 3 ] || usage; cmd_cyrus_add_user "$1" "$2" "$3" ;;
    hold) [ $# -eq 1 ] || usage; cmd_hold "$1" ;;
    restart-imap) [ $# -eq 1 ] || usage; cmd_restart_imap "$1" ;;
    stop-smtp) [ $# -eq 1 ] || usage; cmd_stop_smtp "$1" ;;
    start-smtp) [ $# -eq 1 ] || usage; cmd_start_smtp "$1" ;;
    -h | --help | help) usage ;;
    *) usage ;;
esac
