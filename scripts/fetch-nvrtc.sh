#!/usr/bin/env bash
# Fetches NVIDIA's NVRTC library (the `nvidia-cuda-nvrtc` wheel from PyPI, CUDA 13.0, the
# version of the reference GPU machine's toolkit) into the fixture cache and prints the folder
# to put on LD_LIBRARY_PATH. NVRTC compiles CUDA C++ to PTX without a GPU, so CI checks every
# kernel of the CUDA backend with it.
set -euo pipefail
VERSION=13.0.88
CACHE="${KESTREL_FIXTURES:-$HOME/.cache/kestrel/fixtures}/nvrtc-$VERSION"
LIB="$CACHE/nvidia/cu13/lib"
if [[ ! -e "$LIB/libnvrtc.so.13" ]]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2010_x86_64 \
        --dest "$tmp" "nvidia-cuda-nvrtc==$VERSION" >&2
    mkdir -p "$CACHE"
    python3 - "$tmp" "$CACHE" <<'PY'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/nvidia_cuda_nvrtc-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith("nvidia/cu13/lib/"):
            z.extract(n, sys.argv[2])
PY
fi
echo "$LIB"
