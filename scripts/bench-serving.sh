#!/usr/bin/env bash
# Serving benchmark: kestrel against llama.cpp's server (PyPI llama-cpp-python, `python -m
# llama_cpp.server`) on the same GGUF files, same threads, same context, same requests, one
# server at a time. Measured with `kestrel bench` (crates/kestrel-bench).
#
# Models:
#   - the real Qwen2.5-Coder-0.5B-Instruct GGUF from scripts/fetch-fixtures.sh;
#   - a random-weight Qwen3-1.7B Q4_K_M: `kestrel synth` writes F16 GGUF with the Qwen3
#     tokenizer, llama.cpp's quantizer (llama_model_quantize from llama-cpp-python) makes Q4_K_M.
# Runs per model and server:
#   - short / medium / long answers (builtin questions, max_tokens 10 / 30 / 90), concurrency 1;
#   - a concurrency sweep 1 / 4 / 16 on the medium class.
# Every request asks for greedy decoding and forbids the end tokens (`ignore_eos` for kestrel,
# the same `logit_bias` for both), so every answer runs to max_tokens on both servers.
# llama-cpp-python streams no `usage`, so its output tokens are counted with the GGUF's own
# tokenizer (`--tokenizer`); kestrel reports `usage`.
#
# Prints the tables at the end; all JSON/HTML reports and server logs go to $OUT.
# Environment (defaults): THREADS (2), N_CTX (4096), PORT (8123), PER_CLASS (4 prompts per answer
# class), SWEEP (1,4,16), SWEEP_PROMPTS (4,8,16), SWEEP_CLASS (medium), MODELS, SERVERS,
# KESTREL_BIN (target/release/kestrel, built if absent), LLAMA_PY (/opt/llamacpp/bin/python),
# KESTREL_FIXTURES, BENCH_MODELS ($HOME/.cache/kestrel/bench), OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

FIX="${KESTREL_FIXTURES:-$HOME/.cache/kestrel/fixtures}"
MODEL_DIR="${BENCH_MODELS:-$HOME/.cache/kestrel/bench}"
LLAMA_PY="${LLAMA_PY:-/opt/llamacpp/bin/python}"
THREADS="${THREADS:-2}"
N_CTX="${N_CTX:-4096}"
PORT="${PORT:-8123}"
PER_CLASS="${PER_CLASS:-4}"
SWEEP="${SWEEP:-1,4,16}"
SWEEP_PROMPTS="${SWEEP_PROMPTS:-4,8,16}"
SWEEP_CLASS="${SWEEP_CLASS:-medium}"
MODELS="${MODELS:-qwen2.5-coder-0.5b qwen3-1.7b-q4_k_m}"
SERVERS="${SERVERS:-kestrel llama.cpp}"
OUT="${OUT:-target/bench-serving/$(date +%Y%m%d-%H%M%S)}"
KESTREL="${KESTREL_BIN:-target/release/kestrel}"
# Greedy; token ids 151643 <|endoftext|> and 151645 <|im_end|> are the end tokens of Qwen2.5 and Qwen3.
EXTRA='{"temperature": 0, "logit_bias": {"151643": -100, "151645": -100}}'

mkdir -p "$OUT" "$MODEL_DIR"
log() { echo "[bench-serving $(date +%H:%M:%S)] $*" >&2; }

if [[ -z "${KESTREL_BIN:-}" ]]; then
    cargo build --release --locked -p kestrel
fi
"$LLAMA_PY" -c 'import llama_cpp.server.app, uvicorn, sse_starlette' 2>/dev/null || {
    echo "llama-cpp-python's server extras are missing; install them with:" >&2
    echo "  $LLAMA_PY -m pip install fastapi uvicorn sse-starlette starlette-context pydantic-settings" >&2
    exit 1
}

