#!/usr/bin/env bash
# Builds, here (no GPU or CUDA toolkit needed), everything `scripts/device-check.sh` runs on a
# GPU machine that has no Rust: the CUDA-enabled test executables (backend ops and sampling,
# engine conformance), the `device_bench` example and the `kestrel` binary, plus the PyTorch
# anchor. They land in target/device/, which `device-check.sh` reads.
#   scripts/device-bundle.sh [path/to/anchor_graph.py]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/device
rm -rf "$OUT" && mkdir -p "$OUT"
json=$(cargo test --release --locked -p kestrel-backend -p kestrel-engine \
    --features kestrel-engine/cuda --no-run --message-format=json 2>/dev/null)
python3 - "$OUT" <<PY
import json, shutil, sys
for line in """$json""".splitlines():
    try:
        m = json.loads(line)
    except ValueError:
        continue
    exe = m.get("executable")
    if m.get("reason") == "compiler-artifact" and exe and m["target"]["name"] in ("ops", "sampling", "conformance"):
        shutil.copy(exe, f"{sys.argv[1]}/{m['target']['name']}")
PY
cargo build --release --locked -p kestrel-engine --features cuda --example device_bench
cp target/release/examples/device_bench "$OUT/"
cargo build --release --locked -p kestrel --features cuda
cp target/release/kestrel "$OUT/"
cp scripts/device-check.sh "$OUT/"
anchor="${1:-../shared/gpu/anchor_graph.py}"
[[ -f "$anchor" ]] && cp "$anchor" "$OUT/"
ls -la "$OUT"
