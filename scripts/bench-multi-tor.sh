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

# CPU time (clock ticks) the tor instances of the layout have used, one
# figure per instance.
tor_ticks() {
  local pid
  for pid in $(awk '$2 ~ /^tor[0-9]+$/ { print $1 }' "$tmp/layout/pids"); do
    awk '{ print $14 + $15 }' "/proc/$pid/stat"
  done
}

# cpu_figures BEFORE AFTER WALL_SECONDS COUNT: from two tor_ticks lists, the
# instances' CPU time per unit of work (ms, summed over instances) and the
# busiest instance's share of one core.
cpu_figures() {
  paste <(echo "$1") <(echo "$2") |
    awk -v hz="$(getconf CLK_TCK)" -v s="$3" -v n="$4" '
      { d = ($2 - $1) / hz; sum += d; if (d / s > m) m = d / s }
      END { printf "%.2f %.0f%%", sum * 1000 / n, m * 100 }'
}

results=()
for n in 1 2; do
  rm -rf "$tmp/layout"
  bash scripts/multi-tor-bridge.sh up "$tmp/layout" "$n" >&2
  # shellcheck disable=SC1091
  . "$tmp/layout/layout.env"
  t0=$(tor_ticks) w0=$(date +%s.%N)
  hs=$(python3 scripts/tor-link-load.py handshakes "127.0.0.1:$PT_PORT" "$seconds" "$workers" | awk '{ print $2, $4 }')
  t1=$(tor_ticks) w1=$(date +%s.%N)
  bulk=$(python3 scripts/tor-link-load.py bulk "127.0.0.1:$PT_PORT" "$seconds" "$connections" | awk '{ print $2, $4 }')
  t2=$(tor_ticks) w2=$(date +%s.%N)
  bash scripts/multi-tor-bridge.sh down "$tmp/layout" >&2
  results+=("$n ${hs#* } $(cpu_figures "$t0" "$t1" "$(awk -v a="$w0" -v b="$w1" "BEGIN { print b - a }")" "${hs%% *}") ${bulk#* } $(cpu_figures "$t1" "$t2" "$(awk -v a="$w1" -v b="$w2" "BEGIN { print b - a }")" "$(( ${bulk%% *} >> 20 ))")")
done

echo "tor instances behind HAProxy, $(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg), ${seconds} s per figure, $workers handshake workers, $connections bulk connections"
echo "tor ms: the instances' CPU time per handshake / per MiB; busiest: the most one instance used, in % of one core"
printf '%-10s %-13s %-8s %-8s %-8s %-10s %s\n' instances handshakes/s "tor ms" busiest MiB/s "tor ms" busiest
for r in "${results[@]}"; do
  # shellcheck disable=SC2086
  printf '%-10s %-13s %-8s %-8s %-8s %-10s %s\n' $r
done
