"""Shared set-up of the scale-out tests: the kestrel binary, a tiny random-weight Qwen3 with the
real Qwen3 tokenizer, replicas on free loopback ports, and small HTTP helpers (stdlib only).

Run by `tests/scaleout/run.sh`, which builds or takes the binary (KESTREL_BIN) and makes the venv.
Every wait polls an endpoint against a deadline; nothing sleeps to synchronise.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

BIN = os.environ.get("KESTREL_BIN", "kestrel")
FIXTURES = Path(os.environ.get("KESTREL_FIXTURES", Path.home() / ".cache/kestrel/fixtures"))
MODEL_NAME = "qwen3-tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, what: str, timeout: float = 60.0, interval: float = 0.02):
    """Polls `predicate` until it returns a truthy value (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def http_get(port: int, path: str, timeout: float = 5.0):
    """(status, headers, body) or None when nothing answers on the port."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read().decode()
        conn.close()
        return r.status, dict(r.getheaders()), body
    except OSError:
        return None


def chat_body(max_tokens: int, session: str, stream: bool = True) -> bytes:
    return json.dumps(
        {
            "model": MODEL_NAME,
            "messages": [{"role": "user", "content": f"Tell a long story about {session}."}],
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "temperature": 0,
            "stream": stream,
            "stream_options": {"include_usage": True},
        }
    ).encode()


def stream_chat(port: int, max_tokens: int, session: str, timeout: float = 180.0) -> dict:
    """One streamed chat completion; returns what a client saw of it."""
    out = {"session": session, "status": None, "served_by": None, "finish": None, "usage": None,
           "chunks": 0, "done": False, "error": None, "end": None}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("POST", "/v1/chat/completions", body=chat_body(max_tokens, session),
                     headers={"Content-Type": "application/json", "X-Session-Id": session})
        r = conn.getresponse()
        out["status"] = r.status
        out["served_by"] = r.getheader("X-Served-By")
        if r.status != 200:
            out["error"] = r.read().decode()
            return out
        while True:
            line = r.readline()
            if not line:
                break
            line = line.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                out["done"] = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                out["error"] = chunk["error"]
                continue
            out["chunks"] += 1
            if chunk.get("usage"):
                out["usage"] = chunk["usage"]
            for c in chunk.get("choices", []):
                out["finish"] = c.get("finish_reason") or out["finish"]
        conn.close()
    except OSError as e:
        out["error"] = repr(e)
    out["end"] = time.monotonic()
    return out


class Replica:
    """One `kestrel serve` process on a free loopback port."""

    def __init__(self, model_dir: Path, log_dir: Path, name: str, *extra: str):
        self.name = name
        self.port = free_port()
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [BIN, "--log-format", "json", "serve", "--model", str(model_dir), "--served-model-name",
             MODEL_NAME, "--port", str(self.port), "--max-model-len", "1024",
             "--kv-cache-memory", "64MiB", "--threads", "1", *extra],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"replica {self.name} exited:\n{self.log_path.read_text()}")
        r = http_get(self.port, "/ready")
        return r is not None and r[0] == 200

    def wait_ready(self, timeout: float = 120.0):
        wait_until(self.ready, f"replica {self.name} to be ready", timeout)

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def work_dir():
    with tempfile.TemporaryDirectory(prefix="kestrel-scaleout-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def model_dir(work_dir) -> Path:
    tokenizer = FIXTURES / "qwen3-tokenizer"
    assert (tokenizer / "tokenizer.json").exists(), f"missing {tokenizer}: run scripts/fetch-fixtures.sh"
    out = work_dir / "model"
    subprocess.run([BIN, "synth", "--size", "tiny", "--dtype", "f32", "--seed", "7", "--out", str(out),
                    "--tokenizer", str(tokenizer)], check=True, capture_output=True)
    return out


@pytest.fixture
def replicas(model_dir, work_dir):
    """Starts replicas on demand; kills whatever is left at the end of the test."""
    started = []

    def start(name: str, *extra: str) -> Replica:
        r = Replica(model_dir, work_dir, name, *extra)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()
