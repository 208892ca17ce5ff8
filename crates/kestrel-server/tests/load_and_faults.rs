//! Load and fault tests over loopback, each bounded in time, on the tiny model:
//! - 256 concurrent streaming clients against a queue cap: every admitted request completes with
//!   its own answer, the rest get 503 with `Retry-After`, and the process stays under a stated
//!   memory bound;
//! - 100 clients that hang up mid-stream: their sequences are aborted and every KV block is back
//!   in the pool (read through the metrics) within a few steps;
//! - slow clients (slowloris headers, readers that never read) do not stall anyone else;
//! - an engine panic fails the requests in flight (500, or an in-band error on a stream already
//!   under way) and flips `/health` to 503.
//!
//! Each client asks for an answer no other client can produce: a `logit_bias` of +100 on its own
//! token makes greedy decoding repeat that token, whatever the batch around it. A request that
//! saw another's tokens would show a foreign word.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::server::{engine, engine_on, peak_rss_bytes, spawn, sse_data, Server};
use kestrel_backend::cpu::CpuBackend;
use kestrel_backend::testing::{Fault, FaultyBackend};
use kestrel_engine::{EngineConfig, EngineMetrics};
use kestrel_server::ServerConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Whole-test bound: a hang fails the test instead of the CI job.
const TEST_BOUND: Duration = Duration::from_secs(240);

/// Peak resident memory allowed for the test process (tokenizer, tiny model, engines, 256
/// connections and their streams); measured peaks are about a third of it.
const RSS_BOUND_BYTES: u64 = 1536 << 20;

/// Distinct tokens whose text is a plain ASCII word, one per client.
fn word_tokens(server: &Server, n: usize) -> Vec<u32> {
    let tok = &server.tokenizer;
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for id in 1000u32..60_000 {
        let text = tok.decode(&[id], false).expect("decode");
        let word = text.strip_prefix(' ').unwrap_or("");
        if word.len() >= 3 && word.bytes().all(|b| b.is_ascii_lowercase()) && seen.insert(text) {
            out.push(id);
            if out.len() == n {
                return out;
            }
        }
    }
    panic!("not enough word tokens");
}

/// A streaming completion whose greedy answer is `token` repeated `max_tokens` times.
fn biased_stream(i: usize, token: u32, max_tokens: usize) -> Value {
    json!({
        "prompt": [100 + i as u32, 200, 300], "max_tokens": max_tokens, "temperature": 0,
        "ignore_eos": true, "logit_bias": {token.to_string(): 100}, "stream": true,
    })
}

async fn wait_for(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        // Polls a condition; correctness does not depend on how long this waits.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn all_blocks_free(m: &EngineMetrics) -> bool {
    m.num_requests_running.load(Ordering::Acquire) == 0
        && m.num_requests_waiting.load(Ordering::Acquire) == 0
        && m.num_kv_blocks_free.load(Ordering::Acquire)
            == m.num_kv_blocks_total.load(Ordering::Acquire)
}

