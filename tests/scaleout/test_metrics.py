"""`/metrics` under load, parsed with the official Prometheus Python client's text parser: every
vLLM name the routers and autoscalers read is there with vLLM's type and labels, the scheduler
gauges move while requests run and return to zero after, and `vllm:kv_cache_usage_perc` stays
within [0, 1] in every scrape."""

import threading
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families

from conftest import MODEL_NAME, http_get, stream_chat, wait_until

# Family names as the parser reports them: counters without their `_total` suffix.
EXPECTED = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:gpu_cache_usage_perc": "gauge",
    "vllm:cache_config_info": "gauge",
    "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter",
    "vllm:request_success": "counter",
    "vllm:num_preemptions": "counter",
    "vllm:prefix_cache_queries": "counter",
    "vllm:prefix_cache_hits": "counter",
    "vllm:gpu_prefix_cache_queries": "counter",
    "vllm:gpu_prefix_cache_hits": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:time_per_output_token_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:request_inference_time_seconds": "histogram",
    "vllm:request_prefill_time_seconds": "histogram",
    "vllm:request_decode_time_seconds": "histogram",
    "vllm:request_prompt_tokens": "histogram",
    "vllm:request_generation_tokens": "histogram",
    "vllm:iteration_tokens_total": "histogram",
    "kestrel_kv_cache_blocks": "gauge",
    "kestrel_kv_cache_free_blocks": "gauge",
    "kestrel_ready": "gauge",
    "kestrel_draining": "gauge",
    "kestrel_engine_healthy": "gauge",
    "kestrel_http_requests_in_flight": "gauge",
    "kestrel_http_requests": "counter",
}

NUM_REQUESTS = 16
MAX_TOKENS = 96


def scrape(port: int) -> dict:
    """{family name: family} of one scrape."""
    r = http_get(port, "/metrics")
    assert r is not None and r[0] == 200, r
    content_type = {k.lower(): v for k, v in r[1].items()}["content-type"]
    assert content_type.startswith("text/plain; version=0.0.4"), r[1]
    return {f.name: f for f in text_string_to_metric_families(r[2])}


def value(families: dict, name: str, **labels) -> float:
    (sample,) = [
        s for s in families[name].samples
        if s.name in (name, name + "_total") and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sample.value


def test_metrics_under_load(replicas):
    # Four running at most, so sixteen requests also make a waiting queue.
    replica = replicas("metrics", "--max-num-seqs", "4")
    replica.wait_ready()

    families = scrape(replica.port)
    for name, kind in EXPECTED.items():
        assert name in families, f"{name} missing; got {sorted(families)}"
        assert families[name].type == kind, f"{name} is {families[name].type}, not {kind}"
    for name in EXPECTED:
        if name.startswith("vllm:"):
            for s in families[name].samples:
                assert s.labels.get("model_name") == MODEL_NAME, s
                assert s.labels.get("engine") == "0", s
    info = families["vllm:cache_config_info"].samples[0]
    assert info.value == 1 and info.labels["block_size"] == "16", info
    assert int(info.labels["num_gpu_blocks"]) == value(families, "kestrel_kv_cache_blocks")
    before = {
        "success": sum(s.value for s in families["vllm:request_success"].samples),
        "generation": value(families, "vllm:generation_tokens"),
    }

    # Scrape continuously while the requests run.
    scrapes = []
    stop = threading.Event()

    def scraper():
        while not stop.is_set():
            scrapes.append(scrape(replica.port))

    t = threading.Thread(target=scraper)
    t.start()
    try:
        with ThreadPoolExecutor(NUM_REQUESTS) as pool:
            results = list(pool.map(lambda i: stream_chat(replica.port, MAX_TOKENS, f"m{i}"),
                                    range(NUM_REQUESTS)))
    finally:
        stop.set()
        t.join()

    for r in results:
        assert r["status"] == 200 and r["done"] and r["finish"] == "length", r
        assert r["usage"]["completion_tokens"] == MAX_TOKENS, r
    assert len(scrapes) >= 3, "too few scrapes during the load"
    running = [value(s, "vllm:num_requests_running") for s in scrapes]
    waiting = [value(s, "vllm:num_requests_waiting") for s in scrapes]
    usage = [value(s, "vllm:kv_cache_usage_perc") for s in scrapes]
    in_flight = [value(s, "kestrel_http_requests_in_flight") for s in scrapes]
    assert max(running) > 0, running
    assert max(running) <= 4, running
    assert max(waiting) > 0, waiting
    assert max(usage) > 0, usage
    assert all(0.0 <= u <= 1.0 for u in usage), usage
    assert max(in_flight) > 0, in_flight
    # Counters never go down between scrapes.
    generated = [value(s, "vllm:generation_tokens") for s in scrapes]
    assert generated == sorted(generated), generated

    # After the load: gauges back at zero, counters and histograms account for every request.
    def settled():
        f = scrape(replica.port)
        return f if (value(f, "vllm:num_requests_running") == 0
                     and value(f, "vllm:num_requests_waiting") == 0
                     and value(f, "kestrel_http_requests_in_flight") == 0) else None

    after = wait_until(settled, "the gauges to return to zero", timeout=30)
    assert value(after, "vllm:kv_cache_usage_perc") == 0.0
    success = after["vllm:request_success"]
    assert sum(s.value for s in success.samples) - before["success"] == NUM_REQUESTS
    assert value(after, "vllm:request_success", finished_reason="length") >= NUM_REQUESTS
    assert value(after, "vllm:generation_tokens") - before["generation"] == NUM_REQUESTS * MAX_TOKENS
    for name in ("vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds",
                 "vllm:request_queue_time_seconds", "vllm:request_prefill_time_seconds",
                 "vllm:request_decode_time_seconds", "vllm:request_generation_tokens"):
        (count,) = [s.value for s in after[name].samples if s.name == name + "_count"]
        assert count >= NUM_REQUESTS, (name, count)
    # Queued requests waited: the queue-time histogram saw more than nothing.
    queue_sum = [s.value for s in after["vllm:request_queue_time_seconds"].samples
                 if s.name.endswith("_sum")][0]
    assert queue_sum > 0
    assert value(after, "kestrel_http_requests", route="/v1/chat/completions", code="200") >= NUM_REQUESTS
