//! The response cache end to end, over loopback HTTP, on the tiny model, with each store: the
//! in-memory LRU and a real `redis-server` (started by the tests on a free port; see
//! `common/redis.rs`). Each case runs once per store: hit/miss/bypass and the original usage, a
//! table of request fields each of which must change the key (and framing fields that must
//! not), tenants kept apart, a streamed hit equal chunk for chunk to the live stream (reasoning
//! included), TTL expiry; for memory its byte bound and a client that hangs up; for Redis a
//! server that pauses, dies, comes back, and fills up.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::server::{engine, sse_data};
use kestrel_engine::{EngineConfig, EngineMetrics};
use kestrel_server::response_cache::{CacheBackend, ResponseCache, ResponseCacheConfig};
use kestrel_server::{AppState, Model, ServerConfig};
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Memory,
    Redis,
}

struct Harness {
    addr: SocketAddr,
    state: Arc<AppState>,
    engine: Arc<EngineMetrics>,
    http: reqwest::Client,
    redis: Option<RedisServer>,
}

struct Options {
    ttl: Duration,
    max_bytes: Option<usize>,
    config: ServerConfig,
    redis_args: &'static [&'static str],
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3600),
            max_bytes: None,
            config: ServerConfig::default(),
            redis_args: &[],
        }
    }
}

/// A reply: status, `X-Kestrel-Cache`, body text.
#[derive(Debug)]
struct Reply {
    status: u16,
    cache: Option<String>,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("status {}: not JSON ({e}): {}", self.status, self.text))
    }

    /// The SSE chunks, `[DONE]` excluded (and required last).
    fn chunks(&self) -> Vec<Value> {
        let data = sse_data(self.text.as_bytes());
        assert_eq!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{}",
            self.text
        );
        data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
            .collect()
    }

    fn cache(&self) -> &str {
        self.cache.as_deref().unwrap_or("(none)")
    }
}

/// A response without what differs between two answers of one question: `id` and `created`.
fn strip(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("id");
        o.remove("created");
    }
    v
}

/// What two runs of one question on the model share: [`strip`], and not the prefix-cache hit
/// (`cached_tokens`), which depends on what ran before.
fn answer(v: Value) -> Value {
    let mut v = strip(v);
    if let Some(u) = v.get_mut("usage").and_then(Value::as_object_mut) {
        u.remove("prompt_tokens_details");
    }
    v
}

