#!/usr/bin/env bash
# Builds water-pt's release artifacts from a clean checkout into dist/:
#   water-pt-VERSION-x86_64-linux-musl    static Linux binary (no libc needed)
#   water-pt-VERSION-x86_64-windows.exe   Windows binary (mingw-w64)
#   water-pt_VERSION_amd64.deb            /usr/bin/water-pt (the static binary),
#       man pages generated from the CLI definition, the torrc examples, the
#       prebuilt modules, and an AppArmor abstraction for tor's profile
#   SHA256SUMS                            a SHA-256 per artifact
#
# Usage: scripts/release.sh [--profile NAME] [--linux-target TRIPLE]
#                           [--no-windows] [--allow-dirty] [--out DIR]
#   --profile: cargo profile (default: dist, the size-tuned profile in
#     Cargo.toml). CI packages its already-built dev binary with
#     `--profile dev --linux-target host --no-windows` to test the package
#     and its installation without a second full build.
#   --linux-target: the binary the .deb installs (default
#     x86_64-unknown-linux-musl; `host` for this machine's own target).
# Needs musl-tools and gcc-mingw-w64-x86-64 (Debian), dpkg-deb.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=dist
linux_target=x86_64-unknown-linux-musl
windows=1
allow_dirty=0
out=dist
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --linux-target) linux_target=$2; shift 2 ;;
    --no-windows) windows=0; shift ;;
    --allow-dirty) allow_dirty=1; shift ;;
    --out) out=$2; shift 2 ;;
    *) echo "release: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ "$allow_dirty" = 0 ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  echo "release: the checkout has uncommitted changes (--allow-dirty to build anyway)" >&2
  exit 2
fi

version=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="water-pt"))')
host=$(rustc -vV | sed -n 's/^host: //p')
[ "$linux_target" = host ] && linux_target=$host
# cargo's output directory for a profile (dev builds land in "debug").
profile_dir=$profile
[ "$profile" = dev ] && profile_dir=debug
mkdir -p "$out"
out=$(readlink -f "$out")

# Builds the water-pt binary for a target and prints its path. The host target
# is built without --target, so it shares target/<profile> with `cargo test`.
build() {
  local t=$1
  if [ "$t" = "$host" ]; then
    cargo build --quiet --profile "$profile" --bin water-pt >&2
    echo "target/$profile_dir/water-pt"
  else
    rustup target list --installed | grep -qx "$t" || rustup target add "$t" >&2
    local var
    var=$(echo "$t" | tr 'a-z-' 'A-Z_')
    case "$t" in
      *-linux-musl) export "CC_${t//-/_}=musl-gcc" ;;
      *-windows-gnu) export "CARGO_TARGET_${var}_LINKER=x86_64-w64-mingw32-gcc" ;;
    esac
    cargo build --quiet --profile "$profile" --target "$t" --bin water-pt >&2
    local exe=water-pt
    case "$t" in *windows*) exe=water-pt.exe ;; esac
    echo "target/$t/$profile_dir/$exe"
  fi
}

artifacts=()
start=$SECONDS
echo "release: building water-pt $version ($profile) for $linux_target" >&2
linux_bin=$(build "$linux_target")
case "$linux_target" in
  *-linux-musl)
    linux_name=water-pt-$version-${linux_target%%-*}-linux-musl
    # Static: no program interpreter, no shared libraries.
    if readelf -l "$linux_bin" | grep -q INTERP || readelf -d "$linux_bin" | grep -q NEEDED; then
      echo "release: $linux_bin is not static" >&2
      exit 1
    fi
    cp "$linux_bin" "$out/$linux_name"
    artifacts+=("$linux_name")
    depends=""
    ;;
  *)
    # A binary for this machine's libc (CI's install test): the package
    # depends on the C runtime it links.
    depends="Depends: libc6, libgcc-s1"
    ;;
esac
echo "release: linux binary built in $((SECONDS - start)) s" >&2

if [ "$windows" = 1 ]; then
  start=$SECONDS
  win_bin=$(build x86_64-pc-windows-gnu)
  win_name=water-pt-$version-x86_64-windows.exe
  cp "$win_bin" "$out/$win_name"
  artifacts+=("$win_name")
  echo "release: windows binary built in $((SECONDS - start)) s" >&2
fi

# The Debian package, staged by hand and built with dpkg-deb.
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -Dm755 "$linux_bin" "$stage/usr/bin/water-pt"
cargo run --quiet --example man-page -- "$stage/usr/share/man/man1"
gzip -9n "$stage"/usr/share/man/man1/*.1
doc=$stage/usr/share/doc/water-pt
install -Dm644 README.md "$doc/README.md"
install -d "$doc/examples"
install -m644 torrc-examples/*.torrc "$doc/examples/"
install -d "$stage/usr/share/water-pt/watm"
install -m644 watm/prebuilt/*.wasm watm/prebuilt/*.json "$stage/usr/share/water-pt/watm/"
install -Dm644 packaging/apparmor/water-pt "$stage/etc/apparmor.d/abstractions/water-pt"
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: water-pt
Files: *
License: MIT or Apache-2.0
EOF
install -d "$stage/DEBIAN"
echo /etc/apparmor.d/abstractions/water-pt >"$stage/DEBIAN/conffiles"
size_kib=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
{
  echo "Package: water-pt"
  echo "Version: $version"
  echo "Architecture: $arch"
  echo "Maintainer: water-pt developers <water-pt@localhost>"
  echo "Installed-Size: $size_kib"
  [ -n "$depends" ] && echo "$depends"
  echo "Recommends: tor"
  echo "Section: net"
  echo "Priority: optional"
  echo "Description: WATER pluggable transport for Tor"
  echo " A WATER (WebAssembly Transport Modules) runtime shipped as a Tor"
  echo " pluggable transport: the wire protocol is a WebAssembly module named"
  echo " by the bridge line. To let tor's AppArmor profile start it, add"
  echo " '#include <abstractions/water-pt>' to /etc/apparmor.d/local/system_tor."
} >"$stage/DEBIAN/control"
deb_name=water-pt_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out/$deb_name" >/dev/null
artifacts+=("$deb_name")

(cd "$out" && sha256sum "${artifacts[@]}" >SHA256SUMS)
echo "release: artifacts in $out:" >&2
(cd "$out" && ls -l "${artifacts[@]}" SHA256SUMS >&2 && cat SHA256SUMS >&2)
