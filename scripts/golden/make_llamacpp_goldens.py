#!/usr/bin/env python3
"""Greedy continuations from llama.cpp (via llama-cpp-python) on the real
Qwen2.5-Coder-0.5B-Instruct GGUF fetched by scripts/fetch-fixtures.sh.

Requirements (versions used for the committed fixture):

    pip install llama-cpp-python==0.3.36 jinja2==3.1.6 numpy==2.4.6

llama-cpp-python builds llama.cpp from source on install (default CMake options,
CPU only; needs a C/C++ compiler and cmake, e.g. `pip install cmake ninja`).

Usage:

    scripts/fetch-fixtures.sh
    python scripts/golden/make_llamacpp_goldens.py [--model PATH] [--out PATH]

Defaults: --model ${KESTREL_FIXTURES:-~/.cache/kestrel/fixtures}/qwen2.5-coder-0.5b-instruct.gguf
          --out   tests/fixtures/llamacpp/qwen2.5-coder-0.5b-instruct.json

For each case the prompt is evaluated, then exactly 32 tokens are decoded
greedily (argmax of the last logits; end-of-sequence tokens are NOT treated
specially). Chat cases are rendered with the GGUF's own tokenizer.chat_template
(Qwen2.5's template inserts its default system prompt) and tokenized with
special tokens parsed, no BOS added. The last case is a raw prompt without any
template.

Besides the required fields each case records "output_margins": the gap between
the top-1 and top-2 logits at every greedy step. llama.cpp quantizes
activations for its quantized matmuls, so an engine computing in float32 can
legitimately disagree where that gap is tiny.
"""

import argparse
import hashlib
import json
import os
import sys

import jinja2
import jinja2.ext
import jinja2.sandbox
import llama_cpp
import numpy as np
from llama_cpp import Llama

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GGUF_NAME = "qwen2.5-coder-0.5b-instruct.gguf"
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
NEW_TOKENS = 32

CHAT_CASES = [
    "Write a Python function that adds two numbers.",
    "What is the capital of France? Answer in one sentence.",
    "用一句话解释什么是递归。",
    # Long enough (over 64 prompt tokens) that the prefill goes through the batched f32 GEMM
    # rather than the integer dot products.
    "Explain how a hash map works in Python: hashing, collision resolution with open "
    "addressing, resizing and load factors, why keys must be immutable, and the time "
    "complexity of lookup, insertion and deletion. Then compare it with a balanced binary "
    "search tree and say when you would prefer each one.",
]
RAW_CASES = ["def fibonacci(n):"]


def default_model_path():
    root = os.environ.get("KESTREL_FIXTURES") or os.path.join(
        os.path.expanduser("~"), ".cache", "kestrel", "fixtures"
    )
    return os.path.join(root, GGUF_NAME)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def render_chat(template, messages):
    """Render like transformers' apply_chat_template does."""

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


def dump_json(obj, indent=0):
    """Pretty JSON with lists of numbers kept on one line."""
    pad = " " * indent
    if isinstance(obj, dict):
        items = [f'{pad} {json.dumps(k)}: {dump_json(v, indent + 1).lstrip()}' for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}" + ("\n" if indent == 0 else "")
    if isinstance(obj, list) and not all(isinstance(x, (int, float)) for x in obj):
        items = [pad + " " + dump_json(x, indent + 1).lstrip() for x in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":") if isinstance(obj, list) else None)


def last_logits(llm):
    # With logits_all=False llama-cpp-python does not copy logits into llm.scores;
    # read the logits of the last evaluated token straight from the context.
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float32)


def greedy(llm, prompt_ids, n):
    llm.reset()
    llm.eval(prompt_ids)
    out, margins = [], []
    for step in range(n):
        logits = last_logits(llm)
        top2 = np.argsort(logits)[-2:]
        tok = int(np.argmax(logits))
        margins.append(float(logits[top2[1]] - logits[top2[0]]))
        out.append(tok)
        if step + 1 < n:
            llm.eval([tok])
    return out, margins


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=default_model_path())
    ap.add_argument(
        "--out",
        default=os.path.join(REPO_ROOT, "tests", "fixtures", "llamacpp",
                             "qwen2.5-coder-0.5b-instruct.json"),
    )
    args = ap.parse_args()

    if not os.path.exists(args.model):
        sys.exit(f"{args.model} not found; run scripts/fetch-fixtures.sh first")
    sha = sha256_file(args.model)
    if sha != GGUF_SHA256:
        sys.exit(f"{args.model}: sha256 {sha} != expected {GGUF_SHA256}")

    llm = Llama(model_path=args.model, n_ctx=512, n_threads=2, logits_all=False, verbose=False)
    template = llm.metadata["tokenizer.chat_template"]

    cases = []
    for user in CHAT_CASES:
        text = render_chat(template, [{"role": "user", "content": user}])
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        cases.append({"user": user, "prompt_text": text, "prompt_ids": ids})
    for raw in RAW_CASES:
        ids = llm.tokenize(raw.encode("utf-8"), add_bos=False, special=True)
        cases.append({"user": None, "prompt_text": raw, "prompt_ids": ids})

    for case in cases:
        out, margins = greedy(llm, case["prompt_ids"], NEW_TOKENS)
        case["output_ids"] = out
        case["output_text"] = llm.detokenize(out, special=True).decode("utf-8", errors="replace")
        case["output_margins"] = [round(m, 4) for m in margins]
        print(f"--- {case['user'] if case['user'] is not None else case['prompt_text']!r}")
        print(case["output_text"])
        print(f"    (min top1-top2 margin {min(margins):.4f})")

    result = {
        "llama_cpp_python_version": llama_cpp.__version__,
        "gguf_sha256": sha,
        "n_ctx": 512,
        "new_tokens": NEW_TOKENS,
        "cases": cases,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(dump_json(result))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