model_path() {
    case "$1" in
    qwen2.5-coder-0.5b)
        [[ -f "$FIX/qwen2.5-coder-0.5b-instruct.gguf" ]] || ./scripts/fetch-fixtures.sh >&2
        echo "$FIX/qwen2.5-coder-0.5b-instruct.gguf"
        ;;
    qwen3-1.7b-q4_k_m)
        local q="$MODEL_DIR/qwen3-1.7b-q4_k_m.gguf" f="$MODEL_DIR/qwen3-1.7b-f16.gguf"
        if [[ ! -f "$q" ]]; then
            [[ -d "$FIX/qwen3-tokenizer" ]] || ./scripts/fetch-fixtures.sh >&2
            log "synthesizing random-weight Qwen3-1.7B (F16 GGUF) and quantizing to Q4_K_M"
            "$KESTREL" synth --size 1.7b --dtype f16 --format gguf \
                --tokenizer "$FIX/qwen3-tokenizer" --out "$f" >&2
            "$LLAMA_PY" scripts/bench/quantize.py "$f" "$q.tmp" q4_k_m >&2
            rm -f "$f"
            mv "$q.tmp" "$q"
        fi
        echo "$q"
        ;;
    *) echo "unknown model $1" >&2; exit 1 ;;
    esac
}

SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap stop_server EXIT

start_server() { # server gguf logfile
    case "$1" in
    kestrel)
        RAYON_NUM_THREADS="$THREADS" "$KESTREL" serve --model "$2" --served-model-name bench \
            --host 127.0.0.1 --port "$PORT" --max-model-len "$N_CTX" >"$3" 2>&1 &
        SERVER_PID=$!
        local ready="http://127.0.0.1:$PORT/health"
        ;;
    llama.cpp)
        # --interrupt_requests False: by default a new request aborts the one streaming.
        "$LLAMA_PY" -m llama_cpp.server --model "$2" --model_alias bench \
            --n_threads "$THREADS" --n_threads_batch "$THREADS" --n_ctx "$N_CTX" \
            --host 127.0.0.1 --port "$PORT" --interrupt_requests False --verbose False >"$3" 2>&1 &
        SERVER_PID=$!
        local ready="http://127.0.0.1:$PORT/v1/models"
        ;;
    esac
    for _ in $(seq 600); do
        if curl -sf "$ready" >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "$1 exited while loading; its log:" >&2
            tail -20 "$3" >&2
            exit 1
        fi
        sleep 0.5
    done
    echo "$1 did not become ready in 300 s" >&2
    exit 1
}

bench() { # gguf label json [args...]
    local gguf="$1" label="$2" json="$3"
    shift 3
    "$KESTREL" bench --base-url "http://127.0.0.1:$PORT" --model bench --dataset builtin \
        --ignore-eos --extra-body "$EXTRA" --tokenizer "$gguf" --warmup 1 --seed 0 \
        --timeout-s 900 --no-progress --label "$label" --output "$json" "$@" >/dev/null
}

{
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "kestrel: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' + uncommitted changes')"
    echo "llama-cpp-python: $("$LLAMA_PY" -c 'import llama_cpp; print(llama_cpp.__version__)')"
    echo "threads $THREADS, n_ctx $N_CTX, $PER_CLASS prompts per answer class, sweep $SWEEP with $SWEEP_PROMPTS prompts ($SWEEP_CLASS)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/setup.txt"

for model in $MODELS; do
    gguf="$(model_path "$model")"
    for server in $SERVERS; do
        log "$server serving $model"
        start_server "$server" "$gguf" "$OUT/$server-$model.log"
        for class in short medium long; do
            log "  $class answers"
            bench "$gguf" "$server|$model|$class" "$OUT/$server-$model-$class.json" \
                --class "$class" --concurrency 1 --num-prompts "$PER_CLASS"
        done
        log "  concurrency sweep $SWEEP"
        bench "$gguf" "$server|$model|sweep" "$OUT/$server-$model-sweep.json" \
            --class "$SWEEP_CLASS" --skip-prompts "$PER_CLASS" \
            --concurrency "$SWEEP" --num-prompts "$SWEEP_PROMPTS" \
            --report "$OUT/$server-$model-sweep.html"
        stop_server
    done
done

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg) (the benchmark itself keeps about 2 busy)" >>"$OUT/setup.txt"
python3 - "$OUT" <<'EOF' | tee "$OUT/tables.md"
import glob, json, os, sys

out = sys.argv[1]
reports = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "*.json")))]
def f(v, d=1):
    return "-" if v is None else f"{v:.{d}f}"

