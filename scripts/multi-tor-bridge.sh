#!/usr/bin/env bash
# A busy bridge's layout, on loopback:
#
#   clients --> water-pt server --> HAProxy --+--> tor instance 1 (Extended ORPort)
#                                             +--> tor instance 2 (Extended ORPort)
#
# water-pt runs as its own service (`water-pt server --ext-orport`), not
# launched by tor. The tor instances share the bridge's keys, so a client
# reaches the same bridge whichever instance HAProxy picks. Each instance
# keeps its own Extended ORPort cookie (tor rewrites the file at every start
# and deletes it on exit, so instances cannot share one); water-pt is given
# every instance's cookie file and answers with the one the instance it
# reached proves it holds. HAProxy health-checks the instances (tor greets
# an Extended ORPort client with its auth types, 01 00) and its backend
# connections come from 127.0.0.3, so tor's log shows USERADDR replacing
# that address with the client's.
#
# Usage:
#   scripts/multi-tor-bridge.sh up DIR [N]       start the layout with N tor instances (default 2)
#   scripts/multi-tor-bridge.sh client DIR NAME  start a tor client through the bridge and wait
#                                                until it has fetched the bridge's descriptor
#   scripts/multi-tor-bridge.sh down DIR         stop everything started in DIR
#   scripts/multi-tor-bridge.sh check            the end-to-end check (run by tests/multi_tor.rs)
# DIR/layout.env describes a running layout (ports, fingerprint, module).
# Environment: WATER_PT (binary; default: build target/debug/water-pt),
#   TOR (default tor), HAPROXY (default haproxy), MODULE (a .wasm; default
#   watm/prebuilt/plain.wasm), E2E_TIMEOUT (seconds per wait, default 60),
#   TOR_DEBUG_LOG=1 (up: each instance logs its [net] debug lines, which
#   include USERADDR; check sets it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tor_bin=${TOR:-tor}
haproxy_bin=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
timeout_s=${E2E_TIMEOUT:-60}
# A directory authority that does not exist: tor never reaches the network.
fake_auth="DirAuthority fake orport=9 no-v2 v3ident=0123456789ABCDEF0123456789ABCDEF01234567 127.0.0.1:9 0123 4567 89AB CDEF 0123 4567 89AB CDEF 0123 4567"

say() { echo "multi-tor: [${SECONDS}s] $*"; }
fail() { echo "multi-tor: $*" >&2; exit 1; }

need_water_pt() {
  if [ -z "${WATER_PT:-}" ]; then
    (cd "$root" && cargo build --quiet --bin water-pt)
    WATER_PT=${CARGO_TARGET_DIR:-$root/target}/debug/water-pt
  fi
  WATER_PT=$(readlink -f "$WATER_PT")
}

# shellcheck source=scripts/loopback.sh
. "$root/scripts/loopback.sh"

# start DIR NAME CMD...: runs CMD in the background with its output in
# DIR/NAME.out and records its pid as NAME in DIR/pids.
start() {
  local dir=$1 name=$2
  shift 2
  "$@" >"$dir/$name.out" 2>&1 </dev/null &
  echo "$! $name" >>"$dir/pids"
  # Not a job of this shell: killing it is part of the test, not news.
  disown $!
}

pid_of() { awk -v n="$2" '$2 == n { print $1 }' "$1/pids"; }

# stop PID...: SIGTERM, then up to 5 s for each to exit (and its children,
# e.g. the transport a tor client launched); returns 1 if one had to be killed.
stop() {
  local p c all=() status=0
  for p in "$@"; do
    all+=("$p")
    while read -r c; do [ -n "$c" ] && all+=("$c"); done < <(pgrep -P "$p" || true)
  done
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "${all[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
      echo "multi-tor: process $p ($(ps -o comm= -p "$p")) did not exit; killing it" >&2
      kill -9 "$p" 2>/dev/null || true
      status=1
    fi
  done
  return $status
}

