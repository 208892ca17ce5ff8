"""Two `kestrel serve` replicas behind HAProxy (Debian's), routed by consistent hashing on a
session header, with HAProxy's active health check on `/ready` (what a Kubernetes Service does
with a readiness probe). 64 concurrent streamed requests all complete; one replica gets SIGTERM
mid-run: its in-flight requests finish, new requests go to the other replica, nothing is lost,
and the drained replica exits 0.

The drained replica answers new requests 503 + Retry-After until HAProxy's next health check
marks it down; HAProxy retries those on the other server (`retry-on 503`, `option redispatch`
avoids the server that failed), so the client never sees the 503.
"""

import csv
import io
import json
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import free_port, http_get, stream_chat, wait_until

NUM_REQUESTS = 64
MAX_TOKENS = 160
NUM_LATE = 16
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

HAPROXY_CFG = """
global
    maxconn 1024
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 300s
    timeout server 300s
    # Refused (503 while draining) or unreachable: try again, on another server. A request is
    # replayed only if HAProxy holds all of it, so wait for the body before connecting.
    retries 3
    retry-on conn-failure empty-response 503
    option redispatch 1
    option http-buffer-request

frontend api
    bind 127.0.0.1:{port}
    default_backend kestrel

frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats

backend kestrel
    balance hdr(X-Session-Id)
    hash-type consistent
    option httpchk GET /ready
    http-check expect status 200
    default-server check inter 100ms fall 1 rise 1
    http-response set-header X-Served-By %[srv_name]
{servers}
"""


class HAProxy:
    def __init__(self, work_dir, backends):
        self.port = free_port()
        self.stats_port = free_port()
        servers = "\n".join(f"    server {name} 127.0.0.1:{port}" for name, port in backends)
        cfg = work_dir / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(port=self.port, stats_port=self.stats_port, servers=servers))
        subprocess.run([HAPROXY, "-c", "-q", "-f", str(cfg)], check=True)
        self.log_path = work_dir / "haproxy.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def server_status(self) -> dict:
        r = http_get(self.stats_port, "/stats;csv")
        if r is None or r[0] != 200:
            return {}
        rows = csv.DictReader(io.StringIO(r[2].lstrip("# ")))
        return {row["svname"]: row["status"] for row in rows
                if row["pxname"] == "kestrel" and row["svname"] not in ("FRONTEND", "BACKEND")}

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        self.log.close()


def metric(replica, name: str) -> float:
    """One unlabelled-by-reason series of a replica's /metrics (0 when it does not answer)."""
    r = http_get(replica.port, "/metrics")
    if r is None or r[0] != 200:
        return 0.0
    for line in r[2].splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def not_ready(replica) -> bool:
    r = http_get(replica.port, "/ready")
    return r is None or r[0] == 503


def test_two_replicas_behind_haproxy_survive_a_drain(replicas, work_dir):
    r1 = replicas("r1", "--shutdown-timeout", "120")
    r2 = replicas("r2", "--shutdown-timeout", "120")
    r1.wait_ready()
    r2.wait_ready()
    lb = HAProxy(work_dir, [("r1", r1.port), ("r2", r2.port)])
    try:
        wait_until(lambda: lb.server_status() == {"r1": "UP", "r2": "UP"},
                   "HAProxy to see both replicas up", timeout=30)

        # Which replica a session maps to: one short request per session, routed by the hash.
        sessions = [f"session-{i}" for i in range(NUM_REQUESTS)]
        with ThreadPoolExecutor(16) as pool:
            probe = list(pool.map(lambda s: stream_chat(lb.port, 1, s), sessions))
        home = {p["session"]: p["served_by"] for p in probe}
        assert all(p["status"] == 200 and p["done"] for p in probe), probe
        on_r1 = [s for s in sessions if home[s] == "r1"]
        assert on_r1 and len(on_r1) < NUM_REQUESTS, f"the hash sends everything one way: {home}"
        # Consistent hashing: the same session lands on the same replica again.
        again = stream_chat(lb.port, 1, on_r1[0])
        assert again["served_by"] == "r1", again

        # 64 concurrent streams; SIGTERM to r1 a quarter of the way through its share.
        pool = ThreadPoolExecutor(NUM_REQUESTS + NUM_LATE)
        started = time.monotonic()
        first = [pool.submit(stream_chat, lb.port, MAX_TOKENS, s) for s in sessions]
        base = metric(r1, "vllm:generation_tokens_total")
        quarter = base + len(on_r1) * MAX_TOKENS / 4
        wait_until(lambda: metric(r1, "vllm:generation_tokens_total") >= quarter,
                   "r1 to be a quarter through its streams", timeout=120)
        assert metric(r1, "vllm:num_requests_running") > 0
        sigterm_at = time.monotonic()
        r1.terminate()

        # New requests of sessions whose home is r1, sent once r1 is draining: all go to r2.
        wait_until(lambda: not_ready(r1), "r1 to report not ready", timeout=10)
        late = [pool.submit(stream_chat, lb.port, 8, on_r1[i % len(on_r1)]) for i in range(NUM_LATE)]

        results = [f.result(timeout=300) for f in first]
        late_results = [f.result(timeout=300) for f in late]
        pool.shutdown()

        lost = [r for r in results + late_results
                if not (r["status"] == 200 and r["done"] and r["error"] is None)]
        assert not lost, f"{len(lost)} requests failed: {lost[:3]}\n{lb.log_path.read_text()}"
        for r in results:
            assert r["finish"] == "length" and r["usage"]["completion_tokens"] == MAX_TOKENS, r
        # r1's streams that were running at SIGTERM finished on r1, after the signal.
        drained = [r for r in results if r["served_by"] == "r1" and r["end"] > sigterm_at]
        print(f"SIGTERM after {sigterm_at - started:.2f} s; r1 streams ended up to "
              f"{max(r['end'] for r in results if r['served_by'] == 'r1') - started:.2f} s; "
              f"{len(drained)} finished after the signal")
        assert drained, "no request was in flight on r1 when it got SIGTERM"
        # Every new request went to r2, including those of sessions whose home was r1.
        assert {r["served_by"] for r in late_results} == {"r2"}, late_results
        assert all(r["usage"]["completion_tokens"] == 8 for r in late_results)

        # The drained replica exits by itself, with status 0.
        assert r1.proc.wait(timeout=150) == 0, r1.log_path.read_text()
        # --log-format json: one JSON object a line; each request's access line has its id.
        lines = [json.loads(line) for line in r1.log_path.read_text().splitlines()]
        assert any(line["message"] == "drained: every request finished" for line in lines), lines
        access = [line for line in lines if line.get("target") == "kestrel::access"
                  and line["path"] == "/v1/chat/completions"]
        assert {line["status"] for line in access} <= {200, 503}, access
        done = [line for line in access if line["status"] == 200 and line["completion_tokens"] == MAX_TOKENS]
        assert len(done) >= len(drained), access
        assert all(len(line["span"]["request_id"]) == 32 and line["ttft_ms"] > 0 for line in done), done
        wait_until(lambda: lb.server_status().get("r1") == "DOWN", "HAProxy to mark r1 down", timeout=10)
        assert r2.ready()
    finally:
        lb.stop()
