#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ and fails if any of them crashes.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS is the time per target (default 600; 30 with FUZZ_CI=1). With no TARGET, every target
# runs, one after the other. Each target starts from its corpus, fuzz/corpus/<target>/ (the
# committed seed-* files plus whatever earlier runs added, which git ignores), and from
# fuzz/regressions/<target>/ (inputs that once crashed, kept so they are retried first).
# A crashing input is written to fuzz/artifacts/<target>/.
#
# Toolchain: cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address, the sancov passes),
# and only the stable toolchain is installed here, so RUSTC_BOOTSTRAP=1 lets stable rustc accept
# them. Nothing else in the project uses it.
#
# Builds: the six parser targets (socks_args, socks_handshake, server_env, extor_client,
# delivery_request, delivery_response) link
# the water-pt library without its `runtime` feature, so they do not compile wasmtime and build
# in a couple of minutes. wasi_guest_memory drives a real wasmtime instance (the fuzz crate's
# `wasi` feature); an instrumented build of wasmtime and cranelift takes half an hour or more on
# two cores, once, after which every run reuses it.
#
# Full mode: optimised builds under AddressSanitizer, 600 s per target.
# CI mode (FUZZ_CI=1): 30 s per target, unoptimised builds without a sanitizer (debug
# assertions and overflow checks stay on). Unoptimised, even the instrumented wasmtime builds in
# about 3 min, so CI can afford every target; the fuzzer runs slower (~75 runs/s for the WASI
# target), which 30 s of coverage-guided search from the corpus tolerates.
# Environment knobs:
#   FUZZ_CI=1            cheap mode, as above
#   FUZZ_SANITIZER=name  sanitizer for every target (address in full mode, none in CI mode)
#   FUZZ_DEV=0|1         unoptimised build (0 in full mode, 1 in CI mode)
#   FUZZ_ARGS="..."      extra libFuzzer arguments (e.g. "-jobs=2 -workers=2")
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTC_BOOTSTRAP=1
# Known false leak reports (see the file); other leaks still fail the run.
export LSAN_OPTIONS="suppressions=$PWD/fuzz/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"

if ! cargo fuzz --help >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

ci="${FUZZ_CI:-0}"
default_seconds=600
[ "$ci" = 1 ] && default_seconds=30
seconds="${1:-$default_seconds}"
[ $# -gt 0 ] && shift
case "$seconds" in
    '' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a number, got '$seconds'" >&2; exit 2 ;;
esac

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

default_sanitizer=address
default_dev=0
[ "$ci" = 1 ] && default_sanitizer=none && default_dev=1
san="${FUZZ_SANITIZER:-$default_sanitizer}"
build_flags=(-s "$san")
profile=release
if [ "${FUZZ_DEV:-$default_dev}" = 1 ]; then
    build_flags+=(--dev)
    profile=dev
fi

# The cargo features a target needs (see fuzz/Cargo.toml).
features_for() {
    case "$1" in
        wasi_guest_memory) echo "--features=wasi" ;;
    esac
}

# Builds that differ in sanitizer or profile get separate target dirs, so switching between
# them never rebuilds everything from scratch.
dir="fuzz/target/$san-$profile"

failed=()
start_all=$(date +%s)
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/regressions/$t" "fuzz/artifacts/$t"
    echo "=== $t: building (sanitizer: $san, profile: $profile)" >&2
    t0=$(date +%s)
    # shellcheck disable=SC2046 # zero or one word
    cargo fuzz build "${build_flags[@]}" --target-dir "$dir" $(features_for "$t") "$t"
    t1=$(date +%s)
    echo "=== $t: built in $((t1 - t0)) s; fuzzing for $seconds s" >&2
    # shellcheck disable=SC2046,SC2086 # zero or one word; FUZZ_ARGS is a list of arguments
    if cargo fuzz run "${build_flags[@]}" --target-dir "$dir" $(features_for "$t") "$t" \
        "fuzz/corpus/$t" "fuzz/regressions/$t" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 \
        -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 ${FUZZ_ARGS:-}; then
        echo "=== $t: no crash in $seconds s" >&2
    else
        echo "=== $t: CRASH (see fuzz/artifacts/$t/)" >&2
        failed+=("$t")
    fi
done
echo "fuzz.sh: ${#targets[@]} target(s) in $(($(date +%s) - start_all)) s" >&2
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: crashed: ${failed[*]}" >&2
    exit 1
fi
