#!/usr/bin/env bash
# Build the Debian package: target/debian/postdesk_<version>-1_<arch>.deb (under $CARGO_TARGET_DIR/debian/
# when that is set); the last line on stdout is its path.
#
# It holds /usr/bin/postdesk, the hardened unit /usr/lib/systemd/system/postdesk.service and its tmpfiles.d
# entry (/var/spool/postdesk), the package's runnable starting config (debian/config.toml) as the conffile
# /etc/postdesk/config.toml, the shipped templates under /usr/share/postdesk/templates and the README and
# config.example.toml under /usr/share/doc/postdesk (see [package.metadata.deb] in Cargo.toml;
# debian/postinst creates the `postdesk` user and /etc/postdesk/credentials, debian/postrm says what purge
# removes). Install it with `apt install ./target/debian/postdesk_*.deb`.
#
# Installs cargo-deb first if it is missing (scripts/install-test-deps.sh installs the same version), then
# makes a release build (several minutes on a small machine). Extra arguments go to `cargo deb` (e.g.
# --no-build after a `cargo build --release`, --deb-version X, --fast).
set -euo pipefail
cd "$(dirname "$0")/.."

# The version the project is tested with; `cargo deb` of another version may package differently.
CARGO_DEB_VERSION=3.8.0

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: installing cargo-deb $CARGO_DEB_VERSION (cargo install cargo-deb --locked)" >&2
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

# --strip: the release profile keeps line tables (debug = 1) for profiling; the package needs none.
# cargo deb prints the path of the package it wrote (last line): that, not a guess at target/ (issue 16:
# with CARGO_TARGET_DIR set the package is elsewhere).
out=$(cargo deb --locked --strip "$@")
deb=$(printf '%s\n' "$out" | grep '\.deb$' | tail -1)
[ -n "$deb" ] && [ -f "$deb" ] || { printf '%s\n' "$out" >&2; echo "build-deb: cargo deb wrote no .deb" >&2; exit 1; }
echo "build-deb: $deb" >&2
if command -v dpkg-deb >/dev/null; then
    dpkg-deb --info "$deb" | sed -n '/Package:/,$p' >&2
    dpkg-deb --contents "$deb" >&2
fi
echo "$deb"
