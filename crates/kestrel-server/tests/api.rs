//! In-process HTTP tests (tower `oneshot`) against a real engine running a tiny random-weight
//! Qwen3 with the real Qwen3 tokenizer and chat template. Needs the tokenizer fixture
//! (`scripts/fetch-fixtures.sh`).

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use kestrel_backend::cpu::CpuBackend;
use kestrel_engine::{start_engine, EngineConfig, EngineHandle, SamplingParams};
use kestrel_model::{ModelFiles, QwenModel};
use kestrel_server::{router, AppState, Model, ServerConfig};
use kestrel_text::Tokenizer;
use serde_json::{json, Value};
use tower::ServiceExt;

const MAX_MODEL_LEN: usize = 256;
const MODEL_NAME: &str = "qwen3-tiny";

fn build_engine(engine_config: EngineConfig) -> (EngineHandle, Tokenizer) {
    let dir = common::tiny_model_dir();
    let files = ModelFiles::open(dir).expect("open tiny model");
    let backend = CpuBackend::new();
    let model = QwenModel::load(&backend, files.config().clone(), files.weights())
        .expect("load tiny model");
    let handle = start_engine(backend, model, engine_config).expect("start engine");
    (handle, Tokenizer::from_dir(dir).expect("tokenizer"))
}

/// One engine shared by most tests (each test gets its own router).
fn engine() -> &'static (EngineHandle, Tokenizer) {
    static ENGINE: OnceLock<(EngineHandle, Tokenizer)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        build_engine(EngineConfig {
            max_model_len: MAX_MODEL_LEN,
            num_blocks: 256,
            ..EngineConfig::default()
        })
    })
}

fn app_on(engine: &(EngineHandle, Tokenizer), config: ServerConfig) -> Router {
    let (handle, tokenizer) = engine;
    let state = AppState::new(ServerConfig {
        served_model_name: MODEL_NAME.into(),
        ..config
    });
    state.set_model(
        Model::new(
            handle.clone(),
            tokenizer.clone(),
            SamplingParams::default(),
            &[],
        )
        .expect("model"),
    );
    router(state)
}

fn app_with(config: ServerConfig) -> Router {
    app_on(engine(), config)
}

fn app() -> Router {
    app_with(ServerConfig::default())
}

async fn send(
    app: &Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = tokio::time::timeout(Duration::from_secs(120), app.clone().oneshot(request))
        .await
        .expect("response within 120 s")
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(120), response.into_body().collect())
        .await
        .expect("body within 120 s")
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

async fn post_json(app: &Router, path: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, bytes) = send(app, post(path, body.to_string())).await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

