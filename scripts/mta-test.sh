#!/usr/bin/env bash
# The README's MTA instructions on real MTAs: runs tests/mta.rs (Postfix 3.7 and OpenSMTPD 6.8, each in a
# Debian 12 root made by scripts/debian-root.sh, the README's lines copied in from between its
# `<!-- mta:… -->` marks; plus the `ingest` client's tests that need no server).
#
#   sudo scripts/mta-test.sh            # all of tests/mta.rs
#   sudo scripts/mta-test.sh postfix    # the tests whose name contains "postfix" (cargo test filter)
#
# Needs root (chroot, the MTAs' masters) and debootstrap (scripts/install-test-deps.sh installs it); the
# first run builds the roots' tarballs (about a minute each, cached under target/debian-roots/). The
# servers listen on 127.0.0.1:47025 (Postfix) and 127.0.0.1:47125 (OpenSMTPD) only.
#
# The tests stop what they start (a guard each, also when a test fails). Should this run be interrupted
# or killed, the trap below stops every process still running inside the tests' roots (by pid: those whose
# root directory is under target/tmp/mta) and removes the roots.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "mta-test.sh: needs root (chroot, Postfix's master): sudo $0" >&2; exit 1; }
if ! command -v debootstrap >/dev/null || [ ! -x /usr/sbin/postfix ] || [ ! -x /usr/sbin/dovecot ]; then
    scripts/install-test-deps.sh
fi

roots="${CARGO_TARGET_DIR:-$PWD/target}/tmp/mta"

cleanup() {
    local pass pid root left
    for pass in 1 2 3 4 5 6 7 8 9 10; do
        left=0
        for pid in $(ls /proc | grep -E '^[0-9]+$'); do
            root=$(readlink "/proc/$pid/root" 2>/dev/null) || continue
            case $root in
                "$roots"/*) left=1; kill -KILL "$pid" 2>/dev/null || true ;;
            esac
        done
        [ "$left" = 0 ] && break
        sleep 0.2
    done
    for root in "$roots"/*/; do
        [ -d "$root" ] && rm -rf --one-file-system "$root"
    done
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export POSTDESK_TEST_REQUIRE_SERVERS=1
cargo test --locked --test mta "$@"
