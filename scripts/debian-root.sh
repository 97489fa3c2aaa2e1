#!/usr/bin/env bash
# A fresh Debian 12 root file system in DEST, for tests that need a second machine's worth of system:
# a real systemd as PID 1 (systemd-nspawn, tests/live_systemd.rs) or a package that conflicts with the
# host's (OpenSMTPD replaces Postfix, so it runs in a root of its own under chroot).
#
#   scripts/debian-root.sh DEST [PACKAGE...]
#
# The first call debootstraps bookworm with the packages (about a minute) from the mirror apt is already
# configured with, and keeps a tarball under target/debian-roots/ named after the package list; later calls
# only unpack it (a few seconds). DEST is emptied first. Needs root and debootstrap
# (scripts/install-test-deps.sh installs it).
set -euo pipefail

log() { printf 'debian-root: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$#" -ge 1 ] || die "usage: $0 DEST [PACKAGE...]"
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap and chroot need it)"
command -v debootstrap >/dev/null || die "debootstrap not found: run scripts/install-test-deps.sh"

dest=$1
shift
here=$(cd "$(dirname "$0")/.." && pwd)
cache_dir=${CARGO_TARGET_DIR:-$here/target}/debian-roots
mkdir -p "$cache_dir"

# The packages every root gets: enough to boot systemd and to install a .deb with apt.
base=(systemd dbus systemd-sysv adduser procps ca-certificates)
packages=$(printf '%s\n' "${base[@]}" "$@" | sort -u | paste -sd, -)
key=$(printf '%s' "$packages" | sha256sum | cut -c1-16)
tarball=$cache_dir/bookworm-$key.tar

# The mirror apt already uses (deb822 sources first, then the one-line format); the archive's default
# otherwise. Only Debian's mirror is reachable on CI machines.
mirror=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' |
    grep -v security | head -1 || true)
if [ -z "$mirror" ]; then
    mirror=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security |
        head -1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

if [ ! -s "$tarball" ]; then
    build=$(mktemp -d "$cache_dir/build.XXXXXX")
    trap 'rm -rf "$build"' EXIT
    log "debootstrap bookworm ($packages) from $mirror"
    # Services a package starts at install time must not start in the host's namespaces.
    if ! debootstrap --variant=minbase --include="$packages" bookworm "$build/root" "$mirror" \
        >"$build/debootstrap.log" 2>&1; then
        tail -30 "$build/debootstrap.log" >&2
        die "debootstrap failed (log above); check that $mirror is reachable"
    fi
    # apt inside the root uses the same mirror; no recommends, as on the host.
    printf 'deb %s bookworm main\n' "$mirror" >"$build/root/etc/apt/sources.list"
    printf 'APT::Install-Recommends "false";\n' >"$build/root/etc/apt/apt.conf.d/99norecommends"
    rm -rf "$build/root/var/cache/apt/archives/"*.deb
    tar -C "$build/root" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    log "cached $tarball"
fi

rm -rf "$dest"
mkdir -p "$dest"
tar -C "$dest" -xf "$tarball"
log "root ready in $dest"
