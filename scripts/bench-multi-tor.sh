#!/usr/bin/env bash
# How much a bridge gains from more tor instances: the layout of
# scripts/multi-tor-bridge.sh (water-pt with the plain module -> HAProxy ->
# N tor instances) with 1 and then 2 instances, each loaded by
# scripts/tor-link-load.py on loopback:
#   - link handshakes/s: TLS plus tor's link handshake, what each new client
#     costs a bridge's tor, from WORKERS clients in a loop;
#   - MiB/s: PADDING cells into CONNECTIONS open links, which tor decrypts
#     and drops.
# All processes share this machine's cores, the load generator included, so
# the figures are for comparing 1 and 2 instances here, not a bridge's
# capacity.
#
# Usage: scripts/bench-multi-tor.sh [SECONDS [WORKERS [CONNECTIONS]]]
#   (defaults 10, 8, 8). Uses the release build of water-pt (built if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
workers=${2:-8}
connections=${3:-8}

if [ -z "${WATER_PT:-}" ]; then
  cargo build --release --quiet --bin water-pt
  WATER_PT=${CARGO_TARGET_DIR:-target}/release/water-pt
fi
export WATER_PT

tmp=$(mktemp -d "${TMPDIR:-/tmp}/water-bench-multi-tor.XXXXXX")
trap 'bash scripts/multi-tor-bridge.sh down "$tmp/layout" >/dev/null || true; rm -rf "$tmp"' EXIT

results=()
for n in 1 2; do
  rm -rf "$tmp/layout"
  bash scripts/multi-tor-bridge.sh up "$tmp/layout" "$n" >&2
  # shellcheck disable=SC1091
  . "$tmp/layout/layout.env"
  hs=$(python3 scripts/tor-link-load.py handshakes "127.0.0.1:$PT_PORT" "$seconds" "$workers")
  bulk=$(python3 scripts/tor-link-load.py bulk "127.0.0.1:$PT_PORT" "$seconds" "$connections")
  bash scripts/multi-tor-bridge.sh down "$tmp/layout" >&2
  results+=("$n $(echo "$hs" | awk '{ print $4 }') $(echo "$bulk" | awk '{ print $4 }')")
done

echo "tor instances behind HAProxy, $(nproc) cores, ${seconds} s per figure, $workers handshake workers, $connections bulk connections"
printf '%-10s %-20s %s\n' instances "link handshakes/s" "MiB/s"
for r in "${results[@]}"; do
  # shellcheck disable=SC2086
  printf '%-10s %-20s %s\n' $r
done
