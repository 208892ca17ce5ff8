#!/usr/bin/env bash
# Fetches the registry-hosted Qwen2.5-Coder-0.5B-Instruct GGUF if it is missing, builds
# kestrel and runs it on that model. Arguments go to `kestrel generate` (default: a question).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="$(./scripts/fetch-fixtures.sh | tail -n 1)"
cargo build --release --locked -p kestrel
if [ "$#" -eq 0 ]; then
  set -- --prompt "Write a Python function that adds two numbers."
fi
exec ./target/release/kestrel generate --model "$dir/qwen2.5-coder-0.5b-instruct.gguf" "$@"
