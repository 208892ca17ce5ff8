#!/usr/bin/env bash
# Single-stream decode speed with and without speculative decoding (prompt lookup) on the real
# Qwen2.5-Coder-0.5B GGUF: an input-grounded prompt (quote a paragraph) and two free-text ones, greedy,
# runs alternating between the two settings so that drift hits both; median of $RUNS.
#
#   ./scripts/bench-spec.sh
#   RUNS=7 MAX_TOKENS=160 SPEC='{"method":"ngram","num_speculative_tokens":6,"prompt_lookup_min":2,"prompt_lookup_max":5}' ./scripts/bench-spec.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-target/release/kestrel}"
RUNS="${RUNS:-5}"
MAX_TOKENS="${MAX_TOKENS:-128}"
THREADS="${THREADS:-$(nproc)}"
SPEC="${SPEC:-{\"method\": \"ngram\", \"num_speculative_tokens\": 4, \"prompt_lookup_min\": 2, \"prompt_lookup_max\": 5\}}"
fixtures="${KESTREL_FIXTURES:-$HOME/.cache/kestrel/fixtures}"
MODEL="${MODEL:-$fixtures/qwen2.5-coder-0.5b-instruct.gguf}"
[ -f "$MODEL" ] || ./scripts/fetch-fixtures.sh >/dev/null
[ "$BIN" != target/release/kestrel ] || cargo build --release -q -p kestrel

QUOTE="Repeat this text exactly, word for word: The river carried small boats past old stone \
houses, where people kept gardens of herbs and flowers. Every morning the bakers opened their \
doors to sell bread while children ran toward school through narrow streets full of light and \
sound. In the evening the fishermen came back with their nets, and the whole town gathered on \
the harbour wall to watch the sun go down behind the hills. Nobody hurried, and nobody was ever \
late for anything that mattered."
STORY="Write a short story about a lighthouse keeper who finds a message in a bottle."
EXPLAIN="Explain the difference between TCP and UDP, with an example of when to use each."

export BIN RUNS MAX_TOKENS THREADS SPEC MODEL QUOTE STORY EXPLAIN
python3 - <<'PY'
import json, os, statistics, subprocess

env = os.environ
def run(prompt, spec):
    args = [env["BIN"], "generate", "--model", env["MODEL"], "--threads", env["THREADS"],
            "--prompt", prompt, "--max-tokens", env["MAX_TOKENS"], "--temperature", "0",
            "--output", "json"]
    if spec:
        args += ["--speculative-config", env["SPEC"]]
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)

rows = []
for name, prompt in [("quote", env["QUOTE"]), ("free text: story", env["STORY"]),
                     ("free text: explanation", env["EXPLAIN"])]:
    speeds = {False: [], True: []}
    outputs = {}
    for _ in range(int(env["RUNS"])):
        for spec in (False, True):
            j = run(prompt, spec)
            speeds[spec].append(j["decode_tokens_per_s"])
            outputs[spec] = j["output_ids"]
    same = outputs[False] == outputs[True]
    off, on = statistics.median(speeds[False]), statistics.median(speeds[True])
    rows.append((name, off, on, on / off, same, speeds))

print(f"model {os.path.basename(env['MODEL'])}, {env['THREADS']} threads, {env['MAX_TOKENS']} tokens, greedy, median of {env['RUNS']}")
print(f"speculative config: {env['SPEC']}")
print()
print("| prompt | decode tok/s, no speculation | with speculation | ratio | same output |")
print("|---|---|---|---|---|")
for name, off, on, ratio, same, _ in rows:
    print(f"| {name} | {off:.1f} | {on:.1f} | {ratio:.2f}× | {'yes' if same else 'NO'} |")
print()
for name, *_, speeds in rows:
    print(f"{name}: no speculation {[round(x, 1) for x in speeds[False]]}, with {[round(x, 1) for x in speeds[True]]}")
PY
