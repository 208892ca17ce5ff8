"""Prefill and decode speed of llama.cpp (through llama-cpp-python) on one GGUF, measured the
way `kestrel generate` reports them: prefill = a 512-token prompt evaluated in one batch;
decode = 128 tokens evaluated one at a time after a 32-token prompt. Prints one JSON line with
the median of --runs runs."""

import argparse
import json
import random
import statistics
import time

from llama_cpp import Llama


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--decode", type=int, default=128)
    a = ap.parse_args()
    llm = Llama(
        model_path=a.gguf,
        n_threads=a.threads,
        n_threads_batch=a.threads,
        n_ctx=1024,
        n_batch=512,
        n_ubatch=512,
        verbose=False,
    )
    rng = random.Random(0)
    ids = lambda n: [rng.randrange(1000, 100000) for _ in range(n)]
    prefill, decode = [], []
    for _ in range(a.runs):
        llm.reset()
        toks = ids(a.prefill)
        t = time.perf_counter()
        llm.eval(toks)
        prefill.append(a.prefill / (time.perf_counter() - t))
        llm.reset()
        llm.eval(ids(a.prompt))
        nxt = ids(a.decode)
        t = time.perf_counter()
        for tok in nxt:
            llm.eval([tok])
        decode.append(a.decode / (time.perf_counter() - t))
    print(json.dumps({"prefill_tokens_per_s": statistics.median(prefill),
                      "decode_tokens_per_s": statistics.median(decode)}))


if __name__ == "__main__":
    main()
