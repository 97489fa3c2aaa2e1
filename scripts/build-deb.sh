#!/usr/bin/env bash
# Build the Debian package: target/debian/postdesk_<version>-1_<arch>.deb
#
# It holds /usr/bin/postdesk, the hardened unit /usr/lib/systemd/system/postdesk.service, the example config as
# the conffile /etc/postdesk/config.toml, the shipped templates under /usr/share/postdesk/templates and the
# README under /usr/share/doc/postdesk (see [package.metadata.deb] in Cargo.toml; debian/postinst creates
# the `postdesk` user and /etc/postdesk/credentials). Install it with `apt install ./target/debian/postdesk_*.deb`.
#
# Installs cargo-deb first if it is missing (a release build: several minutes on a small machine).
# Extra arguments go to `cargo deb` (e.g. --no-build after a `cargo build --release`).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: installing cargo-deb (cargo install cargo-deb --locked)" >&2
    cargo install cargo-deb --locked
fi

# --strip: the release profile keeps line tables (debug = 1) for profiling; the package needs none.
cargo deb --locked --strip "$@"

deb=$(ls -t target/debian/postdesk_*.deb | head -1)
echo "build-deb: $deb" >&2
if command -v dpkg-deb >/dev/null; then
    dpkg-deb --info "$deb" | sed -n '/Package:/,$p' >&2
    dpkg-deb --contents "$deb" >&2
fi