/// A value of the Prometheus text at `/metrics`.
async fn scrape(client: &reqwest::Client, server: &Server, name: &str) -> f64 {
    let text = client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

enum Outcome {
    Done {
        text: String,
        finish: String,
    },
    Refused {
        retry_after: Option<String>,
        body: Value,
    },
}

async fn run_client(client: reqwest::Client, url: String, body: Value) -> Outcome {
    let mut response = client.post(url).json(&body).send().await.expect("send");
    let status = response.status().as_u16();
    if status == 503 {
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        return Outcome::Refused {
            retry_after,
            body: response.json().await.expect("JSON error"),
        };
    }
    assert_eq!(status, 200);
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("stream") {
        bytes.extend_from_slice(&chunk);
    }
    let events = sse_data(&bytes);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let (mut text, mut finish) = (String::new(), String::new());
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event).expect("JSON chunk");
        assert!(chunk.get("error").is_none(), "{chunk}");
        for c in chunk["choices"].as_array().unwrap() {
            text.push_str(c["text"].as_str().unwrap());
            if let Some(f) = c["finish_reason"].as_str() {
                finish = f.to_string();
            }
        }
    }
    Outcome::Done { text, finish }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_against_a_queue_cap_get_their_own_answer_or_503() {
    tokio::time::timeout(TEST_BOUND, async {
        let server = spawn(
            engine(EngineConfig {
                max_model_len: 256,
                num_blocks: 1024,
                max_num_seqs: 32,
                max_queued_requests: 64,
                ..EngineConfig::default()
            }),
            ServerConfig::default(),
        )
        .await;
        const CLIENTS: usize = 256;
        const MAX_TOKENS: usize = 8;
        let tokens = word_tokens(&server, CLIENTS);
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let started = Instant::now();
        let tasks: Vec<_> = tokens
            .iter()
            .enumerate()
            .map(|(i, &token)| {
                let body = biased_stream(i, token, MAX_TOKENS);
                tokio::spawn(run_client(
                    client.clone(),
                    server.url("/v1/completions"),
                    body,
                ))
            })
            .collect();
        let (mut done, mut refused) = (0, 0);
        for (task, &token) in tasks.into_iter().zip(&tokens) {
            match task.await.expect("client task") {
                Outcome::Done { text, finish } => {
                    let want = server
                        .tokenizer
                        .decode(&[token; MAX_TOKENS], false)
                        .unwrap();
                    assert_eq!(text, want, "a stream with someone else's tokens");
                    assert_eq!(finish, "length");
                    done += 1;
                }
                Outcome::Refused { retry_after, body } => {
                    assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
                    assert_eq!(body["error"]["code"], 503, "{body}");
                    assert!(
                        body["error"]["message"]
                            .as_str()
                            .unwrap()
                            .contains("queue is full"),
                        "{body}"
                    );
                    refused += 1;
                }
            }
        }
        let elapsed = started.elapsed();
        assert_eq!(done + refused, CLIENTS);
        assert!(done >= 64, "the queue admits at least its capacity: {done}");
        assert!(
            refused > 0,
            "256 clients against a cap of 64 queued: none refused"
        );
        wait_for("the engine to go idle", Duration::from_secs(30), || {
            all_blocks_free(&server.metrics)
        })
        .await;
        assert_eq!(
            server.metrics.finished_length.load(Ordering::Acquire),
            done as u64
        );
        let rss = peak_rss_bytes().unwrap_or(0);
        eprintln!(
            "{CLIENTS} clients: {done} completed, {refused} refused with 503 in {elapsed:.2?}; \
             peak RSS {} MiB",
            rss >> 20
        );
        assert!(rss < RSS_BOUND_BYTES, "peak RSS {} MiB", rss >> 20);
    })
    .await
    .expect("bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_hang_up_mid_stream_give_their_blocks_back() {
    tokio::time::timeout(TEST_BOUND, async {
        let hooks = FaultyBackend::new(CpuBackend::new(), Fault::Panic);
        let server = spawn(
            engine_on(
                hooks.clone(),
                EngineConfig {
                    max_model_len: 256,
                    num_blocks: 2048,
                    max_num_seqs: 128,
                    ..EngineConfig::default()
                },
            ),
            ServerConfig::default(),
        )
        .await;
        const CLIENTS: usize = 100;
        const MAX_TOKENS: usize = 200;
        let tokens = word_tokens(&server, CLIENTS);
        let m = server.metrics.clone();
        // Each client reads its first token, then waits until all have one, then hangs up.
        let all_streaming = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
        let hung_up = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
        let mut tasks = Vec::new();
        for (i, &token) in tokens.iter().enumerate() {
            let body = biased_stream(i, token, MAX_TOKENS).to_string();
            let request = format!(
                "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let (addr, all_streaming, hung_up) =
                (server.addr, all_streaming.clone(), hung_up.clone());
            tasks.push(tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.expect("connect");
                stream.write_all(request.as_bytes()).await.expect("send");
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(6).any(|w| w == b"\"text\"") {
                    let n = stream.read(&mut buf).await.expect("read");
                    assert!(n > 0, "closed before the first token");
                    seen.extend_from_slice(&buf[..n]);
                }
                all_streaming.wait().await;
                drop(stream);
                hung_up.wait().await;
            }));
        }
        all_streaming.wait().await;
        let running = m.num_requests_running.load(Ordering::Acquire);
        hung_up.wait().await;
        let (steps_at_hang_up, tokens_at_hang_up) =
            (hooks.steps(), m.generation_tokens.load(Ordering::Acquire));
        for t in tasks {
            t.await.expect("client");
        }
        wait_for(
            "every block back in the pool",
            Duration::from_secs(60),
            || all_blocks_free(&m),
        )
        .await;
        let steps_after = hooks.steps() - steps_at_hang_up;
        let tokens_after = m.generation_tokens.load(Ordering::Acquire) - tokens_at_hang_up;
        assert_eq!(m.finished_abort.load(Ordering::Acquire), CLIENTS as u64);
        assert_eq!(
            m.finished_length.load(Ordering::Acquire),
            0,
            "none ran to the end"
        );
        let client = reqwest::Client::new();
        let free = scrape(&client, &server, "kestrel_kv_cache_free_blocks").await;
        let total = scrape(&client, &server, "kestrel_kv_cache_blocks").await;
        assert_eq!(free, total, "/metrics shows every block free");
        assert_eq!(
            scrape(&client, &server, "vllm:num_requests_running").await,
            0.0
        );
        eprintln!(
            "{CLIENTS} hang-ups ({running} running at once): all blocks free after {steps_after} \
             more steps and {tokens_after} more tokens"
        );
        // The server learns of a hang-up when its socket reports it; from then on the sequence
        // is aborted before the next step. A few steps of slack cover the loopback's latency.
        assert!(
            steps_after <= 8,
            "{steps_after} steps after the hang-ups before every block was free"
        );
    })
    .await
    .expect("bounded in time");
}

