#!/usr/bin/env bash
# The whole test suite, set-up included, on a fresh Debian 12 machine or a developer's (as root):
#   1. installs the real mail servers the integration tests start (Dovecot, Postfix, Cyrus), systemd-analyze
#      (tests/systemd.rs checks the unit file with it), systemd-nspawn, debootstrap and cargo-deb
#      (tests/live_systemd.rs runs the package under a real systemd) when they are not installed yet (via
#      scripts/install-test-deps.sh, which needs root);
#   2. runs every test: unit tests of the pure core, golden fixtures, the CLI, and the integration tests
#      against the real mail stack (scripts/mailstack.sh, started by the tests on 127.0.0.1, and stopped by
#      `mailstack.sh hold` once the test processes are gone, however they end).
#
# Plain `cargo test` (no root, or no servers) runs every test that needs no server and prints a
# "skipped: …" line for each one it skipped. Here nothing may be skipped: POSTDESK_TEST_REQUIRE_SERVERS=1
# turns a missing server into a failing test (see tests/support/mod.rs, `require_servers`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: the integration tests start Dovecot and Postfix, which needs root: run sudo scripts/test.sh" >&2
    echo "test.sh: (plain \`cargo test\` runs every test that needs no server and lists the ones it skipped)" >&2
    exit 1
fi

need_deps=0
for bin in /usr/sbin/dovecot /usr/sbin/postfix /usr/bin/openssl /usr/bin/systemd-analyze /usr/sbin/debootstrap \
    /usr/bin/systemd-nspawn /usr/lib/cyrus/bin/master /usr/local/lib/postdesk-test/cyrus/bin/imapd; do
    [ -x "$bin" ] || need_deps=1
done
cargo deb --version >/dev/null 2>&1 || need_deps=1
if [ "$need_deps" = 1 ]; then
    scripts/install-test-deps.sh
fi

export POSTDESK_TEST_REQUIRE_SERVERS=1
cargo test --locked "$@"
