#!/usr/bin/env bash
# Structured-output benchmark: decode tok/s of the real Qwen2.5-Coder-0.5B GGUF with and
# without a JSON schema (`response_format: json_schema`), at 1 and STREAMS concurrent streams
# (scripts/bench/structured.py). The issue's bar: the constrained run within 10 % of the free
# one. Run it on an otherwise idle machine; record the table in docs/benchmarks.md.
#
# Environment (defaults): STREAMS (8), ROUNDS (3), MAX_TOKENS (128), THREADS (2), PORT (8132),
# KESTREL_BIN (target/release/kestrel, built if absent), KESTREL_FIXTURES,
# OUT (target/bench-structured/<time>).
set -euo pipefail
cd "$(dirname "$0")/.."

FIX="${KESTREL_FIXTURES:-$HOME/.cache/kestrel/fixtures}"
GGUF="$FIX/qwen2.5-coder-0.5b-instruct.gguf"
THREADS="${THREADS:-2}"
OUT="${OUT:-target/bench-structured/$(date +%Y%m%d-%H%M%S)}"
KESTREL="${KESTREL_BIN:-target/release/kestrel}"
export STREAMS="${STREAMS:-8}" ROUNDS="${ROUNDS:-3}" MAX_TOKENS="${MAX_TOKENS:-128}"
export HOST=127.0.0.1 PORT="${PORT:-8132}"

mkdir -p "$OUT"
[[ -f "$GGUF" ]] || ./scripts/fetch-fixtures.sh >&2
if [[ -z "${KESTREL_BIN:-}" ]]; then
    cargo build --release --locked -p kestrel
fi

"$KESTREL" serve --model "$GGUF" --port "$PORT" --threads "$THREADS" \
    --max-model-len 2048 --kv-cache-memory 1GiB --max-num-seqs "$STREAMS" >"$OUT/serve.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; true' EXIT
for _ in $(seq 1 600); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/ready")" = 200 ]] && break
    kill -0 "$server" || { cat "$OUT/serve.log" >&2; exit 1; }
    sleep 0.2
done
python3 scripts/bench/structured.py "$OUT/structured.json"
echo "raw numbers: $OUT/structured.json" >&2
