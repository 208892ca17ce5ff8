#!/usr/bin/env python3
"""Golden vectors for the GGML block formats of kestrel-backend (`cpu::quant`).

The reference is gguf-py (`pip install gguf numpy`), whose `gguf.quants.quantize` and
`gguf.quants.dequantize` reproduce ggml's `quantize_row_*_ref` / `dequantize_row_*` bit for bit.
For each format this writes `crates/kestrel-backend/tests/data/quant_vectors/<NAME>.bin`, read by
`crates/kestrel-backend/tests/quant_golden.rs`.

Run from the repository root (deterministic: a fixed seed, so re-running gives the same bytes):

    python scripts/golden/make_quant_vectors.py

File format, all little-endian:

    magic      4 bytes  b"KQV1"
    type_id    u32      ggml type id (F32=0, F16=1, Q4_0=2, ..., BF16=30)
    num_cases  u32
    then per case:
      kind     u32      0: `input` quantized by gguf-py; 1: random block bytes (no input)
      k        u32      number of values
      input    k x f32  (kind 0 only)
      blocks   row_bytes(k) bytes: gguf-py's quantization of `input` (kind 0) or random bytes
               with finite f16 scales (kind 1)
      values   k x f32  gguf-py's dequantization of `blocks`

Kind 0 exists for the formats gguf-py can quantize (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0,
Q5_1). gguf-py dequantizes the K-quants (Q4_K, Q5_K, Q6_K) but does not implement their
quantizers, so they get kind 1 only, unless ggml itself is given:

    python scripts/golden/make_quant_vectors.py --ggml-lib-dir DIR

where DIR holds `libggml-base.so` and `libggml-cpu.so`, e.g. the `lib/` folder of the PyPI
package `llama-cpp-python` (`python -c "import llama_cpp, os; print(os.path.dirname(llama_cpp.__file__))"`).
Then the K-quant files also get kind-0 cases quantized by ggml's `quantize_row_q*_K_ref`, and
`dot_<NAME>.bin` files record ggml's own dot products, read by `tests/quant_ggml_dot.rs`:

    magic      4 bytes  b"KQD1"
    type_id    u32      ggml type id of the weight format
    num_cases  u32
    then per case:
      k        u32
      weights  row_bytes(k) bytes (ggml's reference quantization of random values)
      x        k x f32  activation values
      act      bytes of x converted to the format's vec_dot_type by ggml's reference converter
               (quantize_row_q8_0_ref / q8_1_ref / q8_K_ref, ggml_fp32_to_fp16_row,
               ggml_fp32_to_bf16_row_ref, or the f32 values)
      generic  f32      ggml_vec_dot_<fmt>_<act>_generic (quantized formats) or ggml_vec_dot_f32 /
                        f16 / bf16 of this build (float formats)
      native   f32      ggml_vec_dot_<fmt>_<act> as this build dispatches it (SIMD)
"""

from __future__ import annotations

import argparse
import ctypes
import os
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

OUT_DIR = os.path.join("crates", "kestrel-backend", "tests", "data", "quant_vectors")

QUANTIZABLE = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
K_QUANTS = [T.Q4_K, T.Q5_K, T.Q6_K]

# Byte offsets of the f16 scale fields inside one block, per format.
F16_FIELDS = {
    T.Q8_0: [0],
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}


