#!/usr/bin/env bash
# Browser tests of the built-in chat page and of the `EventSource` route: Debian's Chromium driven headless by playwright-core
# (from npm, pinned in package-lock.json) against the real binary. Three servers: a tiny
# random-weight Qwen3 with the real Qwen3 tokenizer (`kestrel synth`), open and with --api-key,
# and the real Qwen2.5-Coder-0.5B GGUF. Installs Chromium with apt-get if it is missing; uses
# KESTREL_BIN or builds the binary. Arguments go to `node --test` (e.g. --test-name-pattern stop).
#
# KESTREL_SCREENSHOT=1 also writes docs/webui.png (the page mid-answer, thinking panel open).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
fixtures="${KESTREL_FIXTURES:-$HOME/.cache/kestrel/fixtures}"
tokenizer="$fixtures/qwen3-tokenizer"
gguf="$fixtures/qwen2.5-coder-0.5b-instruct.gguf"
bin="${KESTREL_BIN:-}"
export CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"

if [ ! -x "$CHROMIUM_BIN" ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
[ -f "$tokenizer/tokenizer.json" ] && [ -f "$gguf" ] || "$root/scripts/fetch-fixtures.sh" >/dev/null
if [ -z "$bin" ]; then
    (cd "$root" && cargo build --release --locked -p kestrel)
    bin="$root/target/release/kestrel"
fi
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
"$bin" synth --size tiny --dtype f32 --seed 7 --out "$work/model" --tokenizer "$tokenizer" >/dev/null

free_port() {
    node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
}

# Starts a server and prints its base URL once /health answers 200 (polled, no fixed waits).
start_server() {
    local port log
    port="$(free_port)"
    log="$work/server-$port.log"
    "$bin" serve --port "$port" "$@" >"$log" 2>&1 &
    pids+=("$!")
    for _ in $(seq 1 600); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ]; then
            echo "http://127.0.0.1:$port/"
            return 0
        fi
        if ! kill -0 "${pids[-1]}" 2>/dev/null; then
            echo "the server exited:" >&2
            cat "$log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "the server did not become healthy:" >&2
    cat "$log" >&2
    return 1
}

# Not in $(...): the server must be a child of this shell so cleanup can stop it.
tiny=(--model "$work/model" --served-model-name qwen3-tiny --max-model-len 4096 --kv-cache-memory 64MiB)
start_server "${tiny[@]}" >"$work/url"
KESTREL_URL="$(cat "$work/url")"
export KESTREL_API_KEY="browser-test-key"
start_server "${tiny[@]}" --api-key "$KESTREL_API_KEY" >"$work/url"
KESTREL_KEYED_URL="$(cat "$work/url")"
start_server --model "$gguf" --served-model-name qwen2.5-coder-0.5b-instruct \
    --max-model-len 2048 --kv-cache-memory 256MiB >"$work/url"
KESTREL_REAL_URL="$(cat "$work/url")"
export KESTREL_URL KESTREL_KEYED_URL KESTREL_REAL_URL
export KESTREL_DOCS="$root/docs"

cd "$here"
node --test --test-concurrency=1 --test-reporter=spec "$@" webui.test.mjs eventsource.test.mjs
