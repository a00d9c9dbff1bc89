#!/usr/bin/env bash
# Installs what building and testing water-pt needs on a fresh Debian machine
# with a Rust toolchain: the wasm target (to check the committed modules),
# the Debian packages the end-to-end tests run for real (tor, tinyproxy,
# haproxy and iproute2 for the multi-instance bridge, obfs4proxy and socat
# for the benchmark), the cross toolchains of the port checks and the release (clang,
# musl-tools, mingw-w64, wine to run the Windows build, apparmor to check the
# package's profile snippet), and shadowsocks-rust (the Shadowsocks module's
# interop peer, built from crates.io once and cached).
# Safe to run again; does nothing that is already done.
set -euo pipefail

need_pkgs=()
for pair in tor:tor tinyproxy:tinyproxy haproxy:haproxy ss:iproute2 prlimit:util-linux obfs4proxy:obfs4proxy socat:socat python3:python3 \
  clang:clang musl-gcc:musl-tools x86_64-w64-mingw32-gcc:gcc-mingw-w64-x86-64 wine:wine apparmor_parser:apparmor; do
  bin=${pair%%:*}
  pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || [ -x "/usr/bin/$bin" ] || need_pkgs+=("$pkg")
done
# wine's 64-bit loader (the Windows tests run a 64-bit .exe) has no command of its own.
dpkg-query -W -f '${Status}' wine64 2>/dev/null | grep -q "ok installed" || need_pkgs+=(wine64)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "setup: please install: ${need_pkgs[*]}" >&2
    exit 1
  fi
fi

if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-wasip1; then
  rustup target add wasm32-wasip1 || echo "setup: wasm32-wasip1 unavailable; the committed modules will be used" >&2
fi

bash "$(dirname "$0")/install-shadowsocks.sh"
