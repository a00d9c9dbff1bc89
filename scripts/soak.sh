#!/usr/bin/env bash
# Load and soak test of a water-pt client/server pair on loopback (see examples/soak/).
#
#   scripts/soak.sh                      the full soak: 1,000,000 short connections, then
#                                        1,000 concurrent connections of 64 MiB each way
#   scripts/soak.sh --short 10000 --long 100 --long-bytes 1048576
#                                        any count or size, as flags (--help lists them)
#   scripts/soak.sh --short 0 --long-rounds 3 --long-bytes 16777216
#                                        the long phase three times: RSS must not grow
#                                        from one round to the next
#   scripts/soak.sh --socket-buffer-kib 0
#                                        kernel socket-buffer autotuning instead of the
#                                        default fixed 64 KiB (see --help: with autotuning
#                                        1,000 busy connections can exhaust net.ipv4.tcp_mem)
#   scripts/soak.sh --flood-silent 2000 --flood-noisy 200
#   scripts/soak.sh --flood-silent 10000 --flood-noisy 200
#                                        flood mode: a Shadowsocks `water-pt server` held by
#                                        silent and noisy connections while a real client
#                                        echoes 1 MiB through it (time printed), then back to
#                                        the baseline once the flood closes
#
# The open-file limit is raised to the hard limit first (every flood connection is a
# descriptor in the driver and a few in the server); when even the hard limit is below what
# the run needs, the script says so and, if allowed to (root), raises the hard limit too.
# Builds the release binary and the driver, then runs the driver under `nice` so the rest of
# the machine stays usable. Everything stays on 127.0.0.1. The run is bounded: each phase by
# the driver's --phase-timeout-secs, the whole script by SOAK_TIMEOUT seconds (default 7200),
# after which `timeout` stops the driver (and the driver's exit takes its PT processes with it).
# Exit status: 0 when no byte was lost and descriptors and threads came back to the baseline.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

cargo build --release --locked --bin water-pt --example soak

# Descriptors the run needs: per flood connection one in the driver and up to two in the
# server (inbound socket, and the caller socket once the module writes toward it), plus
# room for everything else.
flood=0
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --flood-silent|--flood-noisy) flood=$((flood + ${args[$((i + 1))]:-0})) ;;
    --flood-silent=*|--flood-noisy=*) flood=$((flood + ${args[$i]#*=})) ;;
  esac
done
need=$((flood * 3 + 4096))
hard="$(ulimit -Hn)"
if [[ "$hard" != unlimited && "$hard" -lt "$need" ]]; then
  echo "soak: the open-file hard limit is $hard; this run needs about $need" >&2
  if ulimit -Hn "$need" 2>/dev/null; then
    echo "soak: raised the hard limit to $need" >&2
  else
    echo "soak: cannot raise the hard limit (not root?); going on with $hard" >&2
  fi
fi
ulimit -Sn "$(ulimit -Hn)"
echo "soak: open-file limit $(ulimit -Sn)" >&2
exec timeout --signal=TERM --kill-after=30 "${SOAK_TIMEOUT:-7200}" \
  nice -n "${SOAK_NICE:-10}" "$TARGET_DIR/release/examples/soak" --bin "$TARGET_DIR/release/water-pt" "$@"
