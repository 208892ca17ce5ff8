"""Client of scripts/bench-response-cache.sh (see there): sends REQUESTS chat requests drawn
from QUESTIONS distinct greedy questions (a fixed seed, so every mode gets the same sequence),
one at a time over one keep-alive connection, and writes every request's latency, its
X-Kestrel-Cache value and its answer as JSON."""

import http.client
import json
import os
import random
import sys
import time

QUESTIONS_POOL = [
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "What does HTTP status 404 mean?",
    "Explain what a hash map is in one sentence.",
    "How do I list files in a directory with bash?",
    "What is the difference between a list and a tuple in Python?",
    "Write a SQL query that counts the rows of a table named users.",
    "What is a race condition?",
    "How do I read a file line by line in Rust?",
    "What is the time complexity of binary search?",
    "Write a JavaScript function that adds two numbers.",
    "What is Git used for?",
    "Explain recursion to a beginner.",
    "How do I create a virtual environment in Python?",
    "What is the difference between TCP and UDP?",
    "Write a regular expression that matches an email address.",
    "What does the `static` keyword mean in C?",
    "How do I sort a list of dictionaries by a key in Python?",
    "What is a Docker container?",
    "Write a haiku about compilers.",
]


def main():
    host, port = os.environ["HOST"], int(os.environ["PORT"])
    requests = int(os.environ.get("REQUESTS", "100"))
    num_questions = int(os.environ.get("QUESTIONS", "20"))
    max_tokens = int(os.environ.get("MAX_TOKENS", "32"))
    seed = int(os.environ.get("SEED", "0"))
    out = sys.argv[1]
    questions = QUESTIONS_POOL[:num_questions]
    order = random.Random(seed).choices(range(len(questions)), k=requests)
    conn = http.client.HTTPConnection(host, port, timeout=600)

    def ask(content):
        body = json.dumps({
            "messages": [{"role": "user", "content": content}],
            "temperature": 0,
            "max_tokens": max_tokens,
        })
        start = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body,
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        latency = time.perf_counter() - start
        if response.status != 200:
            raise SystemExit(f"HTTP {response.status}: {data[:300]!r}")
        answer = json.loads(data)["choices"][0]["message"]["content"]
        return latency, response.getheader("X-Kestrel-Cache"), answer

    # One request outside the measured set, so the first measured one meets a warm server.
    ask("Say hello.")
    records = []
    for q in order:
        latency, cache, answer = ask(questions[q])
        records.append({"question": q, "latency_s": latency, "cache": cache, "answer": answer})
    with open(out, "w") as f:
        json.dump(records, f)


if __name__ == "__main__":
    main()
