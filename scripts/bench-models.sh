#!/usr/bin/env bash
# The article's comparison of small models on one machine: random-weight GGUFs with the real
# shapes of Qwen3-1.7B, Qwen1.5-1.8B, Llama-3.2-1B and Phi-3-mini (written by `kestrel synth` in
# F16, quantized to Q4_K_M by llama.cpp's own `llama-quantize`), each served by `kestrel serve`
# and by native `llama-server` on the same file with the same threads. One streamed chat request
# per engine and model with the article's question (greedy, EOS ignored, so every engine writes
# the same number of tokens): TTFT, decode tok/s and total time; then the readable-latency table,
# the time until the first 30, 100 and 300 characters of the answer are on screen. Random weights
# give random text, but the shapes (and so the speed) are the real models'.
#
#   ./scripts/bench-models.sh
#   MODELS="qwen3-1.7b qwen1.5-1.8b" THREADS=2 MAX_TOKENS=64 ./scripts/bench-models.sh
#   QUESTION="..." ./scripts/bench-models.sh
#
# A model whose architecture `kestrel synth` cannot write yet is reported as such, not skipped
# silently. Native llama.cpp is built once by scripts/bench/llama-cpp-native.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export THREADS="${THREADS:-$(nproc)}"
export MODELS="${MODELS:-qwen3-1.7b qwen1.5-1.8b llama-3.2-1b phi-3-mini}"
export MAX_TOKENS="${MAX_TOKENS:-256}" BENCH_DIR="${BENCH_DIR:-target/bench-models}"
fixtures="${KESTREL_FIXTURES:-$HOME/.cache/kestrel/fixtures}"

LLAMA_BIN="$(./scripts/bench/llama-cpp-native.sh)"
export LLAMA_BIN
[ -f "$fixtures/qwen3-tokenizer/tokenizer.json" ] || ./scripts/fetch-fixtures.sh >/dev/null
if [ -z "${KESTREL_BIN:-}" ]; then
    cargo build --release -q -p kestrel
    KESTREL_BIN=target/release/kestrel
fi
mkdir -p "$BENCH_DIR"
echo "command: MODELS=\"$MODELS\" THREADS=$THREADS MAX_TOKENS=$MAX_TOKENS ./scripts/bench-models.sh"
KESTREL_BIN="$KESTREL_BIN" TOKENIZER_DIR="$fixtures/qwen3-tokenizer" \
    python3 scripts/bench/models_speed.py