def scaled_gaussian(rng: np.random.Generator, k: int, block: int) -> np.ndarray:
    """Gaussian values whose magnitude changes from block to block (1e-4 .. 1e2)."""
    x = rng.standard_normal(k).astype(np.float32)
    scales = np.exp(rng.uniform(np.log(1e-4), np.log(1e2), size=k // block)).astype(np.float32)
    return (x.reshape(-1, block) * scales[:, None]).reshape(-1).astype(np.float32)


def special_blocks(block: int) -> np.ndarray:
    """Blocks that exercise the edge cases of the reference quantizers."""
    b = max(block, 32)
    rows = []
    rows.append(np.zeros(b, np.float32))  # all zero: d = 0, id = 0
    rows.append(np.full(b, 0.75, np.float32))  # constant: max == min
    ties = np.zeros(b, np.float32)  # amax 127 → d = 1 (Q8_0): exact .5 ties
    ties[:8] = [127.0, 0.5, -0.5, 1.5, -2.5, 126.5, -126.5, 3.0]
    rows.append(ties)
    q4 = np.zeros(b, np.float32)  # max = -8 → d = 1 (Q4_0): the +8 that saturates at 7
    q4[:6] = [-8.0, 8.0, 7.5, -7.5, 0.5, -0.49]
    rows.append(q4)
    rows.append(-np.abs(np.linspace(0.1, 3.0, b, dtype=np.float32)))  # all negative
    rows.append(np.linspace(2.0, 5.0, b, dtype=np.float32))  # all positive (min > 0)
    alt = np.where(np.arange(b) % 2 == 0, 1e-3, -4e2).astype(np.float32)  # huge dynamic range
    rows.append(alt)
    return np.concatenate(rows).astype(np.float32)


def float_specials() -> np.ndarray:
    """Values at the edges of f16 / bf16: subnormals, overflow, signed zero, ties."""
    v = [
        0.0, -0.0, 1.0, -1.0, 65504.0, 65520.0, 1e5, -1e5, 6.1e-5, 6.0e-8, 3.0e-8, 1e-9,
        1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, 3.3895e38, np.inf, -np.inf,
    ]
    x = np.array(v + [0.0] * (32 - len(v)), dtype=np.float32)
    return x


def random_blocks(rng: np.random.Generator, qtype: T, k: int) -> np.ndarray:
    block, type_size = GGML_QUANT_SIZES[qtype]
    n = k // block
    raw = rng.integers(0, 256, size=(n, type_size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        # Finite scales of either sign, magnitudes 1e-4 .. 1.
        d = (rng.choice([-1.0, 1.0], size=n) * np.exp(rng.uniform(np.log(1e-4), 0.0, size=n))).astype(np.float16)
        raw[:, off:off + 2] = d.view(np.uint8).reshape(n, 2)
    return raw.reshape(-1)


def write_case(out: bytearray, kind: int, k: int, x: np.ndarray | None, blocks: np.ndarray, values: np.ndarray) -> None:
    out += struct.pack("<II", kind, k)
    if kind == 0:
        assert x is not None and x.dtype == np.float32 and x.size == k
        out += x.astype("<f4").tobytes()
    out += blocks.astype(np.uint8).tobytes()
    assert values.dtype == np.float32 and values.size == k
    out += values.astype("<f4").tobytes()


def quantized_case(out: bytearray, qtype: T, x: np.ndarray) -> int:
    blocks = np.asarray(quantize(x.reshape(1, -1), qtype)).view(np.uint8).reshape(-1)
    values = np.asarray(dequantize(blocks.reshape(1, -1), qtype), dtype=np.float32).reshape(-1)
    write_case(out, 0, x.size, x, blocks, values)
    return 1


def random_case(out: bytearray, qtype: T, blocks: np.ndarray, k: int) -> int:
    values = np.asarray(dequantize(blocks.reshape(1, -1), qtype), dtype=np.float32).reshape(-1)
    write_case(out, 1, k, None, blocks, values)
    return 1


class Ggml:
    """ggml's own reference code, loaded from a build of llama.cpp (e.g. llama-cpp-python)."""

    ACT = {  # weight type → (vec_dot_type, act row converter, generic dot symbol, native dot symbol)
        T.F32: (T.F32, None, "ggml_vec_dot_f32", "ggml_vec_dot_f32"),
        T.F16: (T.F16, "ggml_fp32_to_fp16_row", "ggml_vec_dot_f16", "ggml_vec_dot_f16"),
        T.BF16: (T.BF16, "ggml_fp32_to_bf16_row_ref", "ggml_vec_dot_bf16", "ggml_vec_dot_bf16"),
        T.Q8_0: (T.Q8_0, "quantize_row_q8_0_ref", "ggml_vec_dot_q8_0_q8_0_generic", "ggml_vec_dot_q8_0_q8_0"),
        T.Q4_0: (T.Q8_0, "quantize_row_q8_0_ref", "ggml_vec_dot_q4_0_q8_0_generic", "ggml_vec_dot_q4_0_q8_0"),
        T.Q4_1: (T.Q8_1, "quantize_row_q8_1_ref", "ggml_vec_dot_q4_1_q8_1_generic", "ggml_vec_dot_q4_1_q8_1"),
        T.Q5_0: (T.Q8_0, "quantize_row_q8_0_ref", "ggml_vec_dot_q5_0_q8_0_generic", "ggml_vec_dot_q5_0_q8_0"),
        T.Q5_1: (T.Q8_1, "quantize_row_q8_1_ref", "ggml_vec_dot_q5_1_q8_1_generic", "ggml_vec_dot_q5_1_q8_1"),
        T.Q4_K: (T.Q8_K, "quantize_row_q8_K_ref", "ggml_vec_dot_q4_K_q8_K_generic", "ggml_vec_dot_q4_K_q8_K"),
        T.Q5_K: (T.Q8_K, "quantize_row_q8_K_ref", "ggml_vec_dot_q5_K_q8_K_generic", "ggml_vec_dot_q5_K_q8_K"),
        T.Q6_K: (T.Q8_K, "quantize_row_q8_K_ref", "ggml_vec_dot_q6_K_q8_K_generic", "ggml_vec_dot_q6_K_q8_K"),
    }
    ACT_BLOCK = {T.F32: (1, 4), T.F16: (1, 2), T.BF16: (1, 2), T.Q8_0: (32, 34), T.Q8_1: (32, 36), T.Q8_K: (256, 292)}

    def __init__(self, lib_dir: str):
        mode = getattr(ctypes, "RTLD_GLOBAL", 0)
        self.base = ctypes.CDLL(os.path.join(lib_dir, "libggml-base.so"), mode=mode)
        self.cpu = ctypes.CDLL(os.path.join(lib_dir, "libggml-cpu.so"), mode=mode)
        self.cpu.ggml_cpu_init()

    def _fn(self, name: str):
        for lib in (self.base, self.cpu):
            if hasattr(lib, name):
                f = getattr(lib, name)
                f.restype = None
                return f
        raise KeyError(name)

    def quantize_ref(self, qtype: T, x: np.ndarray) -> np.ndarray:
        block, type_size = GGML_QUANT_SIZES[qtype]
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros(x.size // block * type_size, dtype=np.uint8)
        self._fn(f"quantize_row_{qtype.name.lower().replace('_k', '_K')}_ref")(
            x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size))
        return out

    def act_row(self, act: T, conv: str | None, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if conv is None:
            return x.view(np.uint8).copy()
        block, size = self.ACT_BLOCK[act]
        out = np.zeros(x.size // block * size, dtype=np.uint8)
        self._fn(conv)(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size))
        return out

    def dot(self, name: str, k: int, w: np.ndarray, a: np.ndarray) -> float:
        s = ctypes.c_float(0.0)
        self._fn(name)(ctypes.c_int(k), ctypes.byref(s), ctypes.c_size_t(0), w.ctypes.data_as(ctypes.c_void_p),
                       ctypes.c_size_t(0), a.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(0), ctypes.c_int(1))
        return s.value


def weight_row(ggml: Ggml, qtype: T, x: np.ndarray) -> np.ndarray:
    """A weight row in `qtype`: ggml's reference quantizer, or gguf-py's for the float types."""
    if qtype in (T.F32, T.F16, T.BF16):
        return np.asarray(quantize(x.reshape(1, -1), qtype)).view(np.uint8).reshape(-1).copy()
    return ggml.quantize_ref(qtype, x)


def write_dot_file(ggml: Ggml, qtype: T, rng: np.random.Generator) -> int:
    act, conv, generic, native = Ggml.ACT[qtype]
    out = bytearray()
    cases = 0
    sizes = [(256, 0.0), (768, 0.5)] if qtype not in (T.F32, T.F16, T.BF16) else [(100, 0.0), (768, 0.5)]
    for k, offset in sizes:
        xw = scaled_gaussian(rng, k, 256 if k % 256 == 0 else 1) + np.float32(offset)
        xa = (rng.standard_normal(k).astype(np.float32) * np.float32(rng.uniform(0.1, 3.0))).astype(np.float32)
        w = weight_row(ggml, qtype, xw.astype(np.float32))
        a = ggml.act_row(act, conv, xa)
        out += struct.pack("<I", k) + w.tobytes() + xa.astype("<f4").tobytes() + a.tobytes()
        out += struct.pack("<ff", ggml.dot(generic, k, w, a), ggml.dot(native, k, w, a))
        cases += 1
    data = b"KQD1" + struct.pack("<II", int(qtype), cases) + bytes(out)
    path = os.path.join(OUT_DIR, f"dot_{qtype.name}.bin")
    with open(path, "wb") as f:
        f.write(data)
    print(f"{path}: {cases} cases, {len(data)} bytes")
    return len(data)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ggml-lib-dir", help="folder with libggml-base.so and libggml-cpu.so (llama-cpp-python's lib/)")
    args = ap.parse_args()
    ggml = Ggml(args.ggml_lib_dir) if args.ggml_lib_dir else None
    os.makedirs(OUT_DIR, exist_ok=True)
    total = 0
    for qtype in QUANTIZABLE + K_QUANTS:
        rng = np.random.default_rng(20240601 + int(qtype))
        block, _ = GGML_QUANT_SIZES[qtype]
        out = bytearray()
        cases = 0
        if qtype in QUANTIZABLE:
            k = 512
            cases += quantized_case(out, qtype, scaled_gaussian(rng, k, max(block, 32)))
            cases += quantized_case(out, qtype, special_blocks(block))
            if qtype in (T.F16, T.BF16, T.F32):
                x = float_specials()
                if qtype == T.BF16:
                    x[-1] = np.nan  # ggml forces NaN quiet; F16's NaN payload is not pinned down
                cases += quantized_case(out, qtype, x)
        if qtype in K_QUANTS and ggml is not None:
            for x in (scaled_gaussian(rng, 512, 256), special_blocks(256)):
                blocks = ggml.quantize_ref(qtype, x)
                values = np.asarray(dequantize(blocks.reshape(1, -1), qtype), dtype=np.float32).reshape(-1)
                write_case(out, 0, x.size, x, blocks, values)
                cases += 1
        if qtype in F16_FIELDS:
            k = 2048 if qtype in K_QUANTS else 1024
            cases += random_case(out, qtype, random_blocks(rng, qtype, k), k)
        data = b"KQV1" + struct.pack("<II", int(qtype), cases) + bytes(out)
        path = os.path.join(OUT_DIR, f"{qtype.name}.bin")
        with open(path, "wb") as f:
            f.write(data)
        total += len(data)
        print(f"{path}: {cases} cases, {len(data)} bytes")
        if ggml is not None:
            total += write_dot_file(ggml, qtype, rng)
    print(f"total {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
