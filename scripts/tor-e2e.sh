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
#        scripts/tor-e2e.sh --bridge-line [OPTION...]
#   MODULE: a name in watm/prebuilt/ (default plain) or a path to a .wasm.
#   SERVER_CONFIG, CLIENT_CONFIG: module configs as base64url (the client's
#   defaults to the server's); the bridge publishes the client's as
#   water-client-config, and the client's Bridge line carries it.
#   --bridge-line: the deployment a user follows. The bridge gets
#   `ServerTransportOptions water OPTION...` (no such line without options)
#   and the client gets only the line from the bridge's water_bridgeline.txt,
#   fingerprint filled in: it runs the module from its built-in catalogue.
#   With E2E_RESTART=1 the bridge is then restarted: its line must not change,
#   and a fresh client with the old line must get through again.
#   With E2E_CLIENT_RESTART=1 the client is restarted with its DataDirectory
#   kept, and must get through without a module download from the bridge.
# Every run also checks every line the transports wrote to either tor's log
# (their LOG and STATUS lines, and their stderr, which tor logs at info level)
# for an IP address or port: none may show one unless --unsafe-logging.
# Environment: WATER_PT (binary; default: build target/debug/water-pt),
#   TOR (default: tor), E2E_TIMEOUT (seconds, default 90),
#   SERVER_PT_ARGS / CLIENT_PT_ARGS: options after the path on the bridge's
#   ServerTransportPlugin and the client's ClientTransportPlugin line (by
#   default a limit on each, so the run also shows tor handing them over).
set -euo pipefail
cd "$(dirname "$0")/.."

bridge_line_mode=0
if [ "${1:-}" = "--bridge-line" ]; then
  bridge_line_mode=1
  shift
  bridge_options="$*"
  set -- plain
fi
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
    echo "---- bridge log" >&2; tail -n 30 "$tmp"/bridge-*.log >&2 2>/dev/null || true
    echo "---- client log" >&2; tail -n 30 "$tmp"/client-*.log >&2 2>/dev/null || true
  fi
  if [ -n "${E2E_KEEP:-}" ]; then echo "tor-e2e: kept $tmp" >&2; else rm -rf "$tmp"; fi
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

label=$(basename "$module_path")
if [ $bridge_line_mode = 1 ]; then
  options=$bridge_options
  label="bridge line, options: ${bridge_options:-none}"
fi
transport_options=""
[ -n "$options" ] && transport_options="ServerTransportOptions water $options"

# write_torrcs RUN: the bridge's and the client's torrc, logging to files named after RUN.
bridge_torrc() {
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
$transport_options
$fake_auth
Log notice file $tmp/bridge-$1.log
Log info file $tmp/bridge-$1.info.log
TORRC
}

# start_bridge RUN: starts the bridge's tor and waits for its transport.
start_bridge() {
  bridge_torrc "$1"
  "$tor_bin" -f "$tmp/bridge.torrc" --quiet &
  bridge_pid=$!
  pids+=($bridge_pid)
  wait_for "$tmp/bridge-$1.log" "Registered server transport 'water' at '127.0.0.1:$pt_port'" "the bridge's transport"
  for _ in $(seq 1 100); do [ -s "$tmp/bridge/fingerprint" ] && break; sleep 0.1; done
  fingerprint=$(cut -d' ' -f2 "$tmp/bridge/fingerprint")
}

# start_client RUN BRIDGE_LINE [keep]: a client with a fresh DataDirectory (or, with keep,
# the one of the run before); waits for the descriptor.
start_client() {
  if [ "${3:-}" != keep ]; then
    rm -rf "$tmp/client"
    mkdir -m 700 "$tmp/client"
  fi
  cat > "$tmp/client.torrc" <<TORRC
DataDirectory $tmp/client
UseBridges 1
ClientTransportPlugin water exec $WATER_PT $client_pt_args
$2
SocksPort 127.0.0.1:$socks_port
$fake_auth
UseDefaultFallbackDirs 0
Log notice file $tmp/client-$1.log
Log info file $tmp/client-$1.info.log
TORRC
  "$tor_bin" -f "$tmp/client.torrc" --quiet &
  client_pid=$!
  pids+=($client_pid)
  if [ "${3:-}" = keep ]; then
    # The descriptor may come from the kept cache: wait for the transport's own word that
    # it reached the bridge.
    wait_for "$tmp/client-$1.info.log" "CONNECT=Success" "the client's transport to reach the bridge"
    echo "tor-e2e: client $1 reached the bridge through the transport"
  else
    wait_for "$tmp/client-$1.log" "new bridge descriptor" "the client to fetch the bridge descriptor"
    grep -m1 "new bridge descriptor" "$tmp/client-$1.log"
  fi
}

