#!/usr/bin/env bash
# Serving benchmark: kestrel against llama.cpp's native `llama-server` (the strongest local peer:
# parallel slots, continuous batching) and llama.cpp's Python server (PyPI llama-cpp-python,
# `python -m llama_cpp.server`, one sequence at a time) on the same GGUF files, same threads, same
# context per request, same requests, one server at a time. Measured with `kestrel bench`
# (crates/kestrel-bench).
#
# Models:
#   - the real Qwen2.5-Coder-0.5B-Instruct GGUF from scripts/fetch-fixtures.sh;
#   - a random-weight Qwen3-1.7B Q4_K_M: `kestrel synth` writes F16 GGUF with the Qwen3
#     tokenizer, llama.cpp's quantizer makes Q4_K_M (the native `llama-quantize` built beside
#     llama-server, else llama_model_quantize from llama-cpp-python).
# Servers:
#   - kestrel: `kestrel serve`, default flags (the latency batching policy);
#   - llama-server: native llama.cpp built once by scripts/bench/llama-cpp-native.sh from the
#     pinned llama-cpp-python source distribution's vendored tree (CMake, about 10-20 minutes on
#     2 cores the first time); restarted for each level with `-np` equal to its concurrency,
#     continuous batching on (`-cb`), `-c` giving every slot N_CTX tokens, the GGUF's own chat
#     template (`--jinja`);
#   - llama-cpp-python: the Python server (`--interrupt_requests False`).
# Runs per model and server:
#   - short / medium / long answers (builtin questions, max_tokens 10 / 30 / 90), concurrency 1;
#   - a concurrency sweep 1 / 4 / 16 on the medium class, all requests of a level sent at once;
#   - a shared-prefix burst: one cold request with a ~1,000-token system prompt, then
#     PREFIX_BURST (15) simultaneous requests sharing it (mean TTFT of the burst vs the cold one);
#   - a Poisson arrival run near saturation: RATE requests/s (default RATE_FRACTION 0.8 of the
#     smaller concurrency-16 request rate of kestrel and llama-server in this run), max concurrency
#     POISSON_CONCURRENCY (16; llama-server gets as many slots).
# Every run reports goodput under the SLO TTFT <= SLO_TTFT_MS (2000) and TPOT <= SLO_TPOT_MS (150).
# Every request asks for greedy decoding and forbids the end tokens (`ignore_eos`, and the same
# `logit_bias` for all servers), so every answer runs to max_tokens on every server. Output tokens
# come from `usage` where a server streams it, else from the GGUF's own tokenizer (`--tokenizer`).
#
# Prints the tables at the end (kestrel's ratios to each peer included); all JSON/HTML reports
# and server logs go to $OUT.
# Environment (defaults): THREADS (2), N_CTX (4096), PORT (8123), PER_CLASS (4 prompts per answer
# class), SWEEP (1,4,16), SWEEP_PROMPTS (4,8,16), SWEEP_CLASS (medium), POISSON_PROMPTS (32),
# POISSON_CONCURRENCY (16), RATE (auto), RATE_FRACTION (0.8), SLO_TTFT_MS (2000), SLO_TPOT_MS
# (150), PREFIX_BURST (15), PREFIX_MAX_TOKENS (16), MODELS, SERVERS (kestrel llama-server
# llama-cpp-python), PARTS (lengths sweep burst poisson: which measurements run), KESTREL_BIN (target/release/kestrel, built if absent), LLAMA_SERVER_BIN
# (built by scripts/bench/llama-cpp-native.sh if absent), LLAMA_PY (/opt/llamacpp/bin/python),
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
POISSON_PROMPTS="${POISSON_PROMPTS:-32}"
POISSON_CONCURRENCY="${POISSON_CONCURRENCY:-16}"
RATE="${RATE:-auto}"
RATE_FRACTION="${RATE_FRACTION:-0.8}"
SLO_TTFT_MS="${SLO_TTFT_MS:-2000}"
SLO_TPOT_MS="${SLO_TPOT_MS:-150}"
PREFIX_BURST="${PREFIX_BURST:-15}"
PREFIX_MAX_TOKENS="${PREFIX_MAX_TOKENS:-16}"
MODELS="${MODELS:-qwen2.5-coder-0.5b qwen3-1.7b-q4_k_m}"
SERVERS="${SERVERS:-kestrel llama-server llama-cpp-python}"
PARTS="${PARTS:-lengths sweep burst poisson}"
OUT="${OUT:-target/bench-serving/$(date +%Y%m%d-%H%M%S)}"
KESTREL="${KESTREL_BIN:-target/release/kestrel}"
# Greedy; token ids 151643 <|endoftext|> and 151645 <|im_end|> are the end tokens of Qwen2.5 and Qwen3.
EXTRA='{"temperature": 0, "logit_bias": {"151643": -100, "151645": -100}}'

