"""Driver of scripts/bench-ab.sh (see there): two kestrel binaries on the same GGUFs, runs
alternating between them, median prefill and decode tok/s of each and the ratio."""

import json
import os
import shlex
import statistics
import subprocess

BEFORE = os.environ["BEFORE_BIN"]
AFTER = os.environ["AFTER_BIN"]
BEFORE_ARGS = shlex.split(os.environ.get("BEFORE_ARGS", ""))
AFTER_ARGS = shlex.split(os.environ.get("AFTER_ARGS", ""))
THREADS = os.environ["THREADS"]
RUNS = int(os.environ["RUNS"])
WORK = os.environ["BENCH_DIR"]


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True)


def model_file(size, quant):
    """F16 GGUF by `kestrel synth`; Q8_0 / Q4_K by `kestrel quantize` of a bf16 synth."""
    f16 = os.path.join(WORK, f"qwen3-{size}-f16.gguf")
    tok = os.environ["TOKENIZER_DIR"]
    if not os.path.exists(f16):
        run([AFTER, "synth", "--size", size, "--dtype", "f16", "--format", "gguf",
             "--tokenizer", tok, "--out", f16[:-5] + ".part.gguf"])
        os.rename(f16[:-5] + ".part.gguf", f16)
    if quant == "f16":
        return f16
    path = os.path.join(WORK, f"qwen3-{size}-{quant}.gguf")
    if not os.path.exists(path):
        st = os.path.join(WORK, f"qwen3-{size}-bf16")
        if not os.path.exists(st):
            run([AFTER, "synth", "--size", size, "--dtype", "bf16", "--tokenizer", tok,
                 "--out", st])
        run([AFTER, "quantize", "--model", st, "--type", quant, "--out", path[:-5] + ".part.gguf"])
        os.rename(path[:-5] + ".part.gguf", path)
    return path


def once(binary, extra, path):
    prefill_ids = ",".join(str(1000 + 37 * i % 90000) for i in range(512))
    prompt_ids = ",".join(str(2000 + 53 * i % 90000) for i in range(32))
    common = [binary, "generate", "--model", path, "--threads", THREADS, "--raw",
              "--output", "json", "--temperature", "0"] + extra
    p = run(common + ["--prompt-ids", prefill_ids, "--max-tokens", "1"])
    d = run(common + ["--prompt-ids", prompt_ids, "--max-tokens", "128", "--ignore-eos"])
    last = lambda out: json.loads(out.stdout.strip().splitlines()[-1])
    return last(p)["prefill_tokens_per_s"], last(d)["decode_tokens_per_s"]


def main():
    print(f"threads {THREADS}, median of {RUNS} runs, binaries alternating run by run")
    print(f"before: {BEFORE} {' '.join(BEFORE_ARGS)}\nafter: {AFTER} {' '.join(AFTER_ARGS)}\n")
    print("| model | format | prefill before | prefill after | ratio | decode before "
          "| decode after | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for size in os.environ["SIZES"].split():
        for quant in os.environ["QUANTS"].split():
            path = model_file(size, quant)
            b, a = [], []
            for _ in range(RUNS):
                b.append(once(BEFORE, BEFORE_ARGS, path))
                a.append(once(AFTER, AFTER_ARGS, path))
            med = lambda xs, i: statistics.median(x[i] for x in xs)
            bp, bd, ap, ad = med(b, 0), med(b, 1), med(a, 0), med(a, 1)
            print(f"| Qwen3-{size} | {quant.upper()} | {bp:.1f} | {ap:.1f} | {ap / bp:.2f}x "
                  f"| {bd:.2f} | {ad:.2f} | {ad / bd:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