# stop PID: ends a tor; its transport must exit by itself once tor is gone.
stop() {
  local children
  children=$(pgrep -P "$1" || true)
  kill "$1"
  for p in $1 $children; do
    for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$p" 2>/dev/null; then echo "tor-e2e: process $p did not exit" >&2; return 1; fi
  done
}

# The bridge line from the bridge's file, fingerprint filled in.
published_line() {
  grep '^Bridge water ' "$tmp/bridge/pt_state/water_bridgeline.txt" | sed "s/<FINGERPRINT>/$fingerprint/"
}

mkdir -m 700 "$tmp/bridge"
start_bridge 1
echo "tor-e2e: bridge up, fingerprint $fingerprint, transport at 127.0.0.1:$pt_port ($label)"

if [ $bridge_line_mode = 1 ]; then
  line=$(published_line)
  echo "tor-e2e: client line: $line"
else
  bridge_args="water-wasm=$module_path water-sha256=$(sha256sum "$module_path" | cut -d' ' -f1)"
  [ -n "$client_config" ] && bridge_args="$bridge_args water-config=$client_config"
  line="Bridge water 127.0.0.1:$pt_port $fingerprint $bridge_args"
fi
start_client 1 "$line"

# Downloads the bridge's transport reported (module delivery, for a module that is not
# built in): one LOG line per module sent.
downloads() {
  local n=0 log
  for log in "$tmp"/bridge-*.log; do
    case "$log" in *.info.log) continue ;; esac
    n=$((n + $(grep -c "downloads since start" "$log" || true)))
  done
  echo $n
}

if [ "${E2E_CLIENT_RESTART:-0}" = 1 ]; then
  first=$(downloads)
  cached=$(find "$tmp/client/pt_state/watm" -name '*.wasm' 2>/dev/null | wc -l)
  echo "tor-e2e: client run 1: $first module download(s) from the bridge, $cached module(s) cached"
  stop "$client_pid"
  start_client 1b "$line" keep
  again=$(downloads)
  [ "$again" = "$first" ] || { echo "tor-e2e: the restarted client downloaded again ($first, then $again)" >&2; exit 1; }
  echo "tor-e2e: client run 2: no download (still $again)"
fi

if [ "${E2E_RESTART:-0}" = 1 ]; then
  stop "$client_pid"
  stop "$bridge_pid"
  start_bridge 2
  again=$(published_line)
  [ "$again" = "$line" ] || { echo "tor-e2e: the restarted bridge publishes a different line: $again" >&2; exit 1; }
  echo "tor-e2e: restarted bridge, same line"
  start_client 2 "$line"
fi

# Every line a transport wrote that tor logged: its stderr ("reported via
# standard error"), its LOG lines (`Managed proxy "PATH": MESSAGE`) and its
# STATUS lines (echoed at info level as "Got a line ... (STATUS ...)"). The
# method lines name the transports' own listeners on purpose and are not
# checked.
checked=0
leaks=()
for log in "$tmp"/bridge-*.info.log "$tmp"/client-*.info.log; do
  while IFS= read -r l; do
    checked=$((checked + 1))
    # The text after the proxy's name (its path holds no address), less the
    # transport's own log timestamps (2026-01-02T03:04:05Z).
    msg=$(sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]+Z//g' <<<"${l#*water-pt}")
    if grep -qE '([0-9]{1,3}\.){3}[0-9]{1,3}|\[[0-9a-fA-F:]*:[0-9a-fA-F:]*\]|:[0-9]{2,5}\b' <<<"$msg"; then
      leaks+=("$l")
    fi
  done < <(grep -E "reported via standard error|Got a line from managed proxy .*\((LOG|STATUS) |Managed proxy \"[^\"]*water-pt\": " "$log" || true)
done
if [ ${#leaks[@]} -gt 0 ]; then
  echo "tor-e2e: transport log lines with an address:" >&2
  printf '  %s\n' "${leaks[@]}" >&2
  exit 1
fi
[ $checked -gt 0 ] || { echo "tor-e2e: found no transport lines in tor's logs to check" >&2; exit 1; }
echo "tor-e2e: $checked transport log lines, none with an address"
echo "tor-e2e: OK ($label)"
