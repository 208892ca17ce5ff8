#!/usr/bin/env bash
# Response-cache benchmark: the real Qwen2.5-Coder-0.5B GGUF served three times, with the cache
# off, in memory, and in Redis (Debian's redis-server, started here on a loopback port), each
# asked the same 100 greedy chat requests drawn from 20 distinct questions, one at a time over
# one keep-alive connection (scripts/bench/response_cache.py). Prints mean / p50 / p95 latency,
# the hit rate, the p95 of hits and of misses, and checks that every mode gave every question
# the same answer.
#
# Environment (defaults): REQUESTS (100), QUESTIONS (20), MAX_TOKENS (32), THREADS (2),
# SEED (0), PORT (8131), KESTREL_BIN (target/release/kestrel, built if absent),
# KESTREL_FIXTURES, OUT (target/bench-response-cache/<time>).
set -euo pipefail
cd "$(dirname "$0")/.."

FIX="${KESTREL_FIXTURES:-$HOME/.cache/kestrel/fixtures}"
GGUF="$FIX/qwen2.5-coder-0.5b-instruct.gguf"
THREADS="${THREADS:-2}"
PORT="${PORT:-8131}"
OUT="${OUT:-target/bench-response-cache/$(date +%Y%m%d-%H%M%S)}"
KESTREL="${KESTREL_BIN:-target/release/kestrel}"
export REQUESTS="${REQUESTS:-100}" QUESTIONS="${QUESTIONS:-20}" MAX_TOKENS="${MAX_TOKENS:-32}"
export SEED="${SEED:-0}" HOST=127.0.0.1 PORT

mkdir -p "$OUT"
log() { echo "[bench-response-cache $(date +%H:%M:%S)] $*" >&2; }

[[ -f "$GGUF" ]] || ./scripts/fetch-fixtures.sh >&2
./scripts/ensure-redis.sh
if [[ -z "${KESTREL_BIN:-}" ]]; then
    cargo build --release --locked -p kestrel
fi

server=""
redis=""
cleanup() {
    [[ -n "$server" ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    [[ -n "$redis" ]] && kill "$redis" 2>/dev/null && wait "$redis" 2>/dev/null
    true
}
trap cleanup EXIT

redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    >"$OUT/redis.log" 2>&1 &
redis=$!
for _ in $(seq 1 100); do
    redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
done

for mode in off memory redis; do
    case "$mode" in
    off) cache=() ;;
    memory) cache=(--response-cache memory) ;;
    redis) cache=(--response-cache "redis://127.0.0.1:$redis_port/0") ;;
    esac
    log "serving with the cache $mode"
    "$KESTREL" serve --model "$GGUF" --port "$PORT" --threads "$THREADS" \
        --max-model-len 2048 --kv-cache-memory 1GiB "${cache[@]}" >"$OUT/serve-$mode.log" 2>&1 &
    server=$!
    for _ in $(seq 1 600); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/ready")" = 200 ]] && break
        kill -0 "$server" || { cat "$OUT/serve-$mode.log" >&2; exit 1; }
        sleep 0.2
    done
    python3 scripts/bench/response_cache.py "$OUT/$mode.json"
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=""
done

python3 - "$OUT" <<'PY'
import json, math, statistics, sys

out = sys.argv[1]
def p(values, q):
    """Nearest-rank percentile, in ms."""
    if not values:
        return float("nan")
    s = sorted(values)
    return 1000 * s[max(0, math.ceil(q / 100 * len(s)) - 1)]

runs = {m: json.load(open(f"{out}/{m}.json")) for m in ["off", "memory", "redis"]}
print(f"| cache | requests | hit rate | mean ms | p50 ms | p95 ms | hits p50 ms | hits p95 ms | misses p95 ms |")
print("|---|---|---|---|---|---|---|---|---|")
for mode, records in runs.items():
    lat = [r["latency_s"] for r in records]
    hits = [r["latency_s"] for r in records if r["cache"] == "hit"]
    misses = [r["latency_s"] for r in records if r["cache"] != "hit"]
    print(f"| {mode} | {len(records)} | {len(hits) / len(records):.0%} | "
          f"{1000 * statistics.mean(lat):.1f} | {p(lat, 50):.1f} | {p(lat, 95):.1f} | "
          f"{p(hits, 50):.2f} | {p(hits, 95):.2f} | {p(misses, 95):.1f} |")
answers = {}
for mode, records in runs.items():
    for r in records:
        answers.setdefault(r["question"], set()).add(r["answer"])
differ = [q for q, a in answers.items() if len(a) > 1]
print(f"\nquestions whose answers differ between or within modes: {len(differ)} of {len(answers)}")
sys.exit(1 if differ else 0)
PY
log "results in $OUT"