instance_torrc() {
  local dir=$1 i=$2 or_port=$3 ext_port=$4
  cat <<TORRC
DataDirectory $dir/tor$i
BridgeRelay 1
Nickname watermulti
ORPort 127.0.0.1:$or_port
ExtORPort 127.0.0.1:$ext_port
PublishServerDescriptor 0
AssumeReachable 1
SocksPort 0
SafeLogging 0
$fake_auth
Log notice file $dir/tor$i.log
TORRC
  if [ "${TOR_DEBUG_LOG:-0}" = 1 ]; then echo "Log [net]debug file $dir/tor$i.net.log"; fi
}

up() {
  local dir=$1 n=${2:-2} i
  need_water_pt
  command -v "$tor_bin" >/dev/null || fail "tor not found (apt-get install tor)"
  [ -x "$haproxy_bin" ] || fail "haproxy not found (apt-get install haproxy)"
  mkdir -p "$dir"
  dir=$(readlink -f "$dir")
  : >"$dir/pids"
  local module_path
  module_path=$(readlink -f "${MODULE:-$root/watm/prebuilt/plain.wasm}")
  local front pt ext_ports=() cookies=()
  front=$(free_port)
  pt=$(free_port)
  for i in $(seq 1 "$n"); do
    local or_port ext_port
    or_port=$(free_port)
    ext_port=$(free_port)
    ext_ports+=("$ext_port")
    cookies+=(--ext-orport-cookie "$dir/tor$i/extended_orport_auth_cookie")
    mkdir -m 700 "$dir/tor$i"
    instance_torrc "$dir" "$i" "$or_port" "$ext_port" >"$dir/tor$i.torrc"
  done
  # One set of keys for every instance: tor makes them without starting,
  # then each instance gets a copy before its first start.
  "$tor_bin" --list-fingerprint -f "$dir/tor1.torrc" --quiet >/dev/null
  for i in $(seq 2 "$n"); do cp -a "$dir/tor1/keys" "$dir/tor$i/keys"; done
  local fingerprint
  fingerprint=$(cut -d' ' -f2 "$dir/tor1/fingerprint")
  for i in $(seq 1 "$n"); do start "$dir" "tor$i" "$tor_bin" -f "$dir/tor$i.torrc" --quiet; done
  for i in $(seq 1 "$n"); do
    wait_for "$dir/tor$i.log" "Opened Extended OR listener connection (ready)" "tor instance $i" "$(pid_of "$dir" "tor$i")"
  done

  {
    cat <<CFG
global
    stats socket $dir/haproxy.sock mode 600 level admin
    log stderr format raw local0 notice

defaults
    mode tcp
    log global
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    # A connection sent to an instance that just died goes to another one.
    retries 2
    option redispatch 1

frontend extorport
    bind 127.0.0.1:$front
    default_backend tor

backend tor
    balance roundrobin
    source 127.0.0.3
    # A live instance answers with its auth types at once; a dead one
    # refuses the connection. The generous check timeout keeps a tor that is
    # merely busy (a burst of TLS handshakes) in the pool. Sessions on an
    # instance that dies close with it: nothing to shut down here.
    option tcp-check
    tcp-check connect
    tcp-check expect binary 0100
    timeout check 5s
    default-server inter 1s fall 2 rise 1
CFG
    for i in $(seq 1 "$n"); do
      echo "    server tor$i 127.0.0.1:${ext_ports[$((i - 1))]} check"
    done
  } >"$dir/haproxy.cfg"
  "$haproxy_bin" -c -q -f "$dir/haproxy.cfg" || fail "haproxy rejected $dir/haproxy.cfg"
  start "$dir" haproxy "$haproxy_bin" -db -f "$dir/haproxy.cfg"
  # A tor's listeners open before it has finished starting (parsing its
  # GeoIP files can take seconds on a loaded machine); it answers once its
  # main loop runs, and HAProxy's first passed check shows that.
  local deadline=$((SECONDS + timeout_s))
  for i in $(seq 1 "$n"); do
    until [ "$(haproxy_stat "$dir" "tor$i" check_status 2>/dev/null)" = L7OK ]; do
      [ $SECONDS -lt $deadline ] || fail "HAProxy's check of tor instance $i never passed"
      sleep 0.2
    done
  done

  start "$dir" water-pt "$WATER_PT" server --wasm "$module_path" --cache-dir "$dir/cache" \
    --listen "127.0.0.1:$pt" --ext-orport "127.0.0.1:$front" "${cookies[@]}"
  wait_for "$dir/water-pt.out" "server listening on" "water-pt" "$(pid_of "$dir" water-pt)"
  cat >"$dir/layout.env" <<ENV
N=$n
PT_PORT=$pt
FRONT_PORT=$front
EXT_PORTS="${ext_ports[*]}"
FINGERPRINT=$fingerprint
MODULE_PATH=$module_path
MODULE_SHA256=$(sha256sum "$module_path" | cut -d' ' -f1)
WATER_PT=$WATER_PT
ENV
  say "up: $n tor instance(s) (fingerprint $fingerprint) behind HAProxy 127.0.0.1:$front, water-pt on 127.0.0.1:$pt, in $dir"
}