mkdir -p "$OUT" "$MODEL_DIR"
log() { echo "[bench-serving $(date +%H:%M:%S)] $*" >&2; }
has_server() { [[ " $SERVERS " == *" $1 "* ]]; }
has_part() { [[ " $PARTS " == *" $1 "* ]]; }

if [[ -z "${KESTREL_BIN:-}" ]]; then
    cargo build --release --locked -p kestrel
fi
if has_server llama-server; then
    LLAMA_SERVER="${LLAMA_SERVER_BIN:-$(./scripts/bench/llama-cpp-native.sh)/llama-server}"
    [[ -x "$LLAMA_SERVER" ]] || { echo "no llama-server at $LLAMA_SERVER" >&2; exit 1; }
fi
if has_server llama-cpp-python; then
    "$LLAMA_PY" -c 'import llama_cpp' 2>/dev/null || {
        echo "llama-cpp-python is missing at $LLAMA_PY (LLAMA_PY)" >&2
        exit 1
    }
fi
if has_server llama-cpp-python; then
    "$LLAMA_PY" -c 'import llama_cpp.server.app, uvicorn, sse_starlette' 2>/dev/null || {
        echo "llama-cpp-python's server extras are missing; install them with:" >&2
        echo "  $LLAMA_PY -m pip install fastapi uvicorn sse-starlette starlette-context pydantic-settings" >&2
        exit 1
    }
fi

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
            if [[ -n "${LLAMA_SERVER:-}" && -x "$(dirname "$LLAMA_SERVER")/llama-quantize" ]]; then
                "$(dirname "$LLAMA_SERVER")/llama-quantize" "$f" "$q.tmp" Q4_K_M >&2
            else
                "$LLAMA_PY" scripts/bench/quantize.py "$f" "$q.tmp" q4_k_m >&2
            fi
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

start_server() { # server gguf logfile [slots]
    local slots="${4:-1}"
    case "$1" in
    kestrel)
        RAYON_NUM_THREADS="$THREADS" "$KESTREL" serve --model "$2" --served-model-name bench \
            --host 127.0.0.1 --port "$PORT" --max-model-len "$N_CTX" >>"$3" 2>&1 &
        SERVER_PID=$!
        local ready="http://127.0.0.1:$PORT/health"
        ;;
    llama-server)
        # -c is shared by the slots: each gets N_CTX.
        "$LLAMA_SERVER" -m "$2" -a bench -t "$THREADS" -tb "$THREADS" \
            -c $((N_CTX * slots)) -np "$slots" -cb --jinja \
            --host 127.0.0.1 --port "$PORT" >>"$3" 2>&1 &
        SERVER_PID=$!
        local ready="http://127.0.0.1:$PORT/health"
        ;;
    llama-cpp-python)
        # --interrupt_requests False: by default a new request aborts the one streaming.
        "$LLAMA_PY" -m llama_cpp.server --model "$2" --model_alias bench \
            --n_threads "$THREADS" --n_threads_batch "$THREADS" --n_ctx "$N_CTX" \
            --host 127.0.0.1 --port "$PORT" --interrupt_requests False --verbose False >>"$3" 2>&1 &
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

bench() { # gguf label json warmup [args...]
    local gguf="$1" label="$2" json="$3" warmup="$4"
    shift 4
    "$KESTREL" bench --base-url "http://127.0.0.1:$PORT" --model bench \
        --ignore-eos --extra-body "$EXTRA" --tokenizer "$gguf" --warmup "$warmup" --seed 0 \
        --slo-ttft-ms "$SLO_TTFT_MS" --slo-tpot-ms "$SLO_TPOT_MS" \
        --timeout-s 900 --no-progress --label "$label" --output "$json" "$@" >/dev/null
}

