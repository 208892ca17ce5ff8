#!/usr/bin/env bash
# kestrel against an earlier kestrel: prefill tok/s (512-token prompt) and decode tok/s (128
# tokens after a 32-token prompt) of two binaries on the same random-weight Qwen3 GGUFs (F16
# written by `kestrel synth`, Q8_0 and Q4_K by `kestrel quantize`), greedy, runs alternating
# between the binaries so that the machine's drift hits both; median of $RUNS.
#
#   BEFORE_BIN=/path/to/old/kestrel ./scripts/bench-ab.sh
#   BEFORE_BIN=... AFTER_ARGS="--batch-invariant off" SIZES=1.7b QUANTS="q4_k q8_0 f16" ./scripts/bench-ab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BEFORE_BIN:?set BEFORE_BIN to the kestrel binary to compare against}"
export BEFORE_BIN AFTER_BIN="${AFTER_BIN:-target/release/kestrel}"
export THREADS="${THREADS:-$(nproc)}" SIZES="${SIZES:-1.7b}" QUANTS="${QUANTS:-q4_k q8_0 f16}"
export RUNS="${RUNS:-3}" BENCH_DIR="${BENCH_DIR:-target/bench-ab}"
fixtures="${KESTREL_FIXTURES:-$HOME/.cache/kestrel/fixtures}"
[ -f "$fixtures/qwen3-tokenizer/tokenizer.json" ] || ./scripts/fetch-fixtures.sh >/dev/null
[ "$AFTER_BIN" != target/release/kestrel ] || cargo build --release -q -p kestrel
mkdir -p "$BENCH_DIR"
TOKENIZER_DIR="$fixtures/qwen3-tokenizer" python3 scripts/bench/ab_speed.py
