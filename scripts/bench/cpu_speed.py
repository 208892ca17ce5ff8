"""Driver of scripts/bench-cpu.sh (see there): makes the GGUFs, runs both engines one after
the other with the same threads, prints a Markdown table."""

import json
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
KESTREL = os.environ["KESTREL_BIN"]
THREADS = int(os.environ["THREADS"])
RUNS = int(os.environ["RUNS"])
WORK = os.environ["BENCH_DIR"]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def model_file(size, quant):
    f16 = os.path.join(WORK, f"qwen3-{size}-f16.gguf")
    if not os.path.exists(f16):
        run([KESTREL, "synth", "--size", size, "--dtype", "f16", "--format", "gguf",
             "--tokenizer", os.environ["TOKENIZER_DIR"], "--out", f16])
    if quant == "f16":
        return f16
    path = os.path.join(WORK, f"qwen3-{size}-{quant}.gguf")
    if not os.path.exists(path):
        run([sys.executable, os.path.join(HERE, "quantize.py"), f16, path, quant])
    return path


def kestrel(path):
    """Median prefill and decode tok/s, and the load time of the first run."""
    prefill_ids = ",".join(str(1000 + 37 * i % 90000) for i in range(512))
    prompt_ids = ",".join(str(2000 + 53 * i % 90000) for i in range(32))
    common = [KESTREL, "generate", "--model", path, "--threads", str(THREADS), "--raw",
              "--output", "json", "--temperature", "0"]
    prefill, decode, loads = [], [], []
    for _ in range(RUNS):
        p = run(common + ["--prompt-ids", prefill_ids, "--max-tokens", "1"])
        prefill.append(json.loads(p.stdout.strip().splitlines()[-1])["prefill_tokens_per_s"])
        m = re.search(r" in ([0-9.]+)s", p.stderr)
        loads.append(float(m.group(1)) if m else float("nan"))
        d = run(common + ["--prompt-ids", prompt_ids, "--max-tokens", "128", "--ignore-eos"])
        decode.append(json.loads(d.stdout.strip().splitlines()[-1])["decode_tokens_per_s"])
    return statistics.median(prefill), statistics.median(decode), statistics.median(loads)


def llamacpp(path):
    out = run([sys.executable, os.path.join(HERE, "llamacpp_speed.py"), path,
               "--threads", str(THREADS), "--runs", str(RUNS)])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["prefill_tokens_per_s"], r["decode_tokens_per_s"]


def main():
    bw = float(run([os.environ["MEMBW_BIN"], "--threads", str(THREADS)]).stdout)
    print(f"threads {THREADS}, read bandwidth {bw:.1f} GB/s, median of {RUNS} runs\n")
    print("| model | format | GiB | prefill kestrel | prefill llama.cpp | ratio "
          "| decode kestrel | decode llama.cpp | ratio | decode / roofline (kestrel, llama.cpp) "
          "| kestrel load s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size in os.environ["SIZES"].split():
        for quant in os.environ["QUANTS"].split():
            path = model_file(size, quant)
            gib = os.path.getsize(path) / 2**30
            kp, kd, load = kestrel(path)
            lp, ld = llamacpp(path)
            roof = bw * 1e9 / os.path.getsize(path)
            print(f"| Qwen3-{size} | {quant.upper()} | {gib:.2f} | {kp:.1f} | {lp:.1f} | "
                  f"{kp / lp:.2f}x | {kd:.2f} | {ld:.2f} | {kd / ld:.2f}x | "
                  f"{kd / roof:.0%}, {ld / roof:.0%} | {load:.2f} |", flush=True)


if __name__ == "__main__":
    main()
