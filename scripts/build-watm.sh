#!/usr/bin/env bash
# Builds the Rust WATMs in watm/ for wasm32-wasip1 and refreshes the committed
# copies in watm/prebuilt/, or (with --check) verifies that those copies are
# exactly what the sources build to.
#
#   scripts/build-watm.sh           build, then copy into watm/prebuilt/
#   scripts/build-watm.sh --check   rebuild in a temporary target dir and fail
#                                   unless every module is byte-identical to
#                                   the committed one
#
# The prebuilt modules are committed so that the runtime's tests run on
# machines without the wasm target. For --check to mean anything the build
# must be reproducible: the same sources and toolchain give the same bytes
# wherever the tree is checked out. Absolute paths (of the checkout, of
# $CARGO_HOME where dependencies are unpacked, and of the toolchain's sysroot)
# end up in panic messages, so they are remapped to fixed names below. The
# flags are passed through CARGO_ENCODED_RUSTFLAGS, which replaces any
# RUSTFLAGS of the caller: extra flags would change the output.
#
# Byte identity also needs the same rustc. The version the committed modules
# were built with is recorded in watm/prebuilt/TOOLCHAIN; with another rustc,
# --check cannot judge and says so instead of failing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
WORKSPACE="$ROOT/watm"
PREBUILT="$WORKSPACE/prebuilt"
TARGET=wasm32-wasip1
# Cargo's library name -> committed file name.
MODULES=("plain:plain" "reverse:reverse" "config_echo:config-echo" "shadowsocks:shadowsocks" "faulty:faulty" "reference_loop:reference-loop" "plain_v0:plain-v0" "xor:xor" "xor_v0:xor-v0" "rot:rot")

CHECK=0
case "${1:-}" in
  "") ;;
  --check) CHECK=1 ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

note() { echo "build-watm: $*" >&2; }

# The wasm target comes from rustup; install it when it is missing.
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  note "installing the $TARGET target"
  if ! rustup target add "$TARGET"; then
    if [[ $CHECK == 1 ]]; then
      note "NOTICE: the $TARGET target is not available here; skipping the check of watm/prebuilt"
      exit 0
    fi
    note "cannot install the $TARGET target"
    exit 1
  fi
fi

TOOLCHAIN="$(rustc --version)"
if [[ $CHECK == 1 && -f "$PREBUILT/TOOLCHAIN" ]]; then
  RECORDED="$(cat "$PREBUILT/TOOLCHAIN")"
  if [[ "$RECORDED" != "$TOOLCHAIN" ]]; then
    note "NOTICE: watm/prebuilt was built with '$RECORDED' but this is '$TOOLCHAIN';"
    note "NOTICE: byte-identical output cannot be expected, skipping the check"
    exit 0
  fi
fi

CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
SYSROOT="$(rustc --print sysroot)"
# Most specific prefix last: rustc applies the last matching remapping, and
# CARGO_HOME or the sysroot may well lie inside another remapped directory.
FLAGS=(
  "--remap-path-prefix=$WORKSPACE=/watm"
  "--remap-path-prefix=$CARGO_HOME_DIR=/cargo"
  "--remap-path-prefix=$SYSROOT=/rustc-sysroot"
)
# WebAssembly SIMD (the fixed-width `simd128` proposal, part of the Wasm 2.0
# core spec): the Shadowsocks module's ChaCha20 computes four blocks per
# vector operation with it. Wasmtime enables SIMD by default, and the Go
# reference runtime's wazero runs it too. Relaxed SIMD is left off: its
# instructions (fused multiply-add, relaxed swizzle and lane select, ...) do
# nothing for these ciphers, and not every runtime implements it.
FLAGS+=("-Ctarget-feature=+simd128")
# 2 MiB of initial memory: the 1 MiB stack and the data, and room for a
# connection's buffers in the heap, so that the allocator does not have to
# grow the memory per connection (growing costs the host an mprotect, and
# another when the pool slot is reused). Untouched pages cost nothing.
FLAGS+=("-Clink-arg=--initial-memory=2097152")
# CARGO_ENCODED_RUSTFLAGS separates flags with 0x1f so paths may hold spaces.
CARGO_ENCODED_RUSTFLAGS="$(
  IFS=$'\x1f'
  echo "${FLAGS[*]}"
)"
export CARGO_ENCODED_RUSTFLAGS
unset RUSTFLAGS

if [[ $CHECK == 1 ]]; then
  TARGET_DIR="$(mktemp -d "${TMPDIR:-/tmp}/watm-check.XXXXXX")"
  trap 'rm -rf "$TARGET_DIR"' EXIT
else
  TARGET_DIR="$WORKSPACE/target"
fi

note "building ($TOOLCHAIN)"
(cd "$WORKSPACE" && cargo build --locked --release --target "$TARGET" --target-dir "$TARGET_DIR")
OUT="$TARGET_DIR/$TARGET/release"

if [[ $CHECK == 0 ]]; then
  mkdir -p "$PREBUILT"
  for module in "${MODULES[@]}"; do
    install -m 0644 "$OUT/${module%%:*}.wasm" "$PREBUILT/${module#*:}.wasm"
    note "$(wc -c <"$PREBUILT/${module#*:}.wasm") bytes  watm/prebuilt/${module#*:}.wasm"
  done
  echo "$TOOLCHAIN" >"$PREBUILT/TOOLCHAIN"
  exit 0
fi

FAILED=0
for module in "${MODULES[@]}"; do
  committed="watm/prebuilt/${module#*:}.wasm"
  if [[ ! -f "$ROOT/$committed" ]]; then
    note "MISSING: $committed (run scripts/build-watm.sh and commit the result)"
    FAILED=1
  elif ! cmp -s "$OUT/${module%%:*}.wasm" "$ROOT/$committed"; then
    note "DIFFERS: $committed is not what the sources build to (run scripts/build-watm.sh and commit the result)"
    FAILED=1
  else
    note "ok: $committed"
  fi
done
exit "$FAILED"
