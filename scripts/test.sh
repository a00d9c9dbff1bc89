#!/usr/bin/env bash
# Sets up a fresh machine and runs the whole test suite: the committed WATMs
# are rebuilt and compared byte for byte, then every unit and integration
# test runs, including the end-to-end ones with a real tor.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/build-watm.sh --check
# The modules' own unit tests (transforms, config parsing, the SDK), built for this host.
cargo test --manifest-path watm/Cargo.toml
cargo test
