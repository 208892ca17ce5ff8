"""Driver of scripts/bench-cpu.sh (see there): makes the GGUFs, runs kestrel and native
llama.cpp (llama-bench; and the llama-cpp-python binding when PYTHON_PEER names its Python) one
after the other on the same files with the same threads, prints Markdown tables: speed, then
memory (peak RSS of `kestrel serve` and `llama-server` after one request) when MEMORY=1."""

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
KESTREL = os.environ["KESTREL_BIN"]
LLAMA = os.environ["LLAMA_BIN"]
PYTHON_PEER = os.environ.get("PYTHON_PEER", "")
THREADS = int(os.environ["THREADS"])
RUNS = int(os.environ["RUNS"])
WORK = os.environ["BENCH_DIR"]
# Kestrel's kernel paths to race, e.g. "auto avx2" (KESTREL_CPU_ISA); "auto" = run-time choice.
ISAS = os.environ.get("KESTREL_ISAS", "auto").split()


def run(cmd, env=None, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True,
                          env=None if env is None else {**os.environ, **env}, **kw)


def model_file(size, quant):
    f16 = os.path.join(WORK, f"qwen3-{size}-f16.gguf")
    if not os.path.exists(f16):
        run([KESTREL, "synth", "--size", size, "--dtype", "f16", "--format", "gguf",
             "--tokenizer", os.environ["TOKENIZER_DIR"], "--out", f16[:-5] + ".part.gguf"])
        os.rename(f16[:-5] + ".part.gguf", f16)
    if quant == "f16":
        return f16
    path = os.path.join(WORK, f"qwen3-{size}-{quant}.gguf")
    if not os.path.exists(path):
        # llama.cpp's own quantizer, so that both engines read the same quantized file.
        run([os.path.join(LLAMA, "llama-quantize"), f16, path[:-5] + ".part.gguf", quant.upper(),
             str(THREADS)])
        os.rename(path[:-5] + ".part.gguf", path)
    return path


def isa_env(isa):
    return {} if isa == "auto" else {"KESTREL_CPU_ISA": isa}


def kestrel(path, isa):
    """Median prefill and decode tok/s, the load time and the kernels named in the log."""
    prefill_ids = ",".join(str(1000 + 37 * i % 90000) for i in range(512))
    prompt_ids = ",".join(str(2000 + 53 * i % 90000) for i in range(32))
    common = [KESTREL, "generate", "--model", path, "--threads", str(THREADS), "--raw",
              "--output", "json", "--temperature", "0"]
    prefill, decode, loads, kernels = [], [], [], "?"
    for _ in range(RUNS):
        p = run(common + ["--prompt-ids", prefill_ids, "--max-tokens", "1"], env=isa_env(isa))
        prefill.append(json.loads(p.stdout.strip().splitlines()[-1])["prefill_tokens_per_s"])
        m = re.search(r" in ([0-9.]+)s", p.stderr)
        loads.append(float(m.group(1)) if m else float("nan"))
        m = re.search(r"on (cpu \(.*\)) in ", p.stderr)
        kernels = m.group(1) if m else kernels
        d = run(common + ["--prompt-ids", prompt_ids, "--max-tokens", "128", "--ignore-eos"],
                env=isa_env(isa))
        decode.append(json.loads(d.stdout.strip().splitlines()[-1])["decode_tokens_per_s"])
    return statistics.median(prefill), statistics.median(decode), statistics.median(loads), kernels


def llama_bench(path):
    """Native llama.cpp: llama-bench's pp512 and tg128, median of the samples of $RUNS
    repetitions, and where its weights went (its buffer types: AMX, CPU_REPACK, CPU_Mapped)."""
    out = run([os.path.join(LLAMA, "llama-bench"), "-m", path, "-t", str(THREADS),
               "-p", "512", "-n", "128", "-r", str(RUNS), "-o", "json", "-v"])
    res = {}
    for r in json.loads(out.stdout):
        key = "prefill" if r["n_prompt"] > 0 else "decode"
        res[key] = statistics.median(r["samples_ts"])
    buffers = dict(re.findall(r"load_tensors:\s+(\S+) model buffer size =\s+([0-9.]+ MiB)",
                              out.stderr))
    return res["prefill"], res["decode"], ", ".join(f"{k} {v}" for k, v in buffers.items())