# A tor client whose only way out is the water bridge; leaves it running.
client_start() {
  local dir=$1 name=$2
  # shellcheck disable=SC1091
  . "$dir/layout.env"
  mkdir -m 700 "$dir/$name"
  cat >"$dir/$name.torrc" <<TORRC
DataDirectory $dir/$name
UseBridges 1
ClientTransportPlugin water exec $WATER_PT
Bridge water 127.0.0.1:$PT_PORT $FINGERPRINT water-wasm=$MODULE_PATH water-sha256=$MODULE_SHA256
SocksPort 127.0.0.1:$(free_port)
$fake_auth
UseDefaultFallbackDirs 0
Log notice file $dir/$name.log
TORRC
  start "$dir" "$name" "$tor_bin" -f "$dir/$name.torrc" --quiet
}

client_wait() {
  wait_for "$1/$2.log" "new bridge descriptor" "client $2 to fetch the bridge descriptor" "$(pid_of "$1" "$2")"
}

down() {
  local dir=$1 pids
  [ -f "$dir/pids" ] || return 0
  # Clients first, the bridge's parts last; newest first.
  pids=$(tac "$dir/pids" | awk '{ print $1 }' | tr '\n' ' ')
  # shellcheck disable=SC2086
  stop $pids
}

# HAProxy's counter COLUMN (scur: open now; stot: total) for server SERVER.
haproxy_stat() {
  local dir=$1 server=$2 column=$3
  python3 - "$dir/haproxy.sock" "$server" "$column" <<'PY'
import socket, sys
path, server, column = sys.argv[1:]
s = socket.socket(socket.AF_UNIX)
s.connect(path)
s.sendall(b"show stat\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
lines = data.decode().splitlines()
header = lines[0].lstrip("# ").split(",")
for line in lines[1:]:
    row = dict(zip(header, line.split(",")))
    if row.get("pxname") == "tor" and row.get("svname") == server:
        print(row[column])
        break
else:
    sys.exit(f"no server {server} in HAProxy's stats")
PY
}

# Established TCP connections matching an ss filter, e.g. "sport = :443".
established() { ss -Htn state established "( $1 )" | wc -l; }

# USERADDR commands an instance took: tor logs each one at debug level,
# with the address it replaces (HAProxy's, 127.0.0.3) and the client's.
useraddr_count() {
  local n
  n=$(grep -c "Received USERADDR.We rewrite our address from '127.0.0.3:[0-9]*' to '127.0.0.1:[0-9]*'" "$1" || true)
  echo "${n:-0}"
}

check() {
  need_water_pt
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/water-multi-tor.XXXXXX")
  # shellcheck disable=SC2064
  trap "finish '$dir'" EXIT
  TOR_DEBUG_LOG=1 up "$dir" 2
  # shellcheck disable=SC1091
  . "$dir/layout.env"

  # 1. Clients reach the bridge through both instances.
  local c
  for c in c1 c2 c3 c4; do client_start "$dir" "$c"; done
  for c in c1 c2 c3 c4; do client_wait "$dir" "$c"; done
  grep -m1 "new bridge descriptor" "$dir/c1.log"
  local u1 u2 t1 t2
  u1=$(useraddr_count "$dir/tor1.net.log")
  u2=$(useraddr_count "$dir/tor2.net.log")
  t1=$(haproxy_stat "$dir" tor1 stot)
  t2=$(haproxy_stat "$dir" tor2 stot)
  say "4 clients: HAProxy sent tor1 $t1 and tor2 $t2 connections; USERADDR taken by tor1 $u1, tor2 $u2 times"
  [ "$u1" -ge 1 ] && [ "$u2" -ge 1 ] || fail "an instance got no client connection"
  [ $((u1 + u2)) -ge 4 ] || fail "fewer USERADDR commands than clients"

  # 2. Instance 1 dies under the clients still connected to it.
  local on1
  on1=$(haproxy_stat "$dir" tor1 scur)
  [ "$on1" -ge 1 ] || fail "no open connection on tor1 to break (tor1 scur=$on1)"
  say "killing tor1 with $on1 open connection(s) on it"
  kill -9 "$(pid_of "$dir" tor1)"
  local deadline=$((SECONDS + timeout_s)) inbound outbound scur1
  until [ "$(haproxy_stat "$dir" tor1 status)" = DOWN ]; do
    [ $SECONDS -lt $deadline ] || fail "HAProxy did not mark tor1 down"
    sleep 0.1
  done
  # Every session water-pt still has must have both halves: none may be left
  # holding a client's connection after its tor side closed.
  while :; do
    inbound=$(established "sport = :$PT_PORT")
    outbound=$(established "dport = :$FRONT_PORT")
    scur1=$(haproxy_stat "$dir" tor1 scur)
    [ "$scur1" = 0 ] && [ "$inbound" = "$outbound" ] && break
    [ $SECONDS -lt $deadline ] || fail "sessions left open: tor1 scur=$scur1, water-pt inbound=$inbound outbound=$outbound"
    sleep 0.1
  done
  say "after the kill: no session left on tor1; water-pt has $inbound session(s), each with its tor side"

  # 3. New clients still get through, to the survivor.
  local before after
  before=$(useraddr_count "$dir/tor2.net.log")
  for c in n1 n2; do client_start "$dir" "$c"; done
  for c in n1 n2; do client_wait "$dir" "$c"; done
  after=$(useraddr_count "$dir/tor2.net.log")
  say "2 clients after the kill: tor2 took $((after - before)) more USERADDR"
  [ $((after - before)) -ge 2 ] || fail "new clients did not all reach tor2"
  kill -0 "$(pid_of "$dir" water-pt)" 2>/dev/null || fail "water-pt exited"
  local warnings
  warnings=$(grep -c "WARN" "$dir/water-pt.out" || true)
  [ "${warnings:-0}" -le 1 ] || fail "water-pt logged $warnings warnings; an outage is logged once"
  echo "multi-tor: OK"
}

finish() {
  local status=$? dir=$1
  down "$dir" || status=1
  if [ $status -ne 0 ]; then
    for f in water-pt.out haproxy.out tor1.log tor2.log c1.log c2.log n1.log; do
      echo "---- $f" >&2
      tail -n 20 "$dir/$f" >&2 2>/dev/null || true
    done
  fi
  rm -rf "$dir"
  exit $status
}

case "${1:-}" in
  up) shift; up "$@" ;;
  client) client_start "$2" "$3"; client_wait "$2" "$3" ;;
  down) down "$2" ;;
  check) check ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
