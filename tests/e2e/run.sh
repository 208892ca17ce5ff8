#!/usr/bin/env bash
# End-to-end: the real binary serving the real GGUF, exercised with the `openai`,
# `langchain-openai` and `huggingface_hub` (TGI's API) clients from PyPI. Makes its own venv;
# fetches the fixtures if missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
fixtures="${KESTREL_FIXTURES:-$HOME/.cache/kestrel/fixtures}"
gguf="$fixtures/qwen2.5-coder-0.5b-instruct.gguf"
port="${KESTREL_E2E_PORT:-18000}"
venv="${KESTREL_E2E_VENV:-$root/target/e2e-venv}"
bin="${KESTREL_BIN:-}"

[ -f "$gguf" ] || "$root/scripts/fetch-fixtures.sh"
if [ -z "$bin" ]; then
    (cd "$root" && cargo build --release -p kestrel)
    bin="$root/target/release/kestrel"
fi
if [ ! -x "$venv/bin/pytest" ] || ! "$venv/bin/python" -c "import huggingface_hub" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q openai==3.57.0 langchain-openai==1.7.4 langchain-core==1.8.3 pytest==9.2.0 huggingface_hub==2.4.0
fi

"$bin" serve --model "$gguf" --served-model-name qwen --port "$port" --kv-cache-memory 1GiB &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ] && break
    kill -0 "$server" || { echo "the server exited" >&2; exit 1; }
    sleep 0.2
done
KESTREL_BASE_URL="http://127.0.0.1:$port/v1" KESTREL_MODEL=qwen "$venv/bin/pytest" -v -s "$root/tests/e2e" "$@"
