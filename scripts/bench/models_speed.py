"""Driver of scripts/bench-models.sh (see there): makes the Q4_K_M GGUFs, serves each with
`kestrel serve` and native `llama-server` in turn, streams one chat answer from each and prints
two Markdown tables: TTFT / decode tok/s / total time, and the readable latency (time until the
first 30, 100 and 300 characters are shown)."""

import json
import os
import socket
import subprocess
import time
import urllib.request

KESTREL = os.environ["KESTREL_BIN"]
LLAMA = os.environ["LLAMA_BIN"]
THREADS = int(os.environ["THREADS"])
WORK = os.environ["BENCH_DIR"]
MAX_TOKENS = int(os.environ["MAX_TOKENS"])
QUESTION = os.environ.get(
    "QUESTION", "Explain in a few sentences why the sky is blue."
)
READABLE = (30, 100, 300)

# model -> (`kestrel synth` arguments, the real checkpoint whose shapes it has)
MODELS = {
    "qwen3-1.7b": (["--arch", "qwen3", "--size", "1.7b"], "Qwen/Qwen3-1.7B"),
    "qwen1.5-1.8b": (["--arch", "qwen2", "--size", "1.8b"], "Qwen/Qwen1.5-1.8B-Chat"),
    "llama-3.2-1b": (["--arch", "llama", "--size", "1b"], "meta-llama/Llama-3.2-1B-Instruct"),
    "phi-3-mini": (["--arch", "phi3", "--size", "mini-4k"], "microsoft/Phi-3-mini-4k-instruct"),
}


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def model_file(name):
    """The model's Q4_K_M GGUF, or None (with the reason) when it cannot be written."""
    args, _ = MODELS[name]
    f16 = os.path.join(WORK, f"{name}-f16.gguf")
    if not os.path.exists(f16):
        part = f16[:-5] + ".part.gguf"
        r = subprocess.run([KESTREL, "synth", *args, "--dtype", "f16", "--format", "gguf",
                            "--tokenizer", os.environ["TOKENIZER_DIR"], "--out", part],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return None, (r.stderr.strip().splitlines() or ["kestrel synth failed"])[-1]
        os.rename(part, f16)
    path = os.path.join(WORK, f"{name}-q4_k_m.gguf")
    if not os.path.exists(path):
        run([os.path.join(LLAMA, "llama-quantize"), f16, path[:-5] + ".part.gguf", "Q4_K_M",
             str(THREADS)])
        os.rename(path[:-5] + ".part.gguf", path)
    return path, None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(url, proc, timeout=600):
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


def stream_answer(port):
    """One streamed greedy chat answer: (ttft, tok/s, total, {chars: seconds}, tokens)."""
    body = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": MAX_TOKENS,
            "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    first = last = None
    shown, readable, tokens = 0, {}, None
    with urllib.request.urlopen(req, timeout=3600) as r:
        for raw in r:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for c in chunk.get("choices", []):
                delta = c.get("delta", {})
                text = (delta.get("content") or "") + (delta.get("reasoning_content") or "") \
                    + (delta.get("reasoning") or "")
                if not text:
                    continue
                now = time.perf_counter() - start
                first = now if first is None else first
                last = now
                shown += len(text)
                for n in READABLE:
                    if n not in readable and shown >= n:
                        readable[n] = now
    total = time.perf_counter() - start
    tokens = tokens or MAX_TOKENS
    rate = (tokens - 1) / (last - first) if last and first is not None and last > first else 0.0
    return first or total, rate, total, readable, tokens


def serve(cmd, port):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        stream_answer(port)  # warm-up: page the weights in
        return stream_answer(port)
    finally:
        proc.terminate()
        proc.wait()


def engines(path):
    port = free_port()
    yield "kestrel", serve([KESTREL, "serve", "--model", path, "--port", str(port),
                            "--threads", str(THREADS), "--max-model-len", "4096"], port)
    port = free_port()
    yield "llama-server", serve([os.path.join(LLAMA, "llama-server"), "-m", path, "--port",
                                 str(port), "-t", str(THREADS), "-c", "4096", "--jinja"], port)


def ms(s):
    return f"{s * 1000:.0f}"


def main():
    os.makedirs(WORK, exist_ok=True)
    speed, readable, missing = [], [], []
    for name in os.environ["MODELS"].split():
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}")
        path, why = model_file(name)
        if path is None:
            missing.append(f"- {name} ({MODELS[name][1]}): not run: {why}")
            continue
        for engine, (ttft, rate, total, chars, tokens) in engines(path):
            speed.append(f"| {name} | {engine} | {ms(ttft)} | {rate:.1f} | {total:.2f} | {tokens} |")
            cells = " | ".join(ms(chars[n]) if n in chars else "-" for n in READABLE)
            readable.append(f"| {name} | {engine} | {ms(ttft)} | {cells} |")
    print(f"\nQuestion: {QUESTION!r}; {MAX_TOKENS} tokens, greedy, EOS ignored; "
          f"{THREADS} threads; Q4_K_M.\n")
    print("| model | engine | TTFT (ms) | decode tok/s | total (s) | tokens |")
    print("|---|---|---|---|---|---|")
    print("\n".join(speed))
    print("\nReadable latency: time until the first N characters of the answer are shown (ms).\n")
    print("| model | engine | first character | " + " | ".join(f"{n} chars" for n in READABLE) + " |")
    print("|---|---|---|" + "---|" * len(READABLE))
    print("\n".join(readable))
    if missing:
        print("\n" + "\n".join(missing))


if __name__ == "__main__":
    main()
