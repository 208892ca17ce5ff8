"""Quantizes a GGUF with llama.cpp's own quantizer (llama-cpp-python's `llama_model_quantize`),
so kestrel and llama.cpp read the same quantized files: quantize.py IN OUT q8_0|q4_k_m."""

import sys

import llama_cpp

FTYPES = {
    "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
}

src, dst, kind = sys.argv[1], sys.argv[2], sys.argv[3]
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = FTYPES[kind]
params.nthread = 2
rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
if rc != 0:
    sys.exit(f"llama_model_quantize failed ({rc})")
