//! Request fields that change what the server does, each checked end to end through the router
//! on the tiny model: `cache_salt` and salting by API key keep prefix-cache tenants apart, usage
//! counts a prompt once for its `n` choices, a prompt that does not fit names the field to
//! change, `stream_options.continuous_usage_stats`, `/tokenize`'s `return_token_strs`, and a chat
//! template that does not compile.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use common::server::{app, engine, sse_data};
use http_body_util::BodyExt;
use kestrel_engine::{EngineConfig, SamplingParams};
use kestrel_server::{Model, ServerConfig};
use serde_json::{json, Value};
use tower::ServiceExt;

const MAX_MODEL_LEN: usize = 256;

fn fresh_app(config: ServerConfig) -> Router {
    app(
        &engine(EngineConfig {
            max_model_len: MAX_MODEL_LEN,
            num_blocks: 256,
            ..EngineConfig::default()
        }),
        config,
    )
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = tokio::time::timeout(Duration::from_secs(120), app.clone().oneshot(request))
        .await
        .expect("response within 120 s")
        .expect("infallible");
    let status = response.status();
    let body = tokio::time::timeout(Duration::from_secs(120), response.into_body().collect())
        .await
        .expect("body within 120 s")
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, body)
}

async fn post(app: &Router, path: &str, body: Value, key: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let (status, bytes) = send(app, request.body(Body::from(body.to_string())).unwrap()).await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

fn cached(body: &Value) -> u64 {
    body["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or_else(|| panic!("no cached_tokens in {body}"))
}

/// A completions request over `prompt` (token ids: exact lengths, no tokenizer involved).
fn completion(prompt: &[u32], extra: Value) -> Value {
    let mut body = json!({"prompt": prompt, "max_tokens": 2, "temperature": 0, "ignore_eos": true});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// 40 tokens: two full KV blocks of 16 can be reused (the last token is always computed).
fn prompt(seed: u32) -> Vec<u32> {
    (0..40).map(|i| 1000 + seed * 100 + i).collect()
}

#[tokio::test]
async fn cache_salt_keeps_prefix_cache_tenants_apart() {
    let app = fresh_app(ServerConfig::default());
    let p = prompt(1);
    let with = |salt: Option<&str>| match salt {
        Some(s) => completion(&p, json!({"cache_salt": s})),
        None => completion(&p, json!({})),
    };
    let (status, first) = post(&app, "/v1/completions", with(Some("alice")), None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(cached(&first), 0, "cold cache");
    let (_, again) = post(&app, "/v1/completions", with(Some("alice")), None).await;
    assert_eq!(cached(&again), 32, "the same salt finds its blocks");
    let (_, other) = post(&app, "/v1/completions", with(Some("bob")), None).await;
    assert_eq!(cached(&other), 0, "another salt does not: {other}");
    let (_, unsalted) = post(&app, "/v1/completions", with(None), None).await;
    assert_eq!(cached(&unsalted), 0, "no salt is a tenant of its own");
    let (status, empty) = post(&app, "/v1/completions", with(Some("")), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{empty}");
    assert_eq!(empty["error"]["param"], "cache_salt");
}

#[tokio::test]
async fn salting_by_api_key_keeps_callers_apart() {
    let keys = vec!["key-a".to_string(), "key-b".to_string()];
    for by_key in [true, false] {
        let app = fresh_app(ServerConfig {
            api_keys: keys.clone(),
            cache_salt_by_api_key: by_key,
            ..ServerConfig::default()
        });
        let p = prompt(2);
        let (status, first) = post(
            &app,
            "/v1/completions",
            completion(&p, json!({})),
            Some("key-a"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{first}");
        let (_, same) = post(
            &app,
            "/v1/completions",
            completion(&p, json!({})),
            Some("key-a"),
        )
        .await;
        assert_eq!(cached(&same), 32, "a caller finds its own prefix");
        let (_, other) = post(
            &app,
            "/v1/completions",
            completion(&p, json!({})),
            Some("key-b"),
        )
        .await;
        let want = if by_key { 0 } else { 32 };
        assert_eq!(cached(&other), want, "salt by key: {by_key}");
        // Chat goes through the same path.
        let chat =
            json!({"messages": [{"role": "user", "content": "word ".repeat(40)}], "max_tokens": 1});
        post(&app, "/v1/chat/completions", chat.clone(), Some("key-a")).await;
        let (status, other) = post(&app, "/v1/chat/completions", chat, Some("key-b")).await;
        assert_eq!(status, StatusCode::OK, "{other}");
        assert_eq!(cached(&other) == 0, by_key, "{other}");
    }
}

#[tokio::test]
async fn n_choices_count_the_prompt_once_and_cached_tokens_never_exceed_it() {
    let app = fresh_app(ServerConfig::default());
    let p = prompt(3);
    // Cold, n = 4: the later choices find the blocks the first one computed, but what the cache
    // held before the request was nothing.
    let (status, cold) = post(
        &app,
        "/v1/completions",
        completion(&p, json!({"n": 4})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cold}");
    assert_eq!(cold["usage"]["prompt_tokens"], 40);
    assert_eq!(cold["usage"]["completion_tokens"], 8);
    assert_eq!(cached(&cold), 0, "{cold}");
    // Warm, n = 4, and two prompts × n = 3: each prompt counts once, hits are per prompt.
    let (_, warm) = post(
        &app,
        "/v1/completions",
        completion(&p, json!({"n": 4})),
        None,
    )
    .await;
    assert_eq!(warm["usage"]["prompt_tokens"], 40);
    assert_eq!(cached(&warm), 32, "{warm}");
    let q = prompt(4);
    let (_, batch) = post(
        &app,
        "/v1/completions",
        json!({"prompt": [p, q], "n": 3, "max_tokens": 1, "temperature": 0}),
        None,
    )
    .await;
    assert_eq!(batch["usage"]["prompt_tokens"], 80, "{batch}");
    assert_eq!(batch["choices"].as_array().unwrap().len(), 6);
    assert_eq!(
        cached(&batch),
        32,
        "only the first prompt was cached: {batch}"
    );
    // Chat, n = 3, warm.
    let chat = json!({"messages": [{"role": "user", "content": "word ".repeat(40)}], "max_tokens": 1, "n": 3});
    post(&app, "/v1/chat/completions", chat.clone(), None).await;
    let (_, warm) = post(&app, "/v1/chat/completions", chat, None).await;
    let prompt_tokens = warm["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        cached(&warm) > 0 && cached(&warm) <= prompt_tokens,
        "{warm}"
    );
}

#[tokio::test]
async fn a_prompt_that_does_not_fit_names_the_field_to_change() {
    let app = fresh_app(ServerConfig::default());
    let long: Vec<u32> = (0..300).map(|i| 1000 + i).collect();
    let fits: Vec<u32> = (0..200).map(|i| 1000 + i).collect();
    let cases = [
        ("/v1/completions", json!({"prompt": long}), "prompt"),
        (
            "/v1/completions",
            json!({"prompt": fits, "max_tokens": 100}),
            "max_tokens",
        ),
        // The default of 16 is not the request's choice: the prompt is what to shorten.
        (
            "/v1/completions",
            json!({"prompt": (0..250).map(|i| 1000 + i).collect::<Vec<u32>>()}),
            "prompt",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "word ".repeat(300)}]}),
            "messages",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "word ".repeat(200)}], "max_tokens": 100}),
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "word ".repeat(200)}], "max_completion_tokens": 100}),
            "max_completion_tokens",
        ),
    ];
    for (path, body, param) in cases {
        let (status, answer) = post(&app, path, body, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["param"], param, "{path}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("maximum context length"), "{message}");
    }
}

