#!/usr/bin/env bash
# Installs Debian's redis-server when it is missing (the response cache's tests and benchmark
# start their own on a loopback port; the package's service is not used).
set -euo pipefail
if command -v redis-server >/dev/null; then
    exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
command -v redis-server >/dev/null