rows = {}
for r in reports:
    server, model, kind = r["label"].split("|")
    for run in r["runs"]:
        rows[(model, server, kind, run["spec"]["max_concurrency"])] = run
models = sorted({k[0] for k in rows})
servers = sorted({k[1] for k in rows}, key=lambda s: (s != "kestrel", s))

print(open(os.path.join(out, "setup.txt")).read())
print("### Answer length (concurrency 1)\n")
print("| model | server | answer | tokens/answer | TTFT p50 ms | TTFT p95 ms | decode tok/s | answer tok/s | total latency p50 ms | total latency p95 ms | failed |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for model in models:
    for cls in ["short", "medium", "long"]:
        for server in servers:
            run = rows.get((model, server, cls, 1))
            if run is None:
                continue
            m = run["metrics"]
            tpot = m["tpot_ms"]["p50"]
            print(f"| {model} | {server} | {cls} | {f(m['output_tokens_per_request']['p50'], 0)} | "
                  f"{f(m['ttft_ms']['p50'])} | {f(m['ttft_ms']['p95'])} | "
                  f"{f(1000 / tpot if tpot else None)} | {f(m['request_tok_per_s']['p50'])} | "
                  f"{f(m['e2e_ms']['p50'])} | {f(m['e2e_ms']['p95'])} | {m['num_errors']} |")
print()
print("decode tok/s = 1000 / TPOT p50 (after the first token); answer tok/s = tokens / total latency, p50 over requests.\n")
print("### Concurrency sweep\n")
print("| model | server | concurrency | requests | output tok/s | req/s | TTFT p50 ms | TTFT p95 ms | TPOT p50 ms | total latency p50 ms | total latency p95 ms | failed |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for model in models:
    for server in servers:
        for key in sorted(k for k in rows if k[:3] == (model, server, "sweep")):
            run = rows[key]
            m = run["metrics"]
            print(f"| {model} | {server} | {key[3]} | {m['num_requests']} | {f(m['output_tok_per_s'])} | "
                  f"{f(m['requests_per_s'], 2)} | {f(m['ttft_ms']['p50'])} | {f(m['ttft_ms']['p95'])} | "
                  f"{f(m['tpot_ms']['p50'])} | {f(m['e2e_ms']['p50'])} | {f(m['e2e_ms']['p95'])} | {m['num_errors']} |")
print()
if "kestrel" in servers and len(servers) > 1:
    peer = [s for s in servers if s != "kestrel"][0]
    print(f"### kestrel against {peer} (above 1: kestrel is better)\n")
    print(f"| model | run | output tok/s, kestrel ÷ {peer} | TTFT p50, {peer} ÷ kestrel | total latency p50, {peer} ÷ kestrel |")
    print("|---|---|---|---|---|")
    for model in models:
        keys = sorted({k[2:] for k in rows if k[0] == model and k[1] == "kestrel"},
                      key=lambda k: (["short", "medium", "long", "sweep"].index(k[0]), k[1] or 0))
        for kind, c in keys:
            a, b = rows.get((model, "kestrel", kind, c)), rows.get((model, peer, kind, c))
            if not a or not b:
                continue
            a, b = a["metrics"], b["metrics"]
            ratio = lambda x, y: f"{x / y:.2f}x" if x and y else "-"
            name = kind if kind != "sweep" else f"concurrency {c}"
            print(f"| {model} | {name} | {ratio(a['output_tok_per_s'], b['output_tok_per_s'])} | "
                  f"{ratio(b['ttft_ms']['p50'], a['ttft_ms']['p50'])} | {ratio(b['e2e_ms']['p50'], a['e2e_ms']['p50'])} |")
    print()
sources = sorted({(r["label"].split("|")[0], run["metrics"]["token_source"]) for r in reports for run in r["runs"]})
print("Output tokens counted from: " + ", ".join(f"{s}: {t}" for s, t in sources) + ".")
errs = [(r["label"], run["spec"]["max_concurrency"], run["metrics"]["errors"]) for r in reports for run in r["runs"] if run["metrics"]["num_errors"]]
for label, c, e in errs:
    print(f"- {label} concurrency {c}: failures {e}")
EOF
log "reports in $OUT"
