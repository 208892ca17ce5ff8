#!/usr/bin/env bash
# The CUDA backend's check on a GPU machine with CUDA 13, Python and torch, and no Rust: runs
# the binaries `scripts/device-bundle.sh` built (in target/device/, carried to the machine),
# then benchmarks Kestrel and the PyTorch CUDA-graph anchor (`anchor_graph.py`) in the same run
# on random bf16 Qwen3-1.7B weights, and writes $OUT/device-check.json and a table.
#   OUT=/some/dir scripts/device-check.sh      (from the repository root)
set -uo pipefail
D=target/device
OUT="${OUT:-$PWD/device-out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
# NVRTC and cuBLAS from the machine's CUDA toolkit.
for lib in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d $lib ]] && export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export KESTREL_REQUIRE_CUDA=1
status=0
# 1. The conformance suite's CUDA cases: ops and sampling against the CPU reference, model
#    parity and invariance (the engine's suite needs the fixtures of tests/fixtures).
for t in ops sampling conformance; do
    echo "== $t (cuda)"
    timeout 240 "$D/$t" cuda:: --test-threads=1 2>&1 | tail -40 | tee "$OUT/test-$t.txt"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
done
# 2. Speed, both engines in this run.
echo "== kestrel device_bench"
timeout 240 "$D/device_bench" --device cuda --size 1.7b --batches 1,8,32,128 \
    --out "$OUT/kestrel.json" 2>&1 | tail -20
echo "== anchor_graph.py"
( cd "$OUT" && OUT="$OUT" timeout 240 python3 "$OLDPWD/$D/anchor_graph.py" 2>&1 | tail -20 )
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
k = json.load(open(os.path.join(out, "kestrel.json"))) if os.path.exists(os.path.join(out, "kestrel.json")) else {}
a = json.load(open(os.path.join(out, "anchor_graph.json"))) if os.path.exists(os.path.join(out, "anchor_graph.json")) else {}
rows = []
for b in ["1", "8", "32", "128"]:
    kv = k.get("decode_tok_s", {}).get(b)
    av = (a.get(f"qwen3-1.7b-bs{b}") or {}).get("decode_tok_s")
    rows.append((f"decode tok/s, batch {b}", kv, av))
pa = next((v.get("prefill512_ms") for key, v in a.items() if isinstance(v, dict) and v.get("prefill512_ms")), None)
rows.append(("prefill 512 tokens, ms", k.get("prefill_512_ttft_ms"), pa))
print(f"{'':28} {'kestrel':>10} {'anchor':>10} {'ratio':>7}")
for name, kv, av in rows:
    ratio = f"{kv / av:.2f}" if kv and av else "-"
    print(f"{name:28} {kv or '-':>10} {av or '-':>10} {ratio:>7}")
json.dump({"kestrel": k, "anchor": a, "rows": rows}, open(os.path.join(out, "device-check.json"), "w"), indent=1)
PY
exit $status
