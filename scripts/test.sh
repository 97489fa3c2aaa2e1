#!/usr/bin/env bash
# The whole test suite, set-up included, on a fresh Debian 12 machine or a developer's:
#   1. installs the real mail servers the integration tests start (Dovecot, Postfix) and systemd-analyze
#      (tests/systemd.rs checks the unit file with it) when they are not installed yet (via
#      scripts/install-test-deps.sh, which needs root);
#   2. runs every test: unit tests of the pure core, golden fixtures, the CLI, and the integration tests
#      against the real mail stack (scripts/mailstack.sh, started by the tests on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."

need_deps=0
for bin in /usr/sbin/dovecot /usr/sbin/postfix /usr/bin/openssl /usr/bin/systemd-analyze; do
    [ -x "$bin" ] || need_deps=1
done
if [ "$need_deps" = 1 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        scripts/install-test-deps.sh
    else
        echo "test.sh: the mail servers or systemd-analyze are missing; run: sudo scripts/install-test-deps.sh" >&2
        exit 1
    fi
fi

cargo test --locked "$@"