# The shared-prefix burst's prompts: one cold request, then PREFIX_BURST sharing its system
# prompt (about 1,000 tokens of plain English) with a question of their own each.
python3 - "$OUT" "$PREFIX_BURST" "$PREFIX_MAX_TOKENS" <<'EOF'
import json, os, random, sys
out, burst, max_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(23)
words = ("the river city light house story music system school world garden road winter "
         "summer market letter window morning evening mountain forest harbor bridge station "
         "teacher doctor farmer painter writer engineer").split()
sentences = []
for _ in range(96):
    sentences.append(" ".join(rng.choice(words) for _ in range(9)).capitalize() + ".")
system = ("You are a careful assistant. Background notes follow; use them when relevant. "
          + " ".join(sentences))
questions = [f"In one sentence, what is item {i} about? Answer briefly." for i in range(burst + 1)]
def line(q):
    return json.dumps({"messages": [{"role": "system", "content": system},
                                    {"role": "user", "content": q}], "max_tokens": max_tokens})
open(os.path.join(out, "prefix-cold.jsonl"), "w").write(line(questions[0]) + "\n")
open(os.path.join(out, "prefix-burst.jsonl"), "w").write("".join(line(q) + "\n" for q in questions[1:]))
EOF

{
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "kestrel: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' + uncommitted changes')"
    if has_server llama-server; then echo "llama-server: $("$LLAMA_SERVER" --version 2>&1 | head -1)"; fi
    if has_server llama-cpp-python; then echo "llama-cpp-python: $("$LLAMA_PY" -c 'import llama_cpp; print(llama_cpp.__version__)')"; fi
    echo "threads $THREADS, n_ctx $N_CTX per request, $PER_CLASS prompts per answer class, sweep $SWEEP with $SWEEP_PROMPTS prompts ($SWEEP_CLASS)"
    echo "SLO: TTFT <= $SLO_TTFT_MS ms, TPOT <= $SLO_TPOT_MS ms; prefix burst: 1 cold + $PREFIX_BURST, $PREFIX_MAX_TOKENS tokens each"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/setup.txt"

IFS=, read -r -a levels <<<"$SWEEP"
IFS=, read -r -a level_prompts <<<"$SWEEP_PROMPTS"

# One server on one model: answer lengths, the sweep, the prefix burst.
run_server() { # server model gguf
    local server="$1" model="$2" gguf="$3" logf="$OUT/$1-$2.log"
    if [[ "$server" == llama-server ]]; then
        # Slots equal to the concurrency: one server per level, each level on the prompts a
        # one-call sweep gives it (the levels take consecutive slices).
        local i skip="$PER_CLASS"
        for i in "${!levels[@]}"; do
            local c="${levels[$i]}" n="${level_prompts[$i]:-${level_prompts[-1]}}"
            if ! has_part sweep && ! { has_part lengths && [[ "$c" == 1 ]]; }; then continue; fi
            log "$server serving $model, -np $c"
            start_server "$server" "$gguf" "$logf" "$c"
            if [[ "$c" == 1 ]] && has_part lengths; then answer_lengths "$server" "$model" "$gguf"; fi
            if has_part sweep; then
                bench "$gguf" "$server|$model|sweep" "$OUT/$server-$model-sweep-$c.json" 1 \
                    --dataset builtin --class "$SWEEP_CLASS" --skip-prompts "$skip" \
                    --concurrency "$c" --num-prompts "$n"
            fi
            skip=$((skip + n))
            stop_server
        done
        has_part burst || return 0
        log "$server serving $model, -np $((PREFIX_BURST + 1)), shared-prefix burst"
        start_server "$server" "$gguf" "$logf" "$((PREFIX_BURST + 1))"
    else
        log "$server serving $model"
        start_server "$server" "$gguf" "$logf"
        if has_part lengths; then answer_lengths "$server" "$model" "$gguf"; fi
        if has_part sweep; then
            log "  concurrency sweep $SWEEP"
            bench "$gguf" "$server|$model|sweep" "$OUT/$server-$model-sweep.json" 1 \
                --dataset builtin --class "$SWEEP_CLASS" --skip-prompts "$PER_CLASS" \
                --concurrency "$SWEEP" --num-prompts "$SWEEP_PROMPTS" \
                --report "$OUT/$server-$model-sweep.html"
        fi
        if ! has_part burst; then
            stop_server
            return 0
        fi
        log "  shared-prefix burst"
    fi
    # No warm-up: the cold request must find nothing cached.
    bench "$gguf" "$server|$model|prefix-cold" "$OUT/$server-$model-prefix-cold.json" 0 \
        --dataset "$OUT/prefix-cold.jsonl" --concurrency 1 --num-prompts 1
    bench "$gguf" "$server|$model|prefix-burst" "$OUT/$server-$model-prefix-burst.json" 0 \
        --dataset "$OUT/prefix-burst.jsonl" --concurrency "$PREFIX_BURST" --num-prompts "$PREFIX_BURST"
    stop_server
}

answer_lengths() { # server model gguf
    local class
    for class in short medium long; do
        log "  $class answers"
        bench "$3" "$1|$2|$class" "$OUT/$1-$2-$class.json" 1 \
            --dataset builtin --class "$class" --concurrency 1 --num-prompts "$PER_CLASS"
    done
}

for model in $MODELS; do
    gguf="$(model_path "$model")"
    for server in $SERVERS; do
        run_server "$server" "$model" "$gguf"
    done
    has_part poisson || continue
    # Poisson arrivals near saturation: the same rate for every server.
    rate="$RATE"
    if [[ "$rate" == auto ]]; then
        rate="$(python3 - "$OUT" "$model" "$RATE_FRACTION" <<'EOF'
import glob, json, os, sys
out, model, fraction = sys.argv[1], sys.argv[2], float(sys.argv[3])
best = {}
for p in glob.glob(os.path.join(out, "*.json")):
    r = json.load(open(p))
    server, m, kind = r["label"].split("|")
    if m != model or kind != "sweep" or server not in ("kestrel", "llama-server"):
        continue
    for run in r["runs"]:
        c = run["spec"]["max_concurrency"]
        if c is not None and c >= best.get(server, (0, 0))[0]:
            best[server] = (c, run["metrics"]["requests_per_s"])
rates = [v[1] for v in best.values() if v[1] > 0]
print(f"{fraction * min(rates):.3f}" if rates else "0.5")
EOF
)"
    fi
    echo "$model: Poisson rate $rate requests/s, $POISSON_PROMPTS requests, concurrency up to $POISSON_CONCURRENCY" >>"$OUT/setup.txt"
    for server in $SERVERS; do
        log "$server serving $model: Poisson arrivals at $rate requests/s"
        start_server "$server" "$gguf" "$OUT/$server-$model.log" "$POISSON_CONCURRENCY"
        bench "$gguf" "$server|$model|poisson" "$OUT/$server-$model-poisson.json" 1 \
            --dataset builtin --class "$SWEEP_CLASS" \
            --concurrency "$POISSON_CONCURRENCY" --num-prompts "$POISSON_PROMPTS" --request-rate "$rate"
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
order = ["kestrel", "llama-server", "llama-cpp-python"]
servers = sorted({k[1] for k in rows}, key=lambda s: (order.index(s) if s in order else 9, s))

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

