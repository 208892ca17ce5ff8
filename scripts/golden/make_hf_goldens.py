#!/usr/bin/env python3
"""Reference logits and greedy continuations from Hugging Face transformers for
tiny random-weight Qwen3 / Qwen2 / Llama / Phi-3 models.

Requirements (versions used to produce the committed fixtures; CPU-only is fine):

    pip install torch==2.15.0 transformers==5.24.0 safetensors==0.8.0 numpy==2.4.6

Usage
-----
Regenerate every committed fixture under tests/fixtures/hf/ (deterministic seeds):

    python scripts/golden/make_hf_goldens.py

Produce a model + golden for a configuration that is NOT among the fixtures (for
showing parity on unseen shapes):

    python scripts/golden/make_hf_goldens.py --out /tmp/unseen --seed 7 \\
        --config '{"model_type": "qwen3", "vocab_size": 515, "hidden_size": 80,
                   "intermediate_size": 152, "num_hidden_layers": 2,
                   "num_attention_heads": 5, "num_key_value_heads": 1,
                   "head_dim": 32, "tie_word_embeddings": false,
                   "rope_theta": 500000}'

`--config` takes inline JSON or a path to a JSON file. Keys are passed to
`Qwen3Config` / `Qwen2Config` / `LlamaConfig` / `Phi3Config` (selected by
"model_type", default "qwen3"); "rope_theta" is accepted, and a
"rope_parameters" object with a "rope_type" (llama3, longrope) sets scaled RoPE. Add `--bf16` to store the weights in bfloat16 (the
golden is then computed in float32 from the bf16-rounded weights).
`--prompt-lens` (default 1,7,33,70) and `--new-tokens` (default 32) are optional.

Output per model directory
--------------------------
  config.json, model.safetensors, generation_config.json   (save_pretrained output)
  golden.json        {"transformers_version", "torch_version", "prompts": [[ids]...],
                      "greedy": [[ids]...], plus informational keys}
  golden.safetensors f32 tensors "logits.<i>" of shape [len(prompts[i]), vocab]:
                     the logits at every position of prompt i.

All computation is float32, eager attention, eval mode. Weights are drawn with a
larger spread than the library default (std 0.2; norm weights 1 + 0.1*randn;
non-zero biases) so logits are not flat and greedy decoding is not trivially
repetitive. config.json additionally carries the top-level "rope_theta" and
"torch_dtype" keys that checkpoints published on the Hub use, next to the newer
"rope_parameters" / "dtype" keys written by recent transformers releases.

"greedy_min_margin" in golden.json is, per prompt, the smallest gap between the
top-1 and top-2 logits over the greedy steps (from a full, cache-free forward
pass); a tiny value there means a near-tie that another engine may resolve
differently.
"""

import argparse
import json
import os
import sys

import safetensors
import safetensors.torch
import torch
import transformers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT_ROOT = os.path.join(REPO_ROOT, "tests", "fixtures", "hf")
DEFAULT_PROMPT_LENS = (1, 7, 33, 70)
DEFAULT_NEW_TOKENS = 32
WEIGHT_STD = 0.2  # weights and biases; norm weights are 1 + 0.1 * randn

QWEN3_TIED = dict(
    model_type="qwen3",
    vocab_size=320,
    hidden_size=64,
    intermediate_size=136,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=24,  # deliberately != hidden_size / num_attention_heads
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    tie_word_embeddings=True,
    max_position_embeddings=256,
)

LLAMA_TIED = dict(
    model_type="llama",
    vocab_size=320,
    hidden_size=64,
    intermediate_size=136,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    tie_word_embeddings=True,
    max_position_embeddings=256,
)