fn chat(extra: Value) -> Value {
    let mut body = json!({"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4, "temperature": 0});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).expect("SSE is UTF-8");
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|event| {
            event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, needle: &str) {
    assert_eq!(status, want, "{body}");
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("OpenAI error body: {body}"));
    assert!(
        message.contains(needle),
        "message {message:?} should mention {needle:?}"
    );
    assert!(
        body["error"].get("type").is_some()
            && body["error"].get("param").is_some()
            && body["error"].get("code").is_some()
    );
}

// ---------- error paths (no generation needed) ----------

#[tokio::test]
async fn malformed_request_battery_gets_4xx_and_server_keeps_serving() {
    let app = app();
    let cases: Vec<(Body, StatusCode, &str)> = vec![
        (Body::from("{not json"), StatusCode::BAD_REQUEST, "not valid JSON"),
        (Body::from(vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}']), StatusCode::BAD_REQUEST, "JSON"),
        (chat(json!({"max_tokens": "ten"})).to_string().into(), StatusCode::BAD_REQUEST, "max_tokens"),
        (chat(json!({"temperature": "hot"})).to_string().into(), StatusCode::BAD_REQUEST, "temperature"),
        (chat(json!({"max_tokens": -1})).to_string().into(), StatusCode::BAD_REQUEST, "max_tokens"),
        (chat(json!({"max_tokens": 0})).to_string().into(), StatusCode::BAD_REQUEST, "max_tokens"),
        (chat(json!({"max_tokens": 1_000_000_000_000u64})).to_string().into(), StatusCode::BAD_REQUEST, "max_tokens"),
        (chat(json!({"messages": []})).to_string().into(), StatusCode::BAD_REQUEST, "at least one message"),
        (chat(json!({"messages": [{"role": "wizard", "content": "x"}]})).to_string().into(), StatusCode::BAD_REQUEST, "unknown role"),
        (chat(json!({"messages": [{"role": "user", "content": 5}]})).to_string().into(), StatusCode::BAD_REQUEST, "messages[0].content"),
        (chat(json!({"n": 1000})).to_string().into(), StatusCode::BAD_REQUEST, "`n`"),
        (chat(json!({"n": 0})).to_string().into(), StatusCode::BAD_REQUEST, "`n`"),
        (chat(json!({"temperature": -1.0})).to_string().into(), StatusCode::BAD_REQUEST, "temperature"),
        (chat(json!({"top_p": 0.0})).to_string().into(), StatusCode::BAD_REQUEST, "top_p"),
        (chat(json!({"top_logprobs": 50, "logprobs": true})).to_string().into(), StatusCode::BAD_REQUEST, "top_logprobs"),
        (chat(json!({"logit_bias": {"abc": 1}})).to_string().into(), StatusCode::BAD_REQUEST, "logit_bias"),
        (chat(json!({"tools": [{"type": "function", "function": {"description": "no name"}}]})).to_string().into(), StatusCode::BAD_REQUEST, "name"),
        (chat(json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]})).to_string().into(), StatusCode::BAD_REQUEST, "parameters"),
        (chat(json!({"tools": "nope"})).to_string().into(), StatusCode::BAD_REQUEST, "tools"),
        (chat(json!({"tool_choice": "sometimes"})).to_string().into(), StatusCode::BAD_REQUEST, "tool_choice"),
        (chat(json!({"response_format": {"type": "xml"}})).to_string().into(), StatusCode::BAD_REQUEST, "response_format.type"),
        (chat(json!({"enable_thinking": true, "reasoning_effort": "none"})).to_string().into(), StatusCode::BAD_REQUEST, "contradict"),
        (chat(json!({"model": "gpt-4"})).to_string().into(), StatusCode::NOT_FOUND, "gpt-4"),
        (chat(json!({"messages": [{"role": "user", "content": "word ".repeat(400)}], "max_tokens": 16})).to_string().into(), StatusCode::BAD_REQUEST, "maximum context length"),
        (json!({"prompt": [1, -2]}).to_string().into(), StatusCode::BAD_REQUEST, "prompt"),
    ];
    for (i, (body, want, needle)) in cases.into_iter().enumerate() {
        let path = if i == cases_len_prompt() {
            "/v1/completions"
        } else {
            "/v1/chat/completions"
        };
        let (status, _, bytes) = send(&app, post(path, body)).await;
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("case {i}: not JSON ({e}): {bytes:?}"));
        assert_error(status, &value, want, needle);
    }
    // Still serving.
    let (status, _, _) = send(
        &app,
        Request::get("/v1/models").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// Index of the completions case in the battery above.
fn cases_len_prompt() -> usize {
    24
}

#[tokio::test]
async fn completions_validation() {
    let app = app();
    let (s, b) = post_json(&app, "/v1/completions", json!({"prompt": {"x": 1}})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "prompt");
    let (s, b) = post_json(&app, "/v1/completions", json!({"prompt": [999_999_999]})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "vocabulary");
    let (s, b) = post_json(
        &app,
        "/v1/completions",
        json!({"prompt": "hi", "echo": true}),
    )
    .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "echo");
}

#[tokio::test]
async fn body_limit_is_413() {
    let app = app_with(ServerConfig {
        max_body_bytes: 1024,
        ..ServerConfig::default()
    });
    let big = chat(json!({"messages": [{"role": "user", "content": "x".repeat(4096)}]}));
    let (status, body) = post_json(&app, "/v1/chat/completions", big).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "too large");
}

#[tokio::test]
async fn api_key_and_open_health() {
    let app = app_with(ServerConfig {
        api_keys: vec!["sekret".into()],
        ..ServerConfig::default()
    });
    let (status, body) = post_json(&app, "/v1/chat/completions", chat(json!({}))).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "API key");
    let req = Request::get("/v1/models")
        .header(header::AUTHORIZATION, "Bearer wrong")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::UNAUTHORIZED);
    let req = Request::get("/v1/models")
        .header(header::AUTHORIZATION, "Bearer sekret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, Request::get("/health").body(Body::empty()).unwrap())
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn health_is_503_while_loading_and_unknown_route_is_404() {
    let app = router(AppState::new(ServerConfig::default()));
    let (status, _, body) = send(&app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("loading"));
    let (status, body) = post_json(&app, "/v1/chat/completions", chat(json!({}))).await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "loading");
    let (status, _, body) = send(
        &app,
        Request::get("/v2/nothing").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("/v2/nothing"));
    let (status, _, body) = send(&app, Request::get("/version").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("version"));
}

