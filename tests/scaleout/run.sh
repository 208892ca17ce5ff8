#!/usr/bin/env bash
# Scale-out tests: `/metrics` under load parsed with the official Prometheus Python client, and
# two replicas behind HAProxy (consistent hashing on X-Session-Id, health checks on /ready) with
# one drained by SIGTERM mid-run. Installs HAProxy with apt-get when it is missing, makes its own
# venv (prometheus-client, pytest from PyPI), uses KESTREL_BIN or builds the binary. Arguments go
# to pytest (e.g. -k metrics).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
fixtures="${KESTREL_FIXTURES:-$HOME/.cache/kestrel/fixtures}"
venv="${KESTREL_SCALEOUT_VENV:-$root/target/scaleout-venv}"
bin="${KESTREL_BIN:-}"

if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    # Only the binary is used; the package's service is not started (the test runs its own).
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
fi
[ -f "$fixtures/qwen3-tokenizer/tokenizer.json" ] || "$root/scripts/fetch-fixtures.sh" >/dev/null
if [ -z "$bin" ]; then
    (cd "$root" && cargo build --release --locked -p kestrel)
    bin="$root/target/release/kestrel"
fi
if [ ! -x "$venv/bin/pytest" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q prometheus-client==0.26.0 pytest==9.2.0
fi
cd "$here"
KESTREL_BIN="$bin" KESTREL_FIXTURES="$fixtures" "$venv/bin/pytest" -v -p no:cacheprovider "$@" .
