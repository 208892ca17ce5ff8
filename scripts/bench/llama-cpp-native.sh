#!/usr/bin/env bash
# Native llama.cpp for the benchmarks: the llama.cpp tree vendored in the pinned llama-cpp-python
# source distribution (PyPI), built with CMake and GGML_NATIVE=ON (the CPU's own instruction
# set: AVX-512 and VNNI where present), CPU only. Builds llama-bench, llama-server,
# llama-batched-bench and llama-quantize once into $LLAMA_CPP_NATIVE (default
# target/llama.cpp-native) and prints the directory holding them.
#
#   BIN=$(./scripts/bench/llama-cpp-native.sh) && "$BIN/llama-bench" -m model.gguf -t 2
#
# A first build takes about 20 minutes on 2 cores. CMake comes from Debian (apt-get) if missing.
#
# AMX is masked (-mno-amx-*) unless LLAMA_CPP_AMX=1: on the virtual machines this project's
# benchmarks run on, the CPU reports AMX and the kernel grants its tile state, yet ggml's AMX
# kernels die with a general-protection fault on the first prompt batch. Everything else
# GGML_NATIVE enables (AVX-512 F/BW/VL, VNNI, BF16, the repacked CPU kernels) stays on.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=0.3.36
OUT="${LLAMA_CPP_NATIVE:-target/llama.cpp-native}"
TARGETS="llama-bench llama-server llama-batched-bench llama-quantize"
if [ "${LLAMA_CPP_AMX:-0}" = 1 ]; then
    flags="" tag=amx
else
    flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" tag=noamx
fi
done_marker="$OUT/built-$VERSION-$tag"
if [ -f "$done_marker" ]; then
    echo "$OUT/bin"
    exit 0
fi
mkdir -p "$OUT"
# One build at a time: a second caller waits for the first and then finds the marker.
exec 9>"$OUT/.lock"
flock 9
if [ -f "$done_marker" ]; then
    echo "$OUT/bin"
    exit 0
fi
if ! command -v cmake >/dev/null; then
    echo "llama-cpp-native: installing cmake" >&2
    (apt-get update -qq && apt-get install -y -qq cmake) >&2
fi
mkdir -p "$OUT/src"
if [ ! -d "$OUT/src/llama_cpp_python-$VERSION" ]; then
    echo "llama-cpp-native: fetching llama-cpp-python==$VERSION (source distribution)" >&2
    # The sdist itself, from PyPI's JSON API (pip would try to build its metadata first).
    python3 - "$VERSION" "$OUT/src" <<'PY'
import hashlib, json, sys, urllib.parse, urllib.request
version, dest = sys.argv[1], sys.argv[2]
# The project's JSON (registry mirrors serve it; some lack the per-version one), whose file
# URLs may be relative to it.
index = "https://pypi.org/pypi/llama-cpp-python/json"
meta = json.load(urllib.request.urlopen(index))
sdist = next(u for u in meta["releases"][version] if u["packagetype"] == "sdist")
data = urllib.request.urlopen(urllib.parse.urljoin(index, sdist["url"])).read()
assert hashlib.sha256(data).hexdigest() == sdist["digests"]["sha256"], "sha256 mismatch"
open(f"{dest}/{sdist['filename']}", "wb").write(data)
PY
    tar -xzf "$OUT/src/llama_cpp_python-$VERSION.tar.gz" -C "$OUT/src"
fi
tree="$OUT/src/llama_cpp_python-$VERSION/vendor/llama.cpp"
[ -f "$tree/CMakeLists.txt" ] || { echo "llama-cpp-native: no vendored llama.cpp in $tree" >&2; exit 1; }
echo "llama-cpp-native: building $TARGETS (GGML_NATIVE=ON)" >&2
cmake -S "$tree" -B "$OUT/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DGGML_CUDA=OFF -DBUILD_SHARED_LIBS=OFF \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" >&2
# shellcheck disable=SC2086
cmake --build "$OUT/build" -j "$(nproc)" --target $TARGETS >&2
rm -f "$OUT"/built-*
mkdir -p "$OUT/bin"
for t in $TARGETS; do
    cp "$(find "$OUT/build" -type f -name "$t" -perm -u+x | head -n 1)" "$OUT/bin/"
done
touch "$done_marker"
echo "$OUT/bin"
