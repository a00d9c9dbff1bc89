#!/usr/bin/env bash
# Installs shadowsocks-rust's `ssserver` and `sslocal`, the real peers that
# tests/shadowsocks.rs checks the shadowsocks WATM against.
#
#   scripts/install-shadowsocks.sh         install unless already there
#   scripts/install-shadowsocks.sh --dir   print the install directory
#
# The binaries land in $WATER_PT_SS_DIR/bin (default
# $HOME/.cache/water-pt/shadowsocks-rust/bin), where the tests look for them
# (or set SSSERVER / SSLOCAL to other binaries). The install is skipped when
# both binaries exist and report the pinned version.
#
# Only the features the tests need are built, which keeps the compile to a
# few minutes: `local` (sslocal with its SOCKS5 front end, always included),
# `server` (ssserver), `aead-cipher` (the SIP004 AEAD methods) and
# `multi-threaded`. No DNS resolver, logging framework, HTTP/TLS front ends
# or tun device.
set -euo pipefail

VERSION=1.25.0
FEATURES="local,server,aead-cipher,multi-threaded"
DIR="${WATER_PT_SS_DIR:-$HOME/.cache/water-pt/shadowsocks-rust}"

case "${1:-}" in
  "") ;;
  --dir)
    echo "$DIR"
    exit 0
    ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: $0 [--dir]" >&2
    exit 2
    ;;
esac

note() { echo "install-shadowsocks: $*" >&2; }

installed() {
  local bin
  for bin in ssserver sslocal; do
    [[ -x "$DIR/bin/$bin" ]] || return 1
    "$DIR/bin/$bin" --version 2>/dev/null | grep -q "$VERSION" || return 1
  done
}

if installed; then
  note "shadowsocks-rust $VERSION already in $DIR/bin"
  exit 0
fi

note "building shadowsocks-rust $VERSION ($FEATURES) into $DIR"
start=$SECONDS
# --locked: the crate's own Cargo.lock, so the build does not drift with new
# releases of its dependencies. A private target dir keeps this build from
# contending with the project's.
cargo install shadowsocks-rust \
  --locked \
  --version "=$VERSION" \
  --no-default-features \
  --features "$FEATURES" \
  --root "$DIR" \
  --target-dir "$DIR/build" \
  --bin ssserver --bin sslocal
rm -rf "$DIR/build"
note "done in $((SECONDS - start)) s: $DIR/bin/ssserver, $DIR/bin/sslocal"
