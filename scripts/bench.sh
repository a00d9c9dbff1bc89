#!/usr/bin/env bash
# Benchmarks water-pt against direct TCP and obfs4proxy, each transport launched and driven the
# way tor does (see README "Benchmarks"). Everything runs on loopback and every process started
# is stopped on exit.
#
#   bash scripts/bench.sh            # full comparison (about 5 minutes on 2 cores), --idle 10000
#   bash scripts/bench.sh --quick    # under a minute once built, for CI
#   bash scripts/bench.sh -- ARGS    # extra pt-bench arguments, e.g. -- --only plain,obfs4
#
# Results: the table on stdout, target/pt-bench/results.json, target/pt-bench/chart.svg.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) mode=quick ;;
    --) shift; extra=("$@"); break ;;
    *) extra+=("$1") ;;
  esac
  shift
done

if ! command -v obfs4proxy >/dev/null 2>&1; then
  echo "bench.sh: installing obfs4proxy" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y obfs4proxy >&2 || { apt-get update >&2 && apt-get install -y obfs4proxy >&2; }
  else
    sudo apt-get install -y obfs4proxy >&2
  fi
fi

# Each water-pt connection holds about ten memory mappings (thread stack, signal stack, the
# instance's memory slot); 10,000 of them pass Linux's default limit of 65,530 mappings.
if [ "$(cat /proc/sys/vm/max_map_count 2>/dev/null || echo 0)" -lt 262144 ] && [ "$(id -u)" = 0 ]; then
  sysctl -qw vm.max_map_count=262144 || echo "bench.sh: cannot raise vm.max_map_count" >&2
fi

cargo build --release --quiet --bin water-pt --bin pt-bench
# The target directory may be shared with other checkouts that build a binary of the same name
# (CARGO_TARGET_DIR): copy ours out at once so the run uses exactly what was just built.
target_dir=${CARGO_TARGET_DIR:-target}
bin=target/pt-bench/bin
mkdir -p "$bin"
cp "$target_dir/release/water-pt" "$target_dir/release/pt-bench" "$bin/"

if [ "$mode" = quick ]; then
  exec timeout 120 "$bin/pt-bench" --quick "${extra[@]}"
else
  exec timeout 900 "$bin/pt-bench" --idle 10000 "${extra[@]}"
fi