/// A connection sending its request headers one byte at a time, never finishing.
async fn slowloris(addr: std::net::SocketAddr, stop: tokio::sync::watch::Receiver<bool>) -> bool {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send");
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut stop = stop;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if stream.write_all(b"X").await.is_err() {
                    return false;
                }
            }
            _ = stop.changed() => return true,
        }
    }
}

/// A streaming request whose client reads nothing until told to, through a small receive
/// buffer, so the server's writes block. Returns the whole response once read.
async fn slow_reader(
    addr: std::net::SocketAddr,
    body: String,
    go: tokio::sync::watch::Receiver<bool>,
) -> Vec<u8> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = socket.connect(addr).await.expect("connect");
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut go = go;
    go.changed().await.expect("told to read");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_slow_readers_do_not_stall_other_clients() {
    tokio::time::timeout(TEST_BOUND, async {
        let server = spawn(
            engine(EngineConfig {
                max_model_len: 512,
                num_blocks: 1024,
                ..EngineConfig::default()
            }),
            ServerConfig::default(),
        )
        .await;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let loris: Vec<_> = (0..64)
            .map(|_| tokio::spawn(slowloris(server.addr, stop_rx.clone())))
            .collect();
        // Chat logprobs with 20 alternatives make every token's chunk a few KB: 200 tokens are
        // far more than a 4 KB receive window and the server's send buffer hold.
        let (go_tx, go_rx) = tokio::sync::watch::channel(false);
        let slow_body = json!({
            "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 200,
            "ignore_eos": true, "stream": true, "logprobs": true, "top_logprobs": 20,
            "enable_thinking": false,
        })
        .to_string();
        let readers: Vec<_> = (0..8)
            .map(|_| tokio::spawn(slow_reader(server.addr, slow_body.clone(), go_rx.clone())))
            .collect();
        wait_for(
            "the slow readers to be generating",
            Duration::from_secs(60),
            || server.metrics.num_requests_running.load(Ordering::Acquire) >= 8,
        )
        .await;

        let client = reqwest::Client::new();
        let mut worst = Duration::ZERO;
        for i in 0..10 {
            let started = Instant::now();
            let response = tokio::time::timeout(
                Duration::from_secs(30),
                client
                    .post(server.url("/v1/completions"))
                    .json(&json!({"prompt": [1, 2, 3 + i], "max_tokens": 4, "ignore_eos": true}))
                    .send(),
            )
            .await
            .expect("a normal request is answered while slow clients hang on")
            .expect("send");
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.expect("JSON");
            assert_eq!(body["usage"]["completion_tokens"], 4);
            worst = worst.max(started.elapsed());
        }
        // The slow readers' sequences keep generating into their queues meanwhile.
        wait_for(
            "the slow readers' generation to end",
            Duration::from_secs(120),
            || server.metrics.finished_length.load(Ordering::Acquire) >= 18,
        )
        .await;

        go_tx.send(true).expect("readers listening");
        for reader in readers {
            let bytes = reader.await.expect("reader");
            let response = common::server::parse_response(&bytes);
            assert_eq!(response.status, 200);
            let events = sse_data(&response.body);
            assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
            let finish = events
                .iter()
                .filter(|e| e.contains("\"finish_reason\":\"length\""))
                .count();
            assert_eq!(finish, 1, "a slow reader still gets its whole stream");
            assert!(
                response.body.len() > 64 * 1024,
                "{} bytes",
                response.body.len()
            );
        }
        stop_tx.send(true).expect("loris listening");
        let mut still_open = 0;
        for l in loris {
            still_open += usize::from(l.await.expect("loris"));
        }
        eprintln!(
            "64 slowloris connections ({still_open} still open at the end) and 8 stalled \
             readers: 10 normal requests, slowest {worst:.2?}"
        );
    })
    .await
    .expect("bounded in time");
}

