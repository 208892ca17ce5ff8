#!/usr/bin/env bash
# Fetches the registry-hosted Qwen2.5-Coder-0.5B-Instruct GGUF if it is missing, builds kestrel
# and serves it on http://127.0.0.1:8000 (OpenAI-compatible API). Arguments go to `kestrel serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="$(./scripts/fetch-fixtures.sh | tail -n 1)"
cargo build --release --locked -p kestrel
exec ./target/release/kestrel serve --model "$dir/qwen2.5-coder-0.5b-instruct.gguf" \
    --served-model-name qwen2.5-coder-0.5b-instruct "$@"