def python_binding(path):
    out = run([PYTHON_PEER, os.path.join(HERE, "llamacpp_speed.py"), path,
               "--threads", str(THREADS), "--runs", str(RUNS)])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["prefill_tokens_per_s"], r["decode_tokens_per_s"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(url, proc, timeout=300):
    t = time.time()
    while time.time() - t < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}) before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def rss_after_one_request(cmd, port, env=None):
    """Peak and current RSS (MiB) of a server after loading and answering one chat request."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=None if env is None else {**os.environ, **env})
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        body = json.dumps({"messages": [{"role": "user", "content": "Write a short poem."}],
                           "max_tokens": 64, "temperature": 0}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body,
                                     {"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=600).read()
        status = open(f"/proc/{proc.pid}/status").read()
        kib = lambda k: int(re.search(rf"{k}:\s+(\d+) kB", status).group(1))
        return kib("VmHWM") / 1024, kib("VmRSS") / 1024
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def memory_table(path, ctx):
    print(f"\nPeak RSS after one request (`--max-model-len {ctx}` / `-c {ctx}`), "
          f"{os.path.basename(path)}\n")
    print("| server | peak RSS MiB | RSS MiB |")
    print("|---|---|---|")
    port = free_port()
    k = rss_after_one_request([KESTREL, "serve", "--model", path, "--threads", str(THREADS),
                               "--max-model-len", str(ctx), "--port", str(port)], port)
    port = free_port()
    l = rss_after_one_request([os.path.join(LLAMA, "llama-server"), "-m", path, "-t",
                               str(THREADS), "-c", str(ctx), "-np", "1", "--port", str(port)],
                              port)
    print(f"| kestrel serve | {k[0]:.0f} | {k[1]:.0f} |")
    print(f"| llama-server (native) | {l[0]:.0f} | {l[1]:.0f} |")
    print(f"\nkestrel / llama-server peak RSS: {k[0] / l[0]:.2f}x")


def main():
    bw = float(run([os.environ["MEMBW_BIN"], "--threads", str(THREADS)]).stdout)
    flags = open("/proc/cpuinfo").read()
    model = re.search(r"model name\s*:\s*(.*)", flags).group(1)
    have = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                        "avx512_bf16", "amx_int8") if re.search(rf"\b{f}\b", flags)]
    print(f"CPU: {model}; flags: {' '.join(have)}")
    print(f"threads {THREADS}, read bandwidth {bw:.1f} GB/s, median of {RUNS} runs\n")
    peer_cols = " | prefill llama-cpp-python | decode llama-cpp-python" if PYTHON_PEER else ""
    print("| model | format | GiB | kestrel kernels | prefill kestrel | prefill llama.cpp | ratio "
          "| decode kestrel | decode llama.cpp | ratio | decode / roofline (kestrel, llama.cpp) "
          f"| kestrel load s{peer_cols} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if PYTHON_PEER else ""))
    kernels_seen, llama_seen = {}, {}
    for size in os.environ["SIZES"].split():
        for quant in os.environ["QUANTS"].split():
            path = model_file(size, quant)
            gib = os.path.getsize(path) / 2**30
            roof = bw * 1e9 / os.path.getsize(path)
            lp, ld, buffers = llama_bench(path)
            llama_seen[quant] = buffers
            extra = ""
            if PYTHON_PEER:
                pp, pd = python_binding(path)
                extra = f" | {pp:.1f} | {pd:.2f}"
            for isa in ISAS:
                kp, kd, load, kernels = kestrel(path, isa)
                kernels_seen[isa] = kernels
                print(f"| Qwen3-{size} | {quant.upper()} | {gib:.2f} | {isa} | {kp:.1f} | "
                      f"{lp:.1f} | {kp / lp:.2f}x | {kd:.2f} | {ld:.2f} | {kd / ld:.2f}x | "
                      f"{kd / roof:.0%}, {ld / roof:.0%} | {load:.2f}{extra} |", flush=True)
    print()
    for isa, k in kernels_seen.items():
        print(f"kestrel kernels ({isa}): {k}  ")
    for quant, b in llama_seen.items():
        print(f"llama.cpp weight buffers ({quant}): {b}  ")
    if os.environ.get("MEMORY") == "1":
        size = os.environ["SIZES"].split()[0]
        memory_table(model_file(size, "q4_k_m"), int(os.environ.get("MEMORY_CTX", "4096")))


if __name__ == "__main__":
    main()
