#!/usr/bin/env python3
"""Independent float64 NumPy implementation of the Qwen2 / Qwen3 forward pass,
used to cross-check the goldens written by make_hf_goldens.py (no torch needed).

Requirements:  pip install numpy==2.4.6

Usage:
    python scripts/golden/check_hf_goldens.py [MODEL_DIR ...]

Without arguments every directory under tests/fixtures/hf/ is checked. For each
prompt it compares the logits with golden.safetensors and re-derives the greedy
continuation (argmax over a full forward of prompt + continuation). Exits
non-zero if the logits differ by more than --tol (default 1e-3) or a greedy
token differs.
"""

import argparse
import glob
import json
import os
import struct
import sys

import numpy as np

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def read_safetensors(path):
    """Minimal reader for F32 / BF16 safetensors, returns float64 arrays."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[a:b]
        if info["dtype"] == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif info["dtype"] == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: {name}: unsupported dtype {info['dtype']}")
        out[name] = arr.reshape(info["shape"]).astype(np.float64)
    return out


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


class Model:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
        self.c = c
        self.w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
        self.heads = c["num_attention_heads"]
        self.kv_heads = c["num_key_value_heads"]
        self.head_dim = c.get("head_dim") or c["hidden_size"] // self.heads
        self.eps = c["rms_norm_eps"]
        theta = c.get("rope_theta")
        if theta is None:
            theta = (c.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        self.theta = float(theta)

    def linear(self, name, x):
        y = x @ self.w[name + ".weight"].T
        if name + ".bias" in self.w:
            y = y + self.w[name + ".bias"]
        return y

    def forward(self, ids):
        w, hd, H, K = self.w, self.head_dim, self.heads, self.kv_heads
        T = len(ids)
        x = w["model.embed_tokens.weight"][ids]
        inv = self.theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
        ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
        ang = np.concatenate([ang, ang], -1)[:, None, :]  # [T, 1, hd]
        cos, sin = np.cos(ang), np.sin(ang)

        def rope(q):  # rotate-half ("NeoX") layout, as in transformers
            half = hd // 2
            rot = np.concatenate([-q[..., half:], q[..., :half]], -1)
            return q * cos + rot * sin

        mask = np.triu(np.full((T, T), -np.inf), 1)
        for layer in range(self.c["num_hidden_layers"]):
            p = f"model.layers.{layer}."
            h = rms_norm(x, w[p + "input_layernorm.weight"], self.eps)
            q = self.linear(p + "self_attn.q_proj", h).reshape(T, H, hd)
            k = self.linear(p + "self_attn.k_proj", h).reshape(T, K, hd)
            v = self.linear(p + "self_attn.v_proj", h).reshape(T, K, hd)
            if p + "self_attn.q_norm.weight" in w:  # Qwen3 per-head QK norm
                q = rms_norm(q, w[p + "self_attn.q_norm.weight"], self.eps)
                k = rms_norm(k, w[p + "self_attn.k_norm.weight"], self.eps)
            q, k = rope(q), rope(k)
            k = np.repeat(k, H // K, axis=1)
            v = np.repeat(v, H // K, axis=1)
            s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = np.einsum("hts,shd->thd", s, v).reshape(T, H * hd)
            x = x + self.linear(p + "self_attn.o_proj", o)
            h = rms_norm(x, w[p + "post_attention_layernorm.weight"], self.eps)
            g = self.linear(p + "mlp.gate_proj", h)
            u = self.linear(p + "mlp.up_proj", h)
            x = x + self.linear(p + "mlp.down_proj", g / (1.0 + np.exp(-g)) * u)
        x = rms_norm(x, w["model.norm.weight"], self.eps)
        lm_head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
        return x @ lm_head.T


def check(model_dir, tol):
    m = Model(model_dir)
    with open(os.path.join(model_dir, "golden.json")) as f:
        golden = json.load(f)
    logits = read_safetensors(os.path.join(model_dir, "golden.safetensors"))
    ok, worst = True, 0.0
    for i, (prompt, cont) in enumerate(zip(golden["prompts"], golden["greedy"])):
        full = m.forward(prompt + cont)
        err = float(np.abs(full[: len(prompt)] - logits[f"logits.{i}"]).max())
        worst = max(worst, err)
        regreedy = full[len(prompt) - 1 : -1].argmax(-1).tolist()
        if err > tol or regreedy != cont:
            ok = False
            print(f"  prompt {i}: max|diff| {err:.3e}, greedy {'ok' if regreedy == cont else 'MISMATCH'}")
    print(f"{'ok  ' if ok else 'FAIL'} {model_dir}: max |logit diff| {worst:.2e}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="*")
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args()
    dirs = args.dirs or sorted(
        os.path.dirname(p) for p in glob.glob(os.path.join(REPO_ROOT, "tests", "fixtures", "hf", "*", "golden.json"))
    )
    if not dirs:
        sys.exit("no model directories found")
    results = [check(d, args.tol) for d in dirs]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