#[tokio::test]
async fn cors_preflight() {
    let app = app_with(ServerConfig {
        cors_allow_origins: vec!["https://example.com".into()],
        ..ServerConfig::default()
    });
    let req = Request::options("/v1/chat/completions")
        .header(header::ORIGIN, "https://example.com")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = send(&app, req).await;
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://example.com"
    );
}

// ---------- routes that need only the tokenizer ----------

#[tokio::test]
async fn models_tokenize_detokenize() {
    let app = app();
    let (status, _, body) = send(
        &app,
        Request::get("/v1/models").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let models: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(models["data"][0]["id"], MODEL_NAME);
    assert_eq!(models["data"][0]["max_model_len"], MAX_MODEL_LEN);

    let (status, tok) = post_json(&app, "/tokenize", json!({"prompt": "Hello world"})).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    assert_eq!(tok["count"], tok["tokens"].as_array().unwrap().len());
    let (status, detok) = post_json(&app, "/detokenize", json!({"tokens": tok["tokens"]})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detok["prompt"], "Hello world");

    // Chat-style: the exact ids generation uses, with the thinking switch applied.
    let (_, on) = post_json(
        &app,
        "/tokenize",
        json!({"messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    let (_, off) = post_json(
        &app,
        "/tokenize",
        json!({"messages": [{"role": "user", "content": "Hi"}], "chat_template_kwargs": {"enable_thinking": false}}),
    )
    .await;
    let (_, text_off) = post_json(&app, "/detokenize", json!({"tokens": off["tokens"]})).await;
    assert!(
        text_off["prompt"]
            .as_str()
            .unwrap()
            .ends_with("<think>\n\n</think>\n\n"),
        "{text_off}"
    );
    assert!(off["count"].as_u64() > on["count"].as_u64());
    // Null assistant content and content parts render (Qwen3's template fails on null).
    let (status, b) = post_json(
        &app,
        "/tokenize",
        json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}, {"role": "assistant", "content": null}, {"role": "user", "content": "b"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{b}");
}

// ---------- generation through the real engine ----------

/// `<think>`. Qwen3's template leaves the prompt before `<think>` when thinking is on, so the
/// model must open the block itself: a bias of 4 makes this random model emit it first, and the
/// presence/frequency penalties keep it from repeating, so reasoning text follows.
const THINK_START: &str = "151667";

fn thinking_request() -> Value {
    chat(json!({
        "enable_thinking": true, "logit_bias": {THINK_START: 4}, "presence_penalty": 2.0,
        "frequency_penalty": 2.0, "max_tokens": 6, "ignore_eos": true
    }))
}

#[tokio::test]
async fn chat_non_stream_shape_and_thinking_off_is_all_content() {
    let app = app();
    let (status, body) = post_json(
        &app,
        "/v1/chat/completions",
        chat(json!({"chat_template_kwargs": {"enable_thinking": false}, "ignore_eos": true, "min_tokens": 4})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], MODEL_NAME);
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["content"].is_string(), "{body}");
    assert!(
        choice["message"].get("reasoning_content").is_none()
            && choice["message"].get("reasoning").is_none(),
        "{body}"
    );
    assert_eq!(choice["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 4);
    let u = &body["usage"];
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + 4)
    );
}

#[tokio::test]
async fn thinking_on_without_end_tag_is_all_reasoning() {
    let app = app();
    let request = thinking_request();
    let (status, body) = post_json(&app, "/v1/chat/completions", request.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let message = &body["choices"][0]["message"];
    // Cut by max_tokens inside the think block: everything is reasoning, content is null.
    assert!(message["content"].is_null(), "{body}");
    let reasoning = message["reasoning_content"]
        .as_str()
        .expect("reasoning_content");
    assert_eq!(
        message["reasoning"], reasoning,
        "both field names carry the reasoning by default"
    );
    assert!(
        !reasoning.is_empty() && !reasoning.contains("<think>"),
        "reasoning {reasoning:?}"
    );

    // include_reasoning: false drops it.
    let mut hidden = request.clone();
    hidden["include_reasoning"] = json!(false);
    let (_, body) = post_json(&app, "/v1/chat/completions", hidden).await;
    assert!(
        body["choices"][0]["message"]
            .get("reasoning_content")
            .is_none(),
        "{body}"
    );

    // Streaming: only reasoning deltas, never content text.
    let mut streamed = request;
    streamed["stream"] = json!(true);
    let (status, _, bytes) = send(&app, post("/v1/chat/completions", streamed.to_string())).await;
    assert_eq!(status, StatusCode::OK);
    let mut reasoning = String::new();
    for data in sse_data(&bytes).iter().filter(|d| *d != "[DONE]") {
        let chunk: Value = serde_json::from_str(data).unwrap();
        for c in chunk["choices"].as_array().unwrap() {
            let content = c["delta"]["content"].as_str().unwrap_or("");
            assert!(
                content.is_empty(),
                "content in a thinking-only stream: {data}"
            );
            reasoning.push_str(c["delta"]["reasoning_content"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(reasoning, message_reasoning_of(&app).await);
}

/// The non-streamed reasoning of the thinking request above (greedy, so it is the same text).
async fn message_reasoning_of(app: &Router) -> String {
    let request = thinking_request();
    let (_, body) = post_json(app, "/v1/chat/completions", request).await;
    body["choices"][0]["message"]["reasoning_content"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn chat_stream_framing_with_n_and_usage() {
    let app = app();
    let request = chat(json!({
        "stream": true, "stream_options": {"include_usage": true}, "n": 2, "temperature": 1.0, "seed": 3,
        "max_tokens": 3, "ignore_eos": true, "enable_thinking": false
    }));
    let (status, headers, bytes) =
        send(&app, post("/v1/chat/completions", request.to_string())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_data(&bytes);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    // First: the role chunk for every choice.
    let first = &chunks[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"].as_array().unwrap().len(), 2);
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    // Last: usage with no choices.
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 6);
    // One finish chunk per choice, nothing after it for that choice.
    for index in 0..2 {
        let finishes: Vec<usize> = chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                c["choices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|ch| ch["index"] == index && !ch["finish_reason"].is_null())
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(finishes.len(), 1, "choice {index}");
        let after = chunks[finishes[0] + 1..].iter().any(|c| {
            c["choices"]
                .as_array()
                .unwrap()
                .iter()
                .any(|ch| ch["index"] == index)
        });
        assert!(!after, "choice {index} has chunks after its finish chunk");
    }
    // Every chunk of one response has the same id.
    assert!(chunks.iter().all(|c| c["id"] == first["id"]));
}

#[tokio::test]
async fn seed_reproducible_and_logprobs() {
    let app = app();
    let request = chat(
        json!({"temperature": 1.0, "seed": 42, "max_tokens": 6, "ignore_eos": true, "logprobs": true, "top_logprobs": 2}),
    );
    let (s1, a) = post_json(&app, "/v1/chat/completions", request.clone()).await;
    let (s2, b) = post_json(&app, "/v1/chat/completions", request).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{a}");
    assert_eq!(a["choices"][0]["message"], b["choices"][0]["message"]);
    let lps = a["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("logprobs.content");
    assert_eq!(lps.len(), 6);
    assert_eq!(lps[0]["top_logprobs"].as_array().unwrap().len(), 2);
    assert!(lps[0]["logprob"].as_f64().unwrap() <= 0.0);
}

#[tokio::test]
async fn completions_prompt_shapes_and_stream() {
    let app = app();
    let (status, body) =
        post_json(&app, "/v1/completions", json!({"prompt": ["Hello", "The sky"], "max_tokens": 3, "ignore_eos": true, "temperature": 0})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"].as_array().unwrap().len(), 2);
    assert_eq!(body["choices"][1]["index"], 1);
    assert_eq!(body["usage"]["completion_tokens"], 6);

    // Token ids give the same greedy text as the string they encode.
    let (_, tok) = post_json(&app, "/tokenize", json!({"prompt": "Hello"})).await;
    let (_, by_ids) = post_json(
        &app,
        "/v1/completions",
        json!({"prompt": tok["tokens"], "max_tokens": 3, "ignore_eos": true, "temperature": 0}),
    )
    .await;
    assert_eq!(by_ids["choices"][0]["text"], body["choices"][0]["text"]);

    let request = json!({"prompt": "Hello", "max_tokens": 3, "ignore_eos": true, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
    let (status, _, bytes) = send(&app, post("/v1/completions", request.to_string())).await;
    assert_eq!(status, StatusCode::OK);
    let events = sse_data(&bytes);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut text = String::new();
    for data in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(data).unwrap();
        for c in chunk["choices"].as_array().unwrap() {
            text.push_str(c["text"].as_str().unwrap());
        }
    }
    assert_eq!(
        text,
        body["choices"][0]["text"].as_str().unwrap(),
        "streamed text = non-streamed text"
    );
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn stop_string_cuts_the_text() {
    let app = app();
    // Long enough (> 2 KV blocks) that the repeat finds its prompt in the prefix cache.
    let prompt = "Once upon a time, in a quiet valley, ".repeat(6);
    let base = json!({"prompt": prompt, "max_tokens": 16, "ignore_eos": true, "temperature": 0});
    let (_, full) = post_json(&app, "/v1/completions", base.clone()).await;
    let text = full["choices"][0]["text"].as_str().unwrap().to_string();
    // A stop string from the middle of the greedy output.
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 4, "too little text to cut: {text:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let mut request = base;
    request["stop"] = json!([stop]);
    let (status, cut) = post_json(&app, "/v1/completions", request).await;
    assert_eq!(status, StatusCode::OK, "{cut}");
    let expected = &text[..text.find(&stop).unwrap()];
    assert_eq!(cut["choices"][0]["text"], expected);
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    assert_eq!(cut["choices"][0]["stop_reason"], stop);
    // The usage of a choice ended by a stop string still reports the cached prompt tokens.
    let usage = &cut["usage"];
    assert!(
        usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0)
            >= 32,
        "{usage}"
    );
    assert!(usage["completion_tokens"].as_u64().unwrap() < 16, "{usage}");
}

#[tokio::test]
async fn metrics_after_a_request() {
    let app = app();
    let (status, _) = post_json(&app, "/v1/chat/completions", chat(json!({"max_tokens": 1}))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, body) =
        send(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(String::from_utf8_lossy(&body).contains(MODEL_NAME));
}

#[tokio::test]
async fn full_queue_is_503_with_retry_after() {
    // One running sequence at most and one waiting: n = 3 cannot all be queued.
    let engine = build_engine(EngineConfig {
        max_model_len: MAX_MODEL_LEN,
        num_blocks: 64,
        max_num_seqs: 1,
        max_queued_requests: 1,
        ..EngineConfig::default()
    });
    let app = app_on(&engine, ServerConfig::default());
    let (status, headers, bytes) = send(
        &app,
        post(
            "/v1/chat/completions",
            chat(json!({"n": 3, "max_tokens": 100, "ignore_eos": true})).to_string(),
        ),
    )
    .await;
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "queue is full",
    );
    assert_eq!(headers[header::RETRY_AFTER], "1");
    // The sequences submitted before the refusal were aborted (the engine thread drops them
    // at its next command poll); a client honouring Retry-After is then served.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) =
            post_json(&app, "/v1/chat/completions", chat(json!({"max_tokens": 2}))).await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            std::time::Instant::now() < deadline,
            "the queue never drained: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn client_disconnect_aborts_the_sequence() {
    let engine = build_engine(EngineConfig {
        max_model_len: MAX_MODEL_LEN,
        num_blocks: 64,
        ..EngineConfig::default()
    });
    let metrics = engine.0.metrics();
    let app = app_on(&engine, ServerConfig::default());
    let request = chat(json!({"stream": true, "max_tokens": 200, "ignore_eos": true}));
    let response = app
        .clone()
        .oneshot(post("/v1/chat/completions", request.to_string()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    // Wait for the first generated token's chunk (after the role chunk), then hang up.
    let mut seen = 0;
    while seen < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(60), body.frame())
            .await
            .expect("a frame")
            .expect("open")
            .unwrap();
        seen += frame
            .data_ref()
            .map_or(0, |d| d.windows(5).filter(|w| w == b"data:").count());
    }
    drop(body);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metrics
        .finished_abort
        .load(std::sync::atomic::Ordering::Acquire)
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the engine never aborted the sequence"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        metrics
            .finished_length
            .load(std::sync::atomic::Ordering::Acquire),
        0,
        "it ran to max_tokens"
    );
}

#[tokio::test]
async fn tools_and_tool_results_render_and_generate() {
    let app = app();
    let request = chat(json!({
        "messages": [
            {"role": "system", "content": "You can call tools."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": "auto", "max_tokens": 3
    }));
    let (status, body) = post_json(&app, "/v1/chat/completions", request.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut streamed = request;
    streamed["stream"] = json!(true);
    let (status, _, bytes) = send(&app, post("/v1/chat/completions", streamed.to_string())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sse_data(&bytes).last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn reasoning_field_flag_picks_one_name() {
    let app = app_with(ServerConfig {
        reasoning_field: kestrel_server::ReasoningField::Reasoning,
        ..ServerConfig::default()
    });
    let (status, body) = post_json(&app, "/v1/chat/completions", thinking_request()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let message = &body["choices"][0]["message"];
    assert!(message["reasoning"].is_string(), "{body}");
    assert!(message.get("reasoning_content").is_none(), "{body}");
}