# head_dim 16, theta 10000: with an original context of 64, pair 0 keeps its frequency
# (wavelength 6 < 64/4), pairs 1 and 2 are in the smoothed band, pairs 3.. are divided by 8.
LLAMA3_SCALED = dict(
    LLAMA_TIED,
    vocab_size=300,
    tie_word_embeddings=False,
    rope_theta=None,
    rope_parameters=dict(
        rope_type="llama3",
        rope_theta=10000.0,
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=64,
    ),
)

PHI3 = dict(
    model_type="phi3",
    vocab_size=320,
    hidden_size=64,
    intermediate_size=136,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    max_position_embeddings=256,
    original_max_position_embeddings=256,
    sliding_window=None,
)

# Context 256 over an original 32: transformers takes the long factors once a forward's
# longest position passes 32, so every prompt here is longer than that (PROMPT_LENS below).
PHI3_LONGROPE = dict(
    PHI3,
    vocab_size=288,
    rope_theta=None,
    original_max_position_embeddings=32,
    rope_parameters=dict(
        rope_type="longrope",
        rope_theta=10000.0,
        short_factor=[1.0, 1.02, 1.05, 1.1, 1.2, 1.4, 1.7, 2.0],
        long_factor=[1.0, 1.3, 2.1, 3.4, 5.5, 8.9, 14.4, 23.3],
        original_max_position_embeddings=32,
    ),
)

# Prompt lengths per fixture where the default does not fit.
PROMPT_LENS = {"phi3-tiny-longrope": (33, 47, 70)}

FIXTURES = [
    # (name, seed, config, bf16 weights)
    ("qwen3-tiny-tied", 1001, QWEN3_TIED, False),
    (
        "qwen3-tiny-untied",
        1002,
        dict(
            QWEN3_TIED,
            vocab_size=301,
            hidden_size=48,
            num_attention_heads=6,
            num_key_value_heads=3,
            head_dim=16,
            intermediate_size=100,
            num_hidden_layers=2,
            tie_word_embeddings=False,
            rope_theta=10000.0,
        ),
        False,
    ),
    (
        "qwen2-tiny-tied",
        1003,
        dict(
            model_type="qwen2",
            vocab_size=320,
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=136,
            num_hidden_layers=3,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
            max_position_embeddings=256,
        ),
        False,
    ),
    (
        "qwen2-tiny-untied",
        1004,
        dict(
            model_type="qwen2",
            vocab_size=257,
            hidden_size=96,
            num_attention_heads=6,
            num_key_value_heads=2,
            intermediate_size=200,
            num_hidden_layers=2,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            tie_word_embeddings=False,
            max_position_embeddings=256,
        ),
        False,
    ),
    # Same weights as qwen3-tiny-tied (same seed), stored rounded to bfloat16.
    ("qwen3-tiny-tied-bf16", 1001, QWEN3_TIED, True),
    ("llama-tiny-tied", 1005, LLAMA_TIED, False),
    ("llama-tiny-untied-llama3", 1006, LLAMA3_SCALED, False),
    ("phi3-tiny", 1007, PHI3, False),
    ("phi3-tiny-longrope", 1008, PHI3_LONGROPE, False),
]

ARCH = {
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "llama": (LlamaConfig, LlamaForCausalLM),
    "phi3": (Phi3Config, Phi3ForCausalLM),
}


def build_config(cfg):
    cfg = dict(cfg)
    model_type = cfg.pop("model_type", "qwen3")
    if model_type not in ARCH:
        sys.exit(f"unsupported model_type {model_type!r} (expected one of {sorted(ARCH)})")
    config_cls, model_cls = ARCH[model_type]
    theta = cfg.pop("rope_theta", None)
    if theta is not None and "rope_parameters" not in cfg:
        cfg.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": float(theta)})
    cfg.setdefault("max_position_embeddings", 256)
    cfg.setdefault("rms_norm_eps", 1e-6)
    # No special tokens: generation must never stop early.
    cfg.update(bos_token_id=None, eos_token_id=None, pad_token_id=None)
    config = config_cls(**cfg)
    config._attn_implementation = "eager"
    return config, model_cls


