#!/usr/bin/env bash
# CPU speed, kestrel vs llama.cpp, one machine, one run, the same GGUF files and threads:
# random-weight Qwen3 GGUFs written by `kestrel synth` (F16), quantized to Q8_0 and Q4_K_M by
# llama.cpp's own quantizer; decode tok/s (128 tokens after a 32-token prompt) and prefill
# tok/s (512-token prompt), median of $RUNS runs; decode as a fraction of the bandwidth
# roofline (weight bytes per token / measured read bandwidth); kestrel's load-to-ready time.
#
#   ./scripts/bench-cpu.sh                       # 1.7B and 0.6B, q4_k_m q8_0 f16
#   SIZES=1.7b QUANTS=q4_k_m RUNS=5 THREADS=2 ./scripts/bench-cpu.sh
#
# llama.cpp comes from PyPI (llama-cpp-python, pinned below; the first install compiles it,
# about 35 minutes on 2 cores) into $LLAMA_CPP_VENV (default target/bench-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
export THREADS="${THREADS:-$(nproc)}" SIZES="${SIZES:-1.7b 0.6b}" QUANTS="${QUANTS:-q4_k_m q8_0 f16}"
export RUNS="${RUNS:-3}" BENCH_DIR="${BENCH_DIR:-target/bench-cpu}"
venv="${LLAMA_CPP_VENV:-target/bench-venv}"
fixtures="${KESTREL_FIXTURES:-$HOME/.cache/kestrel/fixtures}"

if ! "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install "llama-cpp-python==0.3.36"
fi
[ -f "$fixtures/qwen3-tokenizer/tokenizer.json" ] || ./scripts/fetch-fixtures.sh >/dev/null
cargo build --release -q -p kestrel
cargo build --release -q -p kestrel-backend --example membw
mkdir -p "$BENCH_DIR"
KESTREL_BIN=target/release/kestrel MEMBW_BIN=target/release/examples/membw \
    TOKENIZER_DIR="$fixtures/qwen3-tokenizer" "$venv/bin/python" scripts/bench/cpu_speed.py