def loaded_runs(model, server):
    """The sweep levels, then the Poisson run: (name, metrics)."""
    keys = sorted((k for k in rows if k[:3] == (model, server, "sweep")), key=lambda k: k[3] or 0)
    out = [(f"concurrency {k[3]}", rows[k]["metrics"]) for k in keys]
    for k in rows:
        if k[:3] == (model, server, "poisson"):
            spec = rows[k]["spec"]
            out.append((f"Poisson {spec.get('request_rate')} req/s", rows[k]["metrics"]))
    return out

print("### Under load: concurrency sweep (all requests at once) and Poisson arrivals\n")
print("| model | server | run | requests | output tok/s | req/s | TTFT p50 ms | TTFT p95 ms | TPOT p50 ms | total latency p50 ms | total latency p95 ms | goodput req/s | SLO met | failed |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for model in models:
    for server in servers:
        for name, m in loaded_runs(model, server):
            print(f"| {model} | {server} | {name} | {m['num_requests']} | {f(m['output_tok_per_s'])} | "
                  f"{f(m['requests_per_s'], 2)} | {f(m['ttft_ms']['p50'])} | {f(m['ttft_ms']['p95'])} | "
                  f"{f(m['tpot_ms']['p50'])} | {f(m['e2e_ms']['p50'])} | {f(m['e2e_ms']['p95'])} | "
                  f"{f(m.get('goodput_req_per_s'), 2)} | {m.get('num_slo_met', '-')}/{m['num_requests']} | {m['num_errors']} |")
print()

def ratio(x, y):
    """x / y; a positive x over a zero y (a peer meeting no SLO) is infinite."""
    if x is None or y is None:
        return "-"
    if y == 0:
        return "inf" if x > 0 else "-"
    return f"{x / y:.2f}x"

for peer in [s for s in servers if s != "kestrel"]:
    if "kestrel" not in servers:
        break
    print(f"### kestrel against {peer} (above 1: kestrel is better)\n")
    print(f"| model | run | output tok/s, kestrel ÷ {peer} | TTFT p50, {peer} ÷ kestrel | TTFT p95, {peer} ÷ kestrel | goodput, kestrel ÷ {peer} | total latency p50, {peer} ÷ kestrel |")
    print("|---|---|---|---|---|---|---|")
    for model in models:
        theirs = dict(loaded_runs(model, peer))
        for cls in ["short", "medium", "long"]:
            a, b = rows.get((model, "kestrel", cls, 1)), rows.get((model, peer, cls, 1))
            if a and b:
                theirs_cls = b["metrics"]
                a = a["metrics"]
                print(f"| {model} | {cls} answers | {ratio(a['output_tok_per_s'], theirs_cls['output_tok_per_s'])} | "
                      f"{ratio(theirs_cls['ttft_ms']['p50'], a['ttft_ms']['p50'])} | {ratio(theirs_cls['ttft_ms']['p95'], a['ttft_ms']['p95'])} | "
                      f"{ratio(a.get('goodput_req_per_s'), theirs_cls.get('goodput_req_per_s'))} | {ratio(theirs_cls['e2e_ms']['p50'], a['e2e_ms']['p50'])} |")
        for name, a in loaded_runs(model, "kestrel"):
            b = theirs.get(name)
            if b is None:
                continue
            print(f"| {model} | {name} | {ratio(a['output_tok_per_s'], b['output_tok_per_s'])} | "
                  f"{ratio(b['ttft_ms']['p50'], a['ttft_ms']['p50'])} | {ratio(b['ttft_ms']['p95'], a['ttft_ms']['p95'])} | "
                  f"{ratio(a.get('goodput_req_per_s'), b.get('goodput_req_per_s'))} | {ratio(b['e2e_ms']['p50'], a['e2e_ms']['p50'])} |")
    print()

print("### Shared-prefix burst: 1 cold request, then simultaneous requests sharing its system prompt\n")
print("| model | server | prompt tokens | cold TTFT ms | burst requests | burst TTFT mean ms | burst TTFT p95 ms | cold ÷ burst mean |")
print("|---|---|---|---|---|---|---|---|")
for model in models:
    for server in servers:
        cold = rows.get((model, server, "prefix-cold", 1))
        burst = [rows[k] for k in rows if k[:3] == (model, server, "prefix-burst")]
        if not cold or not burst:
            continue
        c, b = cold["metrics"], burst[0]["metrics"]
        prompt = c.get("prompt_tokens")
        print(f"| {model} | {server} | {prompt if prompt is not None else '-'} | {f(c['ttft_ms']['mean'])} | {b['num_requests']} | "
              f"{f(b['ttft_ms']['mean'])} | {f(b['ttft_ms']['p95'])} | {ratio(c['ttft_ms']['mean'], b['ttft_ms']['mean'])} |")
print()
sources = sorted({(r["label"].split("|")[0], run["metrics"]["token_source"]) for r in reports for run in r["runs"]})
print("Output tokens counted from: " + ", ".join(f"{s}: {t}" for s, t in sources) + ".")
errs = [(r["label"], run["spec"]["max_concurrency"], run["metrics"]["errors"]) for r in reports for run in r["runs"] if run["metrics"]["num_errors"]]
for label, c, e in errs:
    print(f"- {label} concurrency {c}: failures {e}")
EOF
log "reports in $OUT"
