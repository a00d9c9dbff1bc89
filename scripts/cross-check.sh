#!/usr/bin/env bash
# Lints water-pt for the platforms Tor Browser ships on besides Linux, so a
# port regression fails CI the day it is made: `cargo clippy -D warnings`
# (which type-checks everything `cargo check` does) for Windows, macOS (Intel
# and Apple silicon) and Android, and for Linux with musl (the static release
# build: a type that is an integer with glibc can be a pointer there).
#
# No target is linked here (there is no macOS SDK or Android NDK on a Debian
# machine): only wasmtime's build script compiles C, a 50-line helper, and
# Debian's clang compiles it for the target, freestanding, against its own headers plus
# a one-line stand-in for <stdlib.h> (the helper only wants NULL). The object
# is never linked by a check. Windows is built and tested for real by
# scripts/windows-test.sh.
#
# Usage: scripts/cross-check.sh [TARGET...]   (default: all five)
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-pc-windows-gnu aarch64-apple-darwin x86_64-apple-darwin aarch64-linux-android x86_64-unknown-linux-musl)

installed=$(rustup target list --installed)
for t in "${targets[@]}"; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done

# <stdlib.h> for targets whose C library headers are not on this machine.
stub_include=$(readlink -f target)/cross-check-include
mkdir -p "$stub_include"
printf '#include <stddef.h>\n' >"$stub_include/stdlib.h"

# One cargo run for every target: build scripts and proc macros are built once
# for the host and the targets are checked side by side.
target_args=()
for t in "${targets[@]}"; do
  var=${t//-/_}
  case "$t" in
    *-apple-darwin|*-linux-android)
      command -v clang >/dev/null || { echo "cross-check: clang not found (apt-get install clang)" >&2; exit 2; }
      export "CC_$var=clang" "CFLAGS_$var=--target=$t -ffreestanding -isystem $stub_include"
      ;;
    *-linux-musl)
      command -v musl-gcc >/dev/null || { echo "cross-check: musl-gcc not found (apt-get install musl-tools)" >&2; exit 2; }
      export "CC_$var=musl-gcc"
      ;;
  esac
  target_args+=(--target "$t")
done
# The library and the water-pt binary; pt-bench reads Linux's /proc and is
# only built for Linux (by CI's own clippy run).
echo "cross-check: ${targets[*]}" >&2
cargo clippy --quiet "${target_args[@]}" --lib --bin water-pt -- -D warnings
echo "cross-check: OK (${targets[*]})" >&2