/// Keeps the injected panic's message and backtrace out of the test output; every other panic
/// (a failing assertion) still reports as usual.
fn quiet_injected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let injected = info
            .payload()
            .downcast_ref::<&str>()
            .is_some_and(|m| m.contains("injected kernel panic"));
        if !injected {
            default(info);
        }
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_panic_fails_requests_in_flight_and_flips_health() {
    quiet_injected_panics();
    tokio::time::timeout(TEST_BOUND, async {
        let hooks = FaultyBackend::new(CpuBackend::new(), Fault::Panic);
        let server = spawn(
            engine_on(
                hooks.clone(),
                EngineConfig {
                    max_model_len: 256,
                    num_blocks: 256,
                    ..EngineConfig::default()
                },
            ),
            ServerConfig::default(),
        )
        .await;
        let client = reqwest::Client::new();
        let health = |client: reqwest::Client| {
            let url = server.url("/health");
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .expect("health")
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(health(client.clone()).await, 200);
        let long = json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 200,
            "ignore_eos": true, "enable_thinking": false});

        // A stream under way (its first chunk read) and a non-streamed request in flight.
        let mut streamed = long.clone();
        streamed["stream"] = json!(true);
        let mut stream = client
            .post(server.url("/v1/chat/completions"))
            .json(&streamed)
            .send()
            .await
            .expect("stream");
        assert_eq!(stream.status(), 200);
        let mut stream_bytes = stream
            .chunk()
            .await
            .expect("chunk")
            .expect("first chunk")
            .to_vec();
        let plain = tokio::spawn({
            let (client, url) = (client.clone(), server.url("/v1/chat/completions"));
            async move {
                let r = client.post(url).json(&long).send().await.expect("send");
                (
                    r.status().as_u16(),
                    r.json::<Value>().await.expect("JSON body"),
                )
            }
        });
        wait_for("both requests running", Duration::from_secs(60), || {
            server.metrics.num_requests_running.load(Ordering::Acquire) == 2
        })
        .await;
        hooks.fail_after(0);

        let (status, body) = plain.await.expect("client");
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["error"]["type"], "server_error", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("injected kernel panic"), "{message}");

        while let Some(chunk) = stream.chunk().await.expect("stream ends cleanly") {
            stream_bytes.extend_from_slice(&chunk);
        }
        let events = sse_data(&stream_bytes);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let error: Value = serde_json::from_str(&events[events.len() - 2]).expect("JSON");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("injected kernel panic")),
            "the stream ends with an in-band error: {error}"
        );

        assert_eq!(health(client.clone()).await, 503);
        let r = client
            .post(server.url("/v1/completions"))
            .json(&json!({"prompt": [1, 2], "max_tokens": 1}))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 503, "new work is refused at once");
    })
    .await
    .expect("bounded in time");
}