impl Harness {
    async fn start(kind: Kind, options: Options) -> Option<Self> {
        let redis = match kind {
            Kind::Memory => None,
            Kind::Redis => Some(RedisServer::start(options.redis_args)?),
        };
        let backend = match &redis {
            None => CacheBackend::Memory,
            Some(r) => r.url().parse().expect("a redis URL"),
        };
        let mut cache_config = ResponseCacheConfig::new(backend);
        cache_config.ttl = options.ttl;
        cache_config.max_bytes = options.max_bytes;
        let cache = ResponseCache::open(&cache_config).expect("open the cache");
        let (handle, tokenizer) = engine(EngineConfig {
            max_model_len: 512,
            num_blocks: 256,
            ..EngineConfig::default()
        });
        let state = AppState::with_response_cache(
            ServerConfig {
                served_model_name: common::server::MODEL_NAME.into(),
                ..options.config
            },
            Some(cache),
        );
        state.set_model(
            Model::new(
                handle.clone(),
                tokenizer,
                kestrel_engine::SamplingParams::default(),
                &[],
            )
            .expect("model")
            .with_identity("weights-sha256:tiny-test-model"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(kestrel_server::serve(
            listener,
            state.clone(),
            Duration::from_secs(5),
        ));
        Some(Self {
            addr,
            state,
            engine: handle.metrics(),
            http: reqwest::Client::new(),
            redis,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn post(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let mut request = self.http.post(self.url(path)).json(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = tokio::time::timeout(Duration::from_secs(120), request.send())
            .await
            .expect("an answer within 120 s")
            .expect("send");
        let status = response.status().as_u16();
        let cache = response
            .headers()
            .get("x-kestrel-cache")
            .map(|v| v.to_str().expect("ASCII").to_string());
        let text = tokio::time::timeout(Duration::from_secs(120), response.text())
            .await
            .expect("a body within 120 s")
            .expect("body");
        Reply {
            status,
            cache,
            text,
        }
    }

    async fn chat(&self, body: &Value) -> Reply {
        self.chat_with(body, &[]).await
    }

    async fn chat_with(&self, body: &Value, headers: &[(&str, &str)]) -> Reply {
        self.post("/v1/chat/completions", body, headers).await
    }

    /// Prompt tokens the engine has been given: unchanged across a hit.
    fn engine_prompt_tokens(&self) -> u64 {
        self.engine
            .prompt_tokens
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One series' value from `/metrics` (0 when absent).
    async fn metric(&self, series: &str) -> f64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().expect("a number"))
    }

    fn cache(&self) -> &ResponseCache {
        self.state.response_cache.as_deref().expect("a cache")
    }

    /// Entries the store holds.
    fn entries(&self) -> usize {
        match &self.redis {
            None => self.cache().held().expect("memory").1,
            Some(r) => redis::cmd("KEYS")
                .arg("kestrel:response:*")
                .query::<Vec<String>>(&mut r.connection())
                .expect("KEYS")
                .len(),
        }
    }
}

fn chat(question: &str) -> Value {
    json!({
        "messages": [{"role": "user", "content": question}],
        "temperature": 0, "max_tokens": 4, "ignore_eos": true, "enable_thinking": false
    })
}

fn with(mut body: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().expect("an object") {
        body[k] = v.clone();
    }
    body
}

fn assert_cache(reply: &Reply, expected: &str, what: &str) {
    assert_eq!(reply.status, 200, "{what}: {}", reply.text);
    assert_eq!(reply.cache(), expected, "{what}");
}

macro_rules! both_stores {
    ($case:ident: $memory:ident, $redis:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $memory() {
            $case(Kind::Memory).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $redis() {
            $case(Kind::Redis).await;
        }
    };
}

both_stores!(hit_miss_and_bypass: hit_miss_and_bypass_memory, hit_miss_and_bypass_redis);
both_stores!(key_sensitivity: key_sensitivity_memory, key_sensitivity_redis);
both_stores!(tenants_never_share: tenants_never_share_memory, tenants_never_share_redis);
both_stores!(streamed_replay_equals_live: streamed_replay_equals_live_memory, streamed_replay_equals_live_redis);
both_stores!(entries_expire: entries_expire_memory, entries_expire_redis);

async fn hit_miss_and_bypass(kind: Kind) {
    let Some(h) = Harness::start(kind, Options::default()).await else {
        return;
    };
    let q = chat("What is two plus two?");
    let before = h.engine_prompt_tokens();
    let live = h.chat(&q).await;
    assert_cache(&live, "miss", "first ask");
    let after_live = h.engine_prompt_tokens();
    assert!(after_live > before, "the miss ran on the engine");
    let hit = h.chat(&q).await;
    assert_cache(&hit, "hit", "second ask");
    assert_eq!(
        h.engine_prompt_tokens(),
        after_live,
        "a hit never reaches the engine"
    );
    // The same answer, finish reason and usage (the original counts); a response id of its own.
    assert_eq!(strip(hit.json()), strip(live.json()));
    assert_ne!(hit.json()["id"], live.json()["id"]);
    assert_eq!(live.json()["usage"]["completion_tokens"], 4);
    assert_eq!(h.metric("kestrel_response_cache_hits_total").await, 1.0);
    assert_eq!(h.metric("kestrel_response_cache_misses_total").await, 1.0);
    assert_eq!(h.metric("kestrel_response_cache_stores_total").await, 1.0);
    assert!(h.metric("kestrel_response_cache_stored_bytes_total").await > 0.0);
    assert_eq!(h.entries(), 1);

    // Seeded sampling is a function of the request: cached.
    let seeded = with(
        chat("Pick a number."),
        json!({"temperature": 1.0, "seed": 7}),
    );
    let first = h.chat(&seeded).await;
    assert_cache(&first, "miss", "seeded");
    let again = h.chat(&seeded).await;
    assert_cache(&again, "hit", "seeded again");
    assert_eq!(strip(again.json()), strip(first.json()));

    // Unseeded sampling, several choices: never looked up, never stored.
    let stores = h.metric("kestrel_response_cache_stores_total").await;
    let sampled = with(chat("Pick a number."), json!({"temperature": 1.0}));
    for what in ["sampled", "sampled again"] {
        assert_cache(&h.chat(&sampled).await, "bypass", what);
    }
    let two = with(chat("What is two plus two?"), json!({"n": 2}));
    assert_cache(&h.chat(&two).await, "bypass", "n = 2");
    assert_eq!(
        h.metric("kestrel_response_cache_stores_total").await,
        stores
    );
    assert_eq!(h.metric("kestrel_response_cache_bypasses_total").await, 3.0);

    // `"cache": false` and `Cache-Control: no-store`: neither read nor written.
    let opted = chat("Name a planet.");
    let off = h.chat(&with(opted.clone(), json!({"cache": false}))).await;
    assert_cache(&off, "bypass", "cache: false");
    assert_cache(
        &h.chat_with(&opted, &[("cache-control", "no-store")]).await,
        "bypass",
        "no-store",
    );
    assert_cache(&h.chat(&opted).await, "miss", "after the opted-out ones");
    // `Cache-Control: no-cache` on a stored question: answered by the model, the entry renewed.
    let tokens = h.engine_prompt_tokens();
    let fresh = h.chat_with(&q, &[("cache-control", "no-cache")]).await;
    assert_cache(&fresh, "bypass", "no-cache");
    assert!(
        h.engine_prompt_tokens() > tokens,
        "no-cache runs on the model"
    );
    assert_eq!(answer(fresh.json()), answer(live.json()));
    assert_cache(&h.chat(&q).await, "hit", "after no-cache");

    // A wrong type for `cache` names the field.
    let bad = h.chat(&with(chat("x"), json!({"cache": "yes"}))).await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(bad.json()["error"]["param"], "cache", "{}", bad.text);

    // Text completions are cached the same way.
    let c = json!({"prompt": "The sky is", "max_tokens": 3, "temperature": 0});
    let live = h.post("/v1/completions", &c, &[]).await;
    assert_cache(&live, "miss", "completions");
    let hit = h.post("/v1/completions", &c, &[]).await;
    assert_cache(&hit, "hit", "completions again");
    assert_eq!(strip(hit.json()), strip(live.json()));
    assert_eq!(hit.json()["object"], "text_completion");

    // /health says nothing about the cache.
    let health = h.http.get(h.url("/health")).send().await.expect("health");
    assert_eq!(health.status(), 200);
}

/// The greedy question every case below changes one thing of.
fn base_question() -> Value {
    json!({
        "messages": [{"role": "user", "content": "Name a color."}],
        "temperature": 0, "max_tokens": 3, "ignore_eos": true
    })
}

const TOOLS: &str = r#"[{"type": "function", "function": {"name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]"#;

async fn key_sensitivity(kind: Kind) {
    let Some(h) = Harness::start(kind, Options::default()).await else {
        return;
    };
    let base = base_question();
    assert_cache(&h.chat(&base).await, "miss", "base");
    assert_cache(&h.chat(&base).await, "hit", "base again");
    let tools: Value = serde_json::from_str(TOOLS).expect("tools");
    // Each of these changes what the answer is: a miss (and the table's cases differ from one
    // another too, so none may hit another's entry).
    let changes = [
        (
            "the question",
            json!({"messages": [{"role": "user", "content": "Name a colour."}]}),
        ),
        (
            "a system prompt",
            json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."}]}),
        ),
        ("max_tokens", json!({"max_tokens": 4})),
        (
            "max_completion_tokens",
            json!({"max_completion_tokens": 2, "max_tokens": null}),
        ),
        ("stop", json!({"stop": ["zz"]})),
        ("stop split", json!({"stop": ["z", "z"]})),
        ("stop_token_ids", json!({"stop_token_ids": [100]})),
        ("seed", json!({"seed": 1})),
        (
            "temperature (seeded)",
            json!({"seed": 1, "temperature": 0.7}),
        ),
        ("top_p", json!({"top_p": 0.5})),
        ("top_k", json!({"top_k": 5})),
        ("min_p", json!({"min_p": 0.1})),
        ("presence_penalty", json!({"presence_penalty": 0.5})),
        ("frequency_penalty", json!({"frequency_penalty": 0.5})),
        ("repetition_penalty", json!({"repetition_penalty": 1.2})),
        ("logit_bias", json!({"logit_bias": {"100": 1}})),
        ("logit_bias value", json!({"logit_bias": {"100": 2}})),
        (
            "response_format",
            json!({"response_format": {"type": "text"}}),
        ),
        ("tools", json!({"tools": tools})),
        (
            "tool_choice",
            json!({"tools": tools, "tool_choice": "none"}),
        ),
        (
            "parallel_tool_calls",
            json!({"tools": tools, "parallel_tool_calls": false}),
        ),
        ("enable_thinking", json!({"enable_thinking": false})),
        (
            "reasoning_effort",
            json!({"reasoning_effort": "none", "include_reasoning": false}),
        ),
        ("include_reasoning", json!({"include_reasoning": false})),
        ("logprobs", json!({"logprobs": true})),
        ("top_logprobs", json!({"logprobs": true, "top_logprobs": 2})),
        ("min_tokens", json!({"min_tokens": 1})),
        ("ignore_eos", json!({"ignore_eos": false})),
        (
            "include_stop_str_in_output",
            json!({"include_stop_str_in_output": true}),
        ),
        ("skip_special_tokens", json!({"skip_special_tokens": false})),
        ("cache_salt", json!({"cache_salt": "tenant-a"})),
        (
            "add_generation_prompt",
            json!({"add_generation_prompt": false}),
        ),
    ];
    for (what, change) in &changes {
        let reply = h.chat(&with(base.clone(), change.clone())).await;
        assert_cache(&reply, "miss", what);
    }
    // These only change how the same answer is framed or who asked: a hit.
    let framing = [
        ("stream", json!({"stream": true})),
        (
            "include_usage",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
        (
            "continuous_usage_stats",
            json!({"stream": true, "stream_options": {"continuous_usage_stats": true}}),
        ),
        ("user", json!({"user": "someone"})),
        ("model", json!({"model": common::server::MODEL_NAME})),
        ("cache: true", json!({"cache": true})),
        (
            "max_tokens as max_completion_tokens",
            json!({"max_completion_tokens": 3, "max_tokens": null}),
        ),
    ];
    for (what, change) in &framing {
        let reply = h.chat(&with(base.clone(), change.clone())).await;
        assert_cache(&reply, "hit", what);
    }
    assert_eq!(h.entries(), 1 + changes.len());
}

async fn tenants_never_share(kind: Kind) {
    let options = Options {
        config: ServerConfig {
            api_keys: vec!["alpha-key".into(), "beta-key".into()],
            ..ServerConfig::default()
        },
        ..Options::default()
    };
    let Some(h) = Harness::start(kind, options).await else {
        return;
    };
    let q = chat("What is the capital of France?");
    let as_key = |key: &str| format!("Bearer {key}");
    let (alpha, beta) = (as_key("alpha-key"), as_key("beta-key"));
    let alpha_auth = [("authorization", alpha.as_str())];
    let beta_auth = [("authorization", beta.as_str())];
    assert_cache(&h.chat_with(&q, &alpha_auth).await, "miss", "alpha");
    assert_cache(&h.chat_with(&q, &alpha_auth).await, "hit", "alpha again");
    assert_cache(
        &h.chat_with(&q, &beta_auth).await,
        "miss",
        "beta: not alpha's entry",
    );
    assert_cache(&h.chat_with(&q, &beta_auth).await, "hit", "beta again");
    assert_eq!(h.entries(), 2, "one entry per tenant");
    // A cache_salt is a tenant of its own within a key.
    let salted = with(q.clone(), json!({"cache_salt": "team-1"}));
    assert_cache(
        &h.chat_with(&salted, &alpha_auth).await,
        "miss",
        "alpha, salted",
    );
    assert_cache(
        &h.chat_with(&salted, &beta_auth).await,
        "miss",
        "beta, same salt",
    );
    assert_cache(
        &h.chat_with(&salted, &alpha_auth).await,
        "hit",
        "alpha, salted again",
    );
    assert_eq!(h.entries(), 4);
    // No key, no answer (cached or not).
    assert_eq!(h.chat(&q).await.status, 401);
}

/// `<think>` (see tests/api.rs): biased so that this random model opens a think block, with
/// penalties so that reasoning text follows.
const THINK_START: &str = "151667";

fn thinking(question: &str) -> Value {
    json!({
        "messages": [{"role": "user", "content": question}],
        "enable_thinking": true, "logit_bias": {THINK_START: 4}, "presence_penalty": 2.0,
        "frequency_penalty": 2.0, "max_tokens": 8, "ignore_eos": true, "temperature": 0,
        "stream": true, "stream_options": {"include_usage": true}
    })
}

fn reasoning_of(chunks: &[Value]) -> String {
    chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["delta"]["reasoning_content"].as_str().map(String::from))
        .collect()
}

async fn streamed_replay_equals_live(kind: Kind) {
    let Some(h) = Harness::start(kind, Options::default()).await else {
        return;
    };
    let q = thinking("Why is the sea salty?");
    let live = h.chat(&q).await;
    assert_cache(&live, "miss", "live stream");
    let replayed = h.chat(&q).await;
    assert_cache(&replayed, "hit", "replayed stream");
    let (live, replayed) = (live.chunks(), replayed.chunks());
    let reasoning = reasoning_of(&live);
    assert!(
        !reasoning.is_empty(),
        "the request makes reasoning: {live:?}"
    );
    // Chunk for chunk: role chunk, reasoning deltas (both field names), finish, usage.
    assert_eq!(live.len(), replayed.len());
    for (l, r) in live.iter().zip(&replayed) {
        assert_eq!(strip(r.clone()), strip(l.clone()));
    }
    assert_eq!(live[0]["choices"][0]["delta"]["role"], "assistant");
    let usage = &live.last().expect("usage chunk")["usage"];
    assert_eq!(usage["completion_tokens"], 8);
    // One id per response, a new one for the replay.
    assert_ne!(live[0]["id"], replayed[0]["id"]);
    assert!(replayed.iter().all(|c| c["id"] == replayed[0]["id"]));

    // The same entry answers a non-streamed request: the message holds the streamed reasoning.
    let whole = h
        .chat(&with(
            q.clone(),
            json!({"stream": false, "stream_options": null}),
        ))
        .await;
    assert_cache(&whole, "hit", "non-streamed");
    let message = &whole.json()["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], reasoning.as_str());
    assert_eq!(message["reasoning"], reasoning.as_str());

    // And the other way: a non-streamed miss, then a streamed hit equal to a live stream.
    let other = thinking("Why is the sky blue?");
    let first = h
        .chat(&with(
            other.clone(),
            json!({"stream": false, "stream_options": null}),
        ))
        .await;
    assert_cache(&first, "miss", "non-streamed first");
    let replayed = h.chat(&other).await;
    assert_cache(&replayed, "hit", "streamed from a non-streamed entry");
    let live = h.chat(&with(other.clone(), json!({"cache": false}))).await;
    assert_cache(&live, "bypass", "live for comparison");
    let (live, replayed) = (live.chunks(), replayed.chunks());
    assert_eq!(live.len(), replayed.len());
    for (l, r) in live.iter().zip(&replayed) {
        // This live run found the first run's prompt in the prefix cache; the replay reports
        // the first run's usage, so only `cached_tokens` may differ.
        assert_eq!(answer(r.clone()), answer(l.clone()));
    }
    assert_eq!(
        first.json()["choices"][0]["message"]["reasoning_content"],
        reasoning_of(&live).as_str()
    );
}

async fn entries_expire(kind: Kind) {
    let ttl = Duration::from_secs(2);
    let Some(h) = Harness::start(
        kind,
        Options {
            ttl,
            ..Options::default()
        },
    )
    .await
    else {
        return;
    };
    let q = chat("How many legs has a spider?");
    let sent = Instant::now();
    assert_cache(&h.chat(&q).await, "miss", "first");
    if let Some(r) = &h.redis {
        // Redis holds the TTL itself.
        let key: Vec<String> = redis::cmd("KEYS")
            .arg("kestrel:response:*")
            .query(&mut r.connection())
            .expect("KEYS");
        assert_eq!(key.len(), 1);
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&key[0])
            .query(&mut r.connection())
            .expect("PTTL");
        assert!(
            pttl > 0 && pttl <= ttl.as_millis() as i64,
            "PTTL {pttl} ms for a {ttl:?} TTL"
        );
    }
    // Ask until the answer is no longer cached: never before the TTL, within a deadline after.
    let deadline = sent + ttl + Duration::from_secs(20);
    loop {
        let reply = h.chat(&q).await;
        match reply.cache() {
            "hit" => {
                assert!(Instant::now() < deadline, "still cached long after its TTL");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            "miss" => {
                assert!(
                    sent.elapsed() >= ttl,
                    "expired after {:?}, before its TTL",
                    sent.elapsed()
                );
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    // The miss stored it again.
    assert_cache(&h.chat(&q).await, "hit", "stored again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_cache_stays_within_its_byte_bound() {
    // Room for two of these answers and not three (an entry is about 120 bytes of JSON plus the
    // key and the per-entry overhead).
    let max_bytes = 600;
    let Some(h) = Harness::start(
        Kind::Memory,
        Options {
            max_bytes: Some(max_bytes),
            ..Options::default()
        },
    )
    .await
    else {
        return;
    };
    let questions: Vec<Value> = (0..5).map(|i| chat(&format!("Question {i}?"))).collect();
    for q in &questions {
        assert_cache(&h.chat(q).await, "miss", "first asks");
        let (bytes, entries) = h.cache().held().expect("memory");
        assert!(bytes <= max_bytes, "{bytes} bytes held");
        assert!(entries <= 2, "{entries} entries");
        assert_eq!(h.metric("kestrel_response_cache_bytes").await, bytes as f64);
    }
    // The least recently used went first: the newest is there, the oldest is not.
    assert_cache(&h.chat(&questions[4]).await, "hit", "the newest");
    assert_cache(&h.chat(&questions[0]).await, "miss", "the oldest, evicted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_stream_is_not_stored() {
    let Some(h) = Harness::start(Kind::Memory, Options::default()).await else {
        return;
    };
    let q = with(
        chat("Tell me a long story."),
        json!({"max_tokens": 200, "stream": true}),
    );
    let aborted = || {
        h.engine
            .finished_abort
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = aborted();
    let mut response = h
        .http
        .post(h.url("/v1/chat/completions"))
        .json(&q)
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["x-kestrel-cache"], "miss");
    let first = response
        .chunk()
        .await
        .expect("read")
        .expect("a first chunk");
    assert!(!first.is_empty());
    drop(response);
    // The engine aborts the sequence once the server sees the hang-up.
    let deadline = Instant::now() + Duration::from_secs(60);
    while aborted() == before {
        assert!(Instant::now() < deadline, "the sequence was never aborted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.entries(), 0, "a cut answer is not stored");
    assert_eq!(h.metric("kestrel_response_cache_stores_total").await, 0.0);
    let whole = h.chat(&q).await;
    assert_cache(&whole, "miss", "asked again in full");
    assert_eq!(h.entries(), 1);
}

/// Redis paused (accepts nothing, answers nothing), killed, restarted empty, and full: every
/// request is answered by the model meanwhile, `/health` stays green, errors are counted, and
/// once Redis is back the cache is used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failures_never_fail_a_request() {
    let Some(mut h) = Harness::start(Kind::Redis, Options::default()).await else {
        return;
    };
    let q = chat("What colour is grass?");
    let live = h.chat(&q).await;
    assert_cache(&live, "miss", "first");
    assert_cache(&h.chat(&q).await, "hit", "second");
    let expected = answer(live.json());

    // Slow: a paused Redis costs a request at most the timeout, then it backs off.
    h.redis.as_ref().expect("redis").pause(true);
    let start = Instant::now();
    let slow = h.chat(&q).await;
    assert_cache(&slow, "miss", "while Redis is paused");
    assert_eq!(answer(slow.json()), expected);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(
        h.metric("kestrel_response_cache_errors_total{op=\"get\"}")
            .await
            >= 1.0
    );
    h.redis.as_ref().expect("redis").pause(false);

    // Down: answered by the model, health green.
    h.redis.as_mut().expect("redis").kill();
    for i in 0..3 {
        let reply = h.chat(&q).await;
        assert_cache(&reply, "miss", &format!("while Redis is down ({i})"));
        assert_eq!(answer(reply.json()), expected);
    }
    let health = h.http.get(h.url("/health")).send().await.expect("health");
    assert_eq!(health.status(), 200, "/health stays green with Redis down");
    assert!(
        h.metric("kestrel_response_cache_errors_total{op=\"get\"}")
            .await
            >= 2.0
    );

    // Back (empty): within a deadline the answer is stored again and then served from it.
    h.redis.as_mut().expect("redis").restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = h.chat(&q).await;
        assert_eq!(reply.status, 200);
        assert_eq!(answer(reply.json()), expected);
        if reply.cache() == "hit" {
            break;
        }
        assert!(Instant::now() < deadline, "the cache was not used again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_stores_and_requests_go_on() {
    let Some(h) = Harness::start(
        Kind::Redis,
        Options {
            redis_args: &["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"],
            ..Options::default()
        },
    )
    .await
    else {
        return;
    };
    // Fill Redis past its maxmemory with a value of its own.
    let mut c = h.redis.as_ref().expect("redis").connection();
    let filler = vec![b'x'; 4 << 20];
    let _: Result<(), _> = redis::cmd("SET").arg("filler").arg(filler).query(&mut c);
    let q = chat("What is the boiling point of water?");
    for i in 0..2 {
        let reply = h.chat(&q).await;
        assert_cache(&reply, "miss", &format!("Redis full ({i})"));
    }
    assert_eq!(
        h.metric("kestrel_response_cache_errors_total{op=\"put\"}")
            .await,
        2.0
    );
    assert_eq!(h.metric("kestrel_response_cache_stores_total").await, 0.0);
    // Refusals are not outages: lookups kept going to Redis (misses, not skipped).
    assert_eq!(h.metric("kestrel_response_cache_misses_total").await, 2.0);
}
