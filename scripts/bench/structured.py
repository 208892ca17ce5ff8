"""Decode speed with and without a JSON schema against a running `kestrel serve`.

For each of 1 and STREAMS concurrent streams, and for free text and a JSON-schema answer,
sends ROUNDS alternating rounds of streamed chat requests (max_tokens MAX_TOKENS, greedy), and
measures each stream's decode rate: completion tokens after the first, over the time from the
first content chunk to the last. The free requests set `ignore_eos` (the model's free answer
would otherwise end after a few dozen tokens while the JSON goes on to MAX_TOKENS, and the two
rates would be of different lengths); a schema-constrained answer ends where its grammar
completes or at MAX_TOKENS. Prints a table with the
aggregate tok/s (sum over streams) of each mode and the constrained / free ratio, and writes
the raw numbers as JSON to the path given as the only argument.
"""

import json
import os
import sys
import threading
import time
import urllib.request

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = os.environ.get("PORT", "8132")
STREAMS = int(os.environ.get("STREAMS", "8"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
MAX_TOKENS = int(os.environ.get("MAX_TOKENS", "128"))
URL = f"http://{HOST}:{PORT}/v1/chat/completions"

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "country": {"type": "string"},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"day": {"type": "string"}, "high": {"type": "integer"}, "low": {"type": "integer"}, "summary": {"type": "string"}},
                "required": ["day", "high", "low", "summary"],
            },
        },
    },
    "required": ["city", "country", "unit", "days"],
}


def one(stream_id, constrained, out):
    body = {
        "messages": [{"role": "user", "content": f"Write a detailed seven-day weather forecast for city number {stream_id} as JSON."}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if not constrained:
        body["ignore_eos"] = True
    if constrained:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "forecast", "schema": SCHEMA}}
    req = urllib.request.Request(URL, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    first = last = None
    tokens = 0
    with urllib.request.urlopen(req) as r:
        for line in r:
            line = line.strip()
            if not line.startswith(b"data:") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                now = time.perf_counter()
                first = first or now
                last = now
    if first is None or last <= first or tokens < 2:
        out.append(None)
    else:
        out.append((tokens - 1) / (last - first))


def one_round(streams, constrained):
    out = []
    threads = [threading.Thread(target=one, args=(i, constrained, out)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    valid = [r for r in out if r is not None]
    return sum(valid) / len(valid) * streams if valid else float("nan")


def run(streams):
    """Median aggregate tok/s of free and schema rounds, alternating so that load drifts on a
    shared machine reach both modes alike."""
    free, schema = [], []
    for _ in range(ROUNDS):
        free.append(one_round(streams, False))
        schema.append(one_round(streams, True))
    median = lambda xs: sorted(xs)[len(xs) // 2]
    return median(free), median(schema)


def main():
    results = {}
    print(f"{'streams':>8} {'free tok/s':>12} {'schema tok/s':>13} {'ratio':>7}")
    for streams in (1, STREAMS):
        free, schema = run(streams)
        results[streams] = {"free": free, "schema": schema, "ratio": schema / free}
        print(f"{streams:>8} {free:>12.1f} {schema:>13.1f} {schema / free:>7.3f}")
    with open(sys.argv[1], "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
