#!/usr/bin/env bash
# CPU speed, kestrel vs native llama.cpp, one machine, one run, the same GGUF files and threads:
# random-weight Qwen3 GGUFs written by `kestrel synth` (F16), quantized to Q8_0 and Q4_K_M by
# llama.cpp's own `llama-quantize`; decode tok/s (kestrel: 128 tokens after a 32-token prompt;
# llama-bench: tg128) and prefill tok/s (512-token prompt; llama-bench: pp512), median of $RUNS
# runs; decode as a fraction of the bandwidth roofline (file bytes per token / measured read
# bandwidth); kestrel's load-to-ready time. Prints the CPU's flags, the kernels each engine uses
# and, with MEMORY=1, both servers' peak RSS after one request.
#
#   ./scripts/bench-cpu.sh                       # 1.7B and 0.6B, q4_k_m q8_0 f16
#   SIZES=1.7b QUANTS=q4_k_m RUNS=5 THREADS=2 ./scripts/bench-cpu.sh
#   KESTREL_ISAS="auto avx2" MEMORY=1 ./scripts/bench-cpu.sh   # also the AVX2 path; memory
#   PYTHON_PEER=1 ./scripts/bench-cpu.sh         # also llama-cpp-python (compiles ~35 min once)
#
# Native llama.cpp is built once by scripts/bench/llama-cpp-native.sh (GGML_NATIVE=ON).
set -euo pipefail
cd "$(dirname "$0")/.."
export THREADS="${THREADS:-$(nproc)}" SIZES="${SIZES:-1.7b 0.6b}" QUANTS="${QUANTS:-q4_k_m q8_0 f16}"
export RUNS="${RUNS:-3}" BENCH_DIR="${BENCH_DIR:-target/bench-cpu}"
fixtures="${KESTREL_FIXTURES:-$HOME/.cache/kestrel/fixtures}"

LLAMA_BIN="$(./scripts/bench/llama-cpp-native.sh)"
export LLAMA_BIN
if [ "${PYTHON_PEER:-}" = 1 ]; then
    venv="${LLAMA_CPP_VENV:-target/bench-venv}"
    if ! "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install "llama-cpp-python==0.3.36"
    fi
    export PYTHON_PEER="$venv/bin/python"
else
    export PYTHON_PEER=""
fi
[ -f "$fixtures/qwen3-tokenizer/tokenizer.json" ] || ./scripts/fetch-fixtures.sh >/dev/null
cargo build --release -q -p kestrel
cargo build --release -q -p kestrel-backend --example membw
mkdir -p "$BENCH_DIR"
KESTREL_BIN="${KESTREL_BIN:-target/release/kestrel}" MEMBW_BIN=target/release/examples/membw \
    TOKENIZER_DIR="$fixtures/qwen3-tokenizer" python3 scripts/bench/cpu_speed.py