def init_weights(model, seed):
    """Deterministic, deliberately 'loud' initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # named_parameters() yields a tied lm_head/embedding only once.
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:  # linear / embedding weights and biases
                p.copy_(WEIGHT_STD * noise)


def make_prompts(vocab_size, lens, seed):
    g = torch.Generator().manual_seed(seed + 7919)
    return [torch.randint(0, vocab_size, (n,), generator=g).tolist() for n in lens]


def patch_config_json(path, dtype_name):
    """Add Hub-style keys next to the ones recent transformers versions write."""
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.get("rope_parameters") or {}
    if "rope_theta" not in cfg and "rope_theta" in rp:
        cfg["rope_theta"] = rp["rope_theta"]
    if rp.get("rope_type", "default") != "default":
        # Hub checkpoints carry scaled RoPE as `rope_scaling`.
        cfg.setdefault("rope_scaling", {k: v for k, v in rp.items() if k != "rope_theta"})
    cfg.setdefault("rope_scaling", None)
    cfg["torch_dtype"] = dtype_name
    if "dtype" in cfg:
        cfg["dtype"] = dtype_name
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def dump_golden_json(obj):
    """JSON with one token list per line (readable diffs, small files)."""
    lines = []
    for k, v in obj.items():
        if isinstance(v, list) and v and isinstance(v[0], list):
            inner = ",\n".join("    " + json.dumps(x, separators=(",", ":")) for x in v)
            lines.append(f"  {json.dumps(k)}: [\n{inner}\n  ]")
        else:
            lines.append(f"  {json.dumps(k)}: {json.dumps(v)}")
    text = "{\n" + ",\n".join(lines) + "\n}\n"
    assert json.loads(text) == obj
    return text


def load_f32(model_cls, out_dir):
    model = model_cls.from_pretrained(out_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model


@torch.no_grad()
def compute_golden(model, prompts, new_tokens):
    vocab = model.config.vocab_size
    logits = {}
    greedy = []
    margins = []
    gen_cfg = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        eos_token_id=None,
        bos_token_id=None,
        pad_token_id=vocab - 1,  # only to silence warnings; no padding happens
        use_cache=True,
    )
    for i, ids in enumerate(prompts):
        inp = torch.tensor([ids], dtype=torch.long)
        out = model(input_ids=inp, use_cache=False).logits[0]
        assert out.shape == (len(ids), vocab), out.shape
        logits[f"logits.{i}"] = out.to(torch.float32).contiguous().clone()

        seq = model.generate(
            inp, attention_mask=torch.ones_like(inp), generation_config=gen_cfg
        )[0].tolist()
        assert seq[: len(ids)] == ids
        gen = seq[len(ids):]
        if len(gen) != new_tokens:
            raise RuntimeError(f"prompt {i}: generated {len(gen)} tokens, wanted {new_tokens}")

        # Cross-check against a cache-free forward over the whole sequence.
        full = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0]
        steps = full[len(ids) - 1 : len(seq) - 1]
        top2 = torch.topk(steps, 2, dim=-1)
        recomputed = top2.indices[:, 0].tolist()
        if recomputed != gen:
            print(
                f"  WARNING prompt {i}: cached greedy differs from cache-free argmax "
                f"(near-tie); keeping generate() output",
                file=sys.stderr,
            )
        margin = (top2.values[:, 0] - top2.values[:, 1]).min().item()
        greedy.append(gen)
        margins.append(margin)
    return logits, greedy, margins


def make_one(out_dir, cfg, seed, bf16=False, prompt_lens=DEFAULT_PROMPT_LENS,
             new_tokens=DEFAULT_NEW_TOKENS):
    torch.manual_seed(seed)
    config, model_cls = build_config(cfg)
    model = model_cls(config)
    init_weights(model, seed)
    model.eval()

    os.makedirs(out_dir, exist_ok=True)
    for stale in ("model.safetensors", "config.json", "generation_config.json",
                  "golden.json", "golden.safetensors"):
        p = os.path.join(out_dir, stale)
        if os.path.exists(p):
            os.remove(p)

    weights_dtype = torch.bfloat16 if bf16 else torch.float32
    dtype_name = "bfloat16" if bf16 else "float32"
    model = model.to(weights_dtype)
    model.config.dtype = weights_dtype
    reference_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.save_pretrained(out_dir)
    patch_config_json(os.path.join(out_dir, "config.json"), dtype_name)

    # The golden is computed from what was written to disk, upcast to float32.
    loaded = load_f32(model_cls, out_dir)
    for k, v in loaded.state_dict().items():
        assert v.dtype == torch.float32, (k, v.dtype)
        assert torch.equal(v, reference_state[k].to(torch.float32)), f"reload mismatch: {k}"
    with safetensors.safe_open(os.path.join(out_dir, "model.safetensors"), "pt") as f:
        stored = {k: f.get_tensor(k).dtype for k in f.keys()}
    assert all(d == weights_dtype for d in stored.values()), stored

    prompts = make_prompts(config.vocab_size, prompt_lens, seed)
    logits, greedy, margins = compute_golden(loaded, prompts, new_tokens)

    safetensors.torch.save_file(
        logits, os.path.join(out_dir, "golden.safetensors"), metadata={"format": "pt"}
    )
    golden = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "safetensors_version": safetensors.__version__,
        "model_type": config.model_type,
        "seed": seed,
        "weights_dtype": dtype_name,
        "compute_dtype": "float32",
        "attn_implementation": "eager",
        "prompts": prompts,
        "greedy": greedy,
        "greedy_min_margin": margins,
    }
    with open(os.path.join(out_dir, "golden.json"), "w") as f:
        f.write(dump_golden_json(golden))

    size = sum(os.path.getsize(os.path.join(out_dir, n)) for n in os.listdir(out_dir))
    distinct = [len(set(g)) for g in greedy]
    print(
        f"{out_dir}: {config.model_type} weights={dtype_name} bytes={size} "
        f"tensors={len(stored)} distinct-greedy-tokens={distinct} "
        f"min-margin={min(margins):.4g}"
    )
    return golden


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="output directory for a single custom model")
    ap.add_argument("--config", help="inline JSON or path to a JSON file (with --out)")
    ap.add_argument("--seed", type=int, default=1234, help="seed for a custom model")
    ap.add_argument("--bf16", action="store_true", help="store custom model weights in bf16")
    ap.add_argument("--prompt-lens", default=",".join(map(str, DEFAULT_PROMPT_LENS)))
    ap.add_argument("--new-tokens", type=int, default=DEFAULT_NEW_TOKENS)
    ap.add_argument("--only", help="comma-separated fixture names to regenerate")
    ap.add_argument("--out-root", default=DEFAULT_OUT_ROOT,
                    help="where the standard fixtures go (default tests/fixtures/hf)")
    args = ap.parse_args()

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    lens = tuple(int(x) for x in args.prompt_lens.split(",") if x)

    if args.config or args.out:
        if not (args.config and args.out):
            ap.error("--out and --config go together")
        text = args.config
        if os.path.exists(text):
            with open(text) as f:
                text = f.read()
        cfg = json.loads(text)
        make_one(args.out, cfg, args.seed, bf16=args.bf16, prompt_lens=lens,
                 new_tokens=args.new_tokens)
        return

    only = set(args.only.split(",")) if args.only else None
    for name, seed, cfg, bf16 in FIXTURES:
        if only and name not in only:
            continue
        make_one(os.path.join(args.out_root, name), cfg, seed, bf16=bf16,
                 prompt_lens=PROMPT_LENS.get(name, lens), new_tokens=args.new_tokens)


if __name__ == "__main__":
    main()
