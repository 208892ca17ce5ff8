#!/usr/bin/env bash
# Runs every fuzz target (crates/kestrel-fuzz) for a time budget each on the stable toolchain,
# built with the test profile (optimized, with overflow checks and debug assertions, so integer
# overflow is a crash). Crash inputs go to target/fuzz-crashes/; replay one with
#   cargo run --profile test -p kestrel-fuzz -- --repro FILE TARGET
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [kestrel-fuzz flags and targets...]
# `cargo test` runs the same targets for 3 s each (KESTREL_FUZZ_SECS to change).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
cargo run --locked --profile test -p kestrel-fuzz --bin kestrel-fuzz -- \
    --secs "$secs" --crash-dir target/fuzz-crashes "$@"
