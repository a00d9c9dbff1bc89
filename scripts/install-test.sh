#!/usr/bin/env bash
# Install test of the Debian package, on this machine (CI's is disposable):
# builds the .deb with scripts/release.sh, installs it with dpkg -i, checks
# what it put in place, and runs the tor end-to-end test against the
# installed /usr/bin/water-pt.
#
# By default the package wraps this checkout's dev build (what `cargo test`
# already compiled), so CI tests packaging and installation without a second
# full build; RELEASE_ARGS replaces the arguments given to release.sh (e.g.
# RELEASE_ARGS="--no-windows" to install the static release binary).
# Needs root (dpkg -i), tor and apparmor (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "install-test: needs root for dpkg -i" >&2; exit 2; }
out=$(readlink -f target)/install-test
rm -rf "$out"
# shellcheck disable=SC2086
bash scripts/release.sh --allow-dirty --out "$out" ${RELEASE_ARGS:---profile dev --linux-target host --no-windows}
deb=$(ls "$out"/water-pt_*.deb)
(cd "$out" && sha256sum --check --quiet SHA256SUMS)

dpkg -i "$deb" >/dev/null
want=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="water-pt"))')
got=$(/usr/bin/water-pt --version)
[ "$got" = "water-pt $want" ] || { echo "install-test: --version says '$got', want 'water-pt $want'" >&2; exit 1; }
for f in /usr/share/man/man1/water-pt.1.gz /usr/share/man/man1/water-pt-client.1.gz \
  /usr/share/doc/water-pt/examples/bridge.torrc /usr/share/water-pt/watm/shadowsocks.wasm \
  /etc/apparmor.d/abstractions/water-pt; do
  [ -s "$f" ] || { echo "install-test: $f missing" >&2; exit 1; }
done
zcat /usr/share/man/man1/water-pt.1.gz | grep -qF 'network\-stall\-ms' ||
  { echo "install-test: the man page does not document --network-stall-ms" >&2; exit 1; }

# The AppArmor abstraction, enabled the way the README tells operators to,
# must parse as part of tor's profile (parsed only: containers have no
# AppArmor kernel to load it into).
aa=$(mktemp -d)
trap 'rm -rf "$aa"' EXIT
cp -a /etc/apparmor.d/. "$aa/"
echo '#include <abstractions/water-pt>' >>"$aa/local/system_tor"
apparmor_parser --skip-kernel-load --skip-cache --base "$aa" --Include "$aa" "$aa/system_tor" 2>/dev/null ||
  { echo "install-test: tor's profile with abstractions/water-pt does not parse" >&2;
    apparmor_parser --skip-kernel-load --skip-cache --base "$aa" --Include "$aa" "$aa/system_tor"; exit 1; }
grep -q '/usr/bin/water-pt Pix' "$aa/abstractions/water-pt"

WATER_PT=/usr/bin/water-pt bash scripts/tor-e2e.sh plain
echo "install-test: OK ($got from $(basename "$deb"))" >&2
