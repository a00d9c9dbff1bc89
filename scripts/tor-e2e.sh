#!/usr/bin/env bash
# End to end with a real tor on both sides, all on loopback:
#
#   tor client --SOCKS--> water-pt (client, WATM) --TCP--> water-pt (bridge, WATM)
#     --Extended ORPort--> tor bridge
#
# Both tors get a fake, unreachable directory authority, so nothing leaves the
# machine. Passes when the bridge's log shows "Registered server transport
# 'water'" and the client's log shows "new bridge descriptor", which means
# tor's TLS and a BEGIN_DIR request crossed both modules.
#
# Usage: scripts/tor-e2e.sh [MODULE] [SERVER_CONFIG [CLIENT_CONFIG]]
#   MODULE: a name in watm/prebuilt/ (default plain) or a path to a .wasm.
#   SERVER_CONFIG, CLIENT_CONFIG: module configs as base64url (the client's
#   defaults to the server's); the bridge publishes the client's as
#   water-client-config, and the client's Bridge line carries it.
# Environment: WATER_PT (binary; default: build target/debug/water-pt),
#   TOR (default: tor), E2E_TIMEOUT (seconds, default 90),
#   SERVER_PT_ARGS / CLIENT_PT_ARGS: options after the path on the bridge's
#   ServerTransportPlugin and the client's ClientTransportPlugin line (by
#   default a limit on each, so the run also shows tor handing them over).
set -euo pipefail
cd "$(dirname "$0")/.."

module=${1:-plain}
server_config=${2:-}
client_config=${3:-$server_config}
case "$module" in
  */*|*.wasm) module_path=$(readlink -f "$module") ;;
  *) module_path=$(readlink -f "watm/prebuilt/$module.wasm") ;;
esac
[ -f "$module_path" ] || { echo "tor-e2e: no module $module_path" >&2; exit 2; }
tor_bin=${TOR:-tor}
command -v "$tor_bin" >/dev/null || { echo "tor-e2e: tor not found (apt-get install tor)" >&2; exit 2; }
if [ -z "${WATER_PT:-}" ]; then
  cargo build --quiet --bin water-pt
  WATER_PT=$(readlink -f target/debug/water-pt)
fi
timeout_s=${E2E_TIMEOUT:-90}
server_pt_args=${SERVER_PT_ARGS---socket-buffer-kib 256}
client_pt_args=${CLIENT_PT_ARGS---network-stall-ms 60000}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/water-e2e.XXXXXX")
pids=()
cleanup() {
  local status=$?
  # The transports tor launched: they must exit by themselves once tor is gone
  # (tor's exit closes their stdin).
  local children=()
  for p in "${pids[@]}"; do
    while read -r c; do [ -n "$c" ] && children+=("$c"); done < <(pgrep -P "$p" || true)
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}" "${children[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$p" 2>/dev/null; then
      echo "tor-e2e: process $p did not exit; killing it" >&2
      kill -9 "$p" 2>/dev/null || true
      [ $status -eq 0 ] && status=1
    fi
  done
  if [ $status -ne 0 ]; then
    echo "---- bridge log" >&2; tail -n 30 "$tmp/bridge.log" >&2 2>/dev/null || true
    echo "---- client log" >&2; tail -n 30 "$tmp/client.log" >&2 2>/dev/null || true
  fi
  rm -rf "$tmp"
  exit $status
}
trap cleanup EXIT INT TERM

# shellcheck source=scripts/loopback.sh
. scripts/loopback.sh

or_port=$(free_port)
pt_port=$(free_port)
socks_port=$(free_port)
# A directory authority that does not exist: tor never reaches the network.
fake_auth="DirAuthority fake orport=9 no-v2 v3ident=0123456789ABCDEF0123456789ABCDEF01234567 127.0.0.1:9 0123 4567 89AB CDEF 0123 4567 89AB CDEF 0123 4567"

options="water-wasm=$module_path"
[ -n "$server_config" ] && options="$options water-config=$server_config"
[ -n "$client_config" ] && options="$options water-client-config=$client_config"

mkdir -m 700 "$tmp/bridge" "$tmp/client"
cat > "$tmp/bridge.torrc" <<TORRC
DataDirectory $tmp/bridge
BridgeRelay 1
Nickname watere2e
ORPort 127.0.0.1:$or_port
ExtORPort auto
PublishServerDescriptor 0
AssumeReachable 1
SocksPort 0
ServerTransportPlugin water exec $WATER_PT $server_pt_args
ServerTransportListenAddr water 127.0.0.1:$pt_port
ServerTransportOptions water $options
$fake_auth
Log notice file $tmp/bridge.log
Log info file $tmp/bridge.info.log
TORRC

"$tor_bin" -f "$tmp/bridge.torrc" --quiet &
pids+=($!)
wait_for "$tmp/bridge.log" "Registered server transport 'water' at '127.0.0.1:$pt_port'" "the bridge's transport" "${pids[@]}"
for _ in $(seq 1 100); do [ -s "$tmp/bridge/fingerprint" ] && break; sleep 0.1; done
fingerprint=$(cut -d' ' -f2 "$tmp/bridge/fingerprint")
echo "tor-e2e: bridge up, fingerprint $fingerprint, transport at 127.0.0.1:$pt_port, module $(basename "$module_path")"

bridge_args="water-wasm=$module_path water-sha256=$(sha256sum "$module_path" | cut -d' ' -f1)"
[ -n "$client_config" ] && bridge_args="$bridge_args water-config=$client_config"
cat > "$tmp/client.torrc" <<TORRC
DataDirectory $tmp/client
UseBridges 1
ClientTransportPlugin water exec $WATER_PT $client_pt_args
Bridge water 127.0.0.1:$pt_port $fingerprint $bridge_args
SocksPort 127.0.0.1:$socks_port
$fake_auth
UseDefaultFallbackDirs 0
Log notice file $tmp/client.log
TORRC

"$tor_bin" -f "$tmp/client.torrc" --quiet &
pids+=($!)
wait_for "$tmp/client.log" "new bridge descriptor" "the client to fetch the bridge descriptor" "${pids[@]}"
grep -m1 "new bridge descriptor" "$tmp/client.log"
echo "tor-e2e: OK ($(basename "$module_path"))"