#[tokio::test]
async fn continuous_usage_stats_put_usage_on_every_chunk() {
    let app = fresh_app(ServerConfig::default());
    for (path, body) in [
        (
            "/v1/completions",
            json!({"prompt": [1, 2, 3], "max_tokens": 4, "ignore_eos": true, "stream": true,
            "stream_options": {"include_usage": true, "continuous_usage_stats": true}}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
            "ignore_eos": true, "stream": true, "enable_thinking": false,
            "stream_options": {"include_usage": true, "continuous_usage_stats": true}}),
        ),
    ] {
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let (status, bytes) = send(&app, request).await;
        assert_eq!(status, StatusCode::OK);
        let events = sse_data(&bytes);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).expect("JSON event"))
            .collect();
        let mut last = 0;
        for chunk in &chunks {
            let usage = &chunk["usage"];
            let completion = usage["completion_tokens"]
                .as_u64()
                .unwrap_or_else(|| panic!("{path}: a chunk without usage: {chunk}"));
            assert_eq!(
                usage["total_tokens"].as_u64(),
                Some(usage["prompt_tokens"].as_u64().unwrap() + completion)
            );
            assert!(completion >= last, "{path}: counts only grow");
            last = completion;
        }
        assert_eq!(last, 4, "{path}");
        // Without the option, only the final usage chunk carries usage.
        let mut plain = body.clone();
        plain["stream_options"] = json!({"include_usage": true});
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(plain.to_string()))
            .unwrap();
        let (_, bytes) = send(&app, request).await;
        let events = sse_data(&bytes);
        let with_usage = events[..events.len() - 1]
            .iter()
            .filter(|e| {
                serde_json::from_str::<Value>(e)
                    .unwrap()
                    .get("usage")
                    .is_some()
            })
            .count();
        assert_eq!(with_usage, 1, "{path}");
    }
}

#[tokio::test]
async fn tokenize_returns_token_strings_on_request() {
    let app = fresh_app(ServerConfig::default());
    let (status, tok) = post(
        &app,
        "/tokenize",
        json!({"prompt": "Hello world", "return_token_strs": true}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    let strs: Vec<&str> = tok["token_strs"]
        .as_array()
        .expect("token_strs")
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(strs.len(), tok["count"].as_u64().unwrap() as usize);
    // Byte-level BPE strings, as vLLM's `convert_ids_to_tokens` gives them.
    assert_eq!(strs, ["Hello", "Ġworld"]);
    let (_, tok) = post(&app, "/tokenize", json!({"prompt": "Hello"}), None).await;
    assert!(tok.get("token_strs").is_none(), "{tok}");
}

#[test]
fn a_chat_template_that_does_not_compile_fails_the_model() {
    let (handle, mut tokenizer) = engine(EngineConfig {
        max_model_len: 64,
        num_blocks: 8,
        ..EngineConfig::default()
    });
    tokenizer.set_chat_template("{% for m in messages %}{{ m.content }".into());
    let err = Model::new(handle.clone(), tokenizer, SamplingParams::default(), &[])
        .err()
        .expect("a broken template is an error, not a model without chat");
    assert!(
        err.to_string().contains("chat template syntax error"),
        "{err}"
    );
}
