#!/usr/bin/env bash
# Builds water-pt for Windows (x86_64-pc-windows-gnu, Debian's mingw-w64) and
# tests it under Debian's wine:
#   1. the library's unit tests, run as a Windows program;
#   2. tests/portable.rs against water-pt.exe: `water-pt.exe server` +
#      `water-pt.exe client` carrying 1 MiB hash-checked through plain and
#      shadowsocks, and a managed client's transcript (VERSION, CMETHOD,
#      SOCKS with bridge arguments, exit on stdin close). The test driver runs
#      on Linux; only the binary under test is the Windows one.
# Needs: the rustup target, gcc-mingw-w64-x86-64, wine and wine64 (setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-pc-windows-gnu
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
for bin in x86_64-w64-mingw32-gcc wine; do
  command -v "$bin" >/dev/null || { echo "windows-test: $bin not found (scripts/setup.sh installs it)" >&2; exit 2; }
done

# A prefix of our own, created once (wineboot takes a few seconds) and reused.
# No Mono or Gecko: nothing here needs .NET or a browser engine, and without
# them wine does not offer to download them.
export WINEPREFIX=${WINEPREFIX:-$HOME/.cache/water-pt-wine}
export WINEDEBUG=${WINEDEBUG:--all}
export WINEDLLOVERRIDES="mscoree,mshtml="
if [ ! -f "$WINEPREFIX/system.reg" ]; then
  mkdir -p "$WINEPREFIX"
  wineboot --init >/dev/null 2>&1 || true
  wineserver --wait || true
fi
# Wine 8 has no bcryptprimitives.dll, whose ProcessPrng every Rust program
# calls at start; install our stand-in (scripts/wine/) where it is missing.
sys32=$WINEPREFIX/drive_c/windows/system32
if [ ! -f "$sys32/bcryptprimitives.dll" ]; then
  x86_64-w64-mingw32-gcc -O2 -shared -o "$sys32/bcryptprimitives.dll" \
    scripts/wine/bcryptprimitives.c scripts/wine/bcryptprimitives.def -lbcrypt
fi

var=$(echo "$target" | tr 'a-z-' 'A-Z_')
export "CARGO_TARGET_${var}_LINKER=x86_64-w64-mingw32-gcc"
export "CARGO_TARGET_${var}_RUNNER=wine"
# Warnings in Windows-only code fail here, as clippy's do for the host.
export "CARGO_TARGET_${var}_RUSTFLAGS=-D warnings"

echo "windows-test: unit tests under wine" >&2
cargo test --quiet --target "$target" --lib

echo "windows-test: building water-pt.exe" >&2
# With an example in the same build, cargo resolves features as it did for
# the tests (dev-dependencies included), so the dependencies just built for
# them are reused instead of built a second time.
cargo build --quiet --target "$target" --bin water-pt --example man-page
exe=$(readlink -f "target/$target/debug/water-pt.exe")

# The tests start WATER_PT_BIN as a program; this wrapper makes it wine
# running the .exe (exec, so killing the wrapper's pid kills the program).
wrapper=$(readlink -f target)/water-pt-wine
printf '#!/bin/sh\nexec wine "%s" "$@"\n' "$exe" >"$wrapper"
chmod +x "$wrapper"

"$wrapper" --version
echo "windows-test: tests/portable.rs against water-pt.exe" >&2
WATER_PT_BIN=$wrapper cargo test --quiet --test portable
echo "windows-test: OK" >&2
