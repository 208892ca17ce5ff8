//! TGI's native API (`/generate`, `/generate_stream`, `POST /`) against the tiny random-weight
//! Qwen3: the same greedy answer as `/v1/completions`, the stream's tokens adding up to its
//! `generated_text`, `details`, stop sequences, `return_full_text`, and TGI's error shape.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use common::server::{app, engine};
use http_body_util::BodyExt;
use kestrel_engine::{EngineConfig, EngineHandle};
use kestrel_protocol::tgi::{TgiGenerateResponse, TgiStreamResponse};
use kestrel_server::ServerConfig;
use kestrel_text::Tokenizer;
use serde_json::{json, Value};
use tower::ServiceExt;

const MAX_MODEL_LEN: usize = 256;
const PROMPT: &str = "The capital of France is";

fn shared_engine() -> &'static (EngineHandle, Tokenizer) {
    static ENGINE: OnceLock<(EngineHandle, Tokenizer)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        engine(EngineConfig {
            max_model_len: MAX_MODEL_LEN,
            num_blocks: 128,
            ..EngineConfig::default()
        })
    })
}

fn router() -> Router {
    app(shared_engine(), ServerConfig::default())
}

async fn send(app: &Router, path: &str, body: impl Into<Body>) -> (StatusCode, Vec<u8>) {
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap();
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

async fn generate(app: &Router, path: &str, body: Value) -> (StatusCode, Value) {
    let (status, bytes) = send(app, path, body.to_string()).await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("JSON body: {:?}", String::from_utf8_lossy(&bytes)));
    (status, value)
}

/// The events of a `/generate_stream` body, each a `data:` line of JSON.
fn events(body: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(body).expect("UTF-8");
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let data = e
                .strip_prefix("data:")
                .unwrap_or_else(|| panic!("an event is one data line: {e:?}"));
            assert!(!data.contains('\n'), "one line per event: {e:?}");
            serde_json::from_str(data.trim_start()).expect("JSON event")
        })
        .collect()
}

async fn greedy_completion(app: &Router, max_tokens: usize) -> String {
    let (status, v) = generate(
        app,
        "/v1/completions",
        json!({"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["choices"][0]["text"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn generate_is_the_greedy_completion_with_details() {
    let app = router();
    let want = greedy_completion(&app, 12).await;
    let (status, v) = generate(
        &app,
        "/generate",
        json!({"inputs": PROMPT, "parameters": {"max_new_tokens": 12, "details": true}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let r: TgiGenerateResponse = serde_json::from_value(v.clone()).expect("TGI shape");
    assert_eq!(r.generated_text, want);
    let d = r.details.expect("details");
    assert_eq!(d.seed, None, "greedy: no seed");
    assert!(d.prefill.is_empty());
    assert_eq!(d.tokens.len(), d.generated_tokens, "{v}");
    assert!(d.generated_tokens >= 1 && d.generated_tokens <= 12);
    if d.generated_tokens == 12 {
        assert_eq!(d.finish_reason, "length");
    } else {
        assert_eq!(d.finish_reason, "eos_token");
    }
    for t in &d.tokens {
        let lp = t.logprob.expect("a logprob per token");
        assert!(lp <= 0.0 && lp.is_finite(), "{v}");
    }
    // Without `details` the answer is the text alone.
    let (_, v) = generate(
        &app,
        "/generate",
        json!({"inputs": PROMPT, "parameters": {"max_new_tokens": 12}}),
    )
    .await;
    assert_eq!(v, json!({ "generated_text": want }));
    // `return_full_text` puts the input in front.
    let (_, v) = generate(
        &app,
        "/generate",
        json!({"inputs": PROMPT, "parameters": {"max_new_tokens": 12, "return_full_text": true}}),
    )
    .await;
    assert_eq!(v["generated_text"], format!("{PROMPT}{want}"));
}

#[tokio::test]
async fn stream_tokens_add_up_to_the_generated_text() {
    let app = router();
    let want = greedy_completion(&app, 16).await;
    for (path, body) in [
        (
            "/generate_stream",
            json!({"inputs": PROMPT, "parameters": {"max_new_tokens": 16, "details": true}}),
        ),
        (
            "/",
            json!({"inputs": PROMPT, "parameters": {"max_new_tokens": 16, "details": true}, "stream": true}),
        ),
    ] {
        let (status, bytes) = send(&app, path, body.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        let events = events(&bytes);
        assert!(!events.is_empty());
        let mut text = String::new();
        for (i, e) in events.iter().enumerate() {
            let r: TgiStreamResponse = serde_json::from_value(e.clone()).expect("TGI event");
            assert_eq!(r.index, i + 1, "{e}");
            text.push_str(&r.token.text);
            let last = i + 1 == events.len();
            assert_eq!(r.generated_text.is_some(), last, "{e}");
            assert_eq!(r.details.is_some(), last, "{e}");
            if last {
                assert_eq!(r.generated_text.as_deref(), Some(want.as_str()));
                let d = r.details.unwrap();
                assert!(d.input_length > 0);
                assert!(d.generated_tokens >= events.len() - 1);
            }
        }
        assert_eq!(text, want, "{path}");
    }
    // `POST /` without `stream` answers like `/generate`.
    let (status, v) = generate(
        &app,
        "/",
        json!({"inputs": PROMPT, "parameters": {"max_new_tokens": 16}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["generated_text"], want);
}

#[tokio::test]
async fn a_stop_sequence_ends_the_answer_and_stays_in_it() {
    let app = router();
    let full = greedy_completion(&app, 24).await;
    // A stop sequence that the greedy answer reaches: its third character onwards, two chars.
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() >= 6, "a long enough answer: {full:?}");
    let stop: String = chars[3..5].iter().collect();
    let cut = full.find(&stop).unwrap() + stop.len();
    let (status, v) = generate(
        &app,
        "/generate",
        json!({"inputs": PROMPT, "parameters": {"max_new_tokens": 24, "stop": [stop], "details": true}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["generated_text"], full[..cut], "{v}");
    assert_eq!(v["details"]["finish_reason"], "stop_sequence");
}

#[tokio::test]
async fn seeded_sampling_is_reproducible_and_reports_its_seed() {
    let app = router();
    let body = json!({"inputs": PROMPT, "parameters": {"max_new_tokens": 8, "do_sample": true, "seed": 42, "details": true}});
    let (_, a) = generate(&app, "/generate", body.clone()).await;
    let (_, b) = generate(&app, "/generate", body).await;
    assert_eq!(a["generated_text"], b["generated_text"]);
    assert_eq!(a["details"]["seed"], 42);
}

#[tokio::test]
async fn bad_input_is_a_tgi_validation_error() {
    let app = router();
    for (body, needle) in [
        (
            json!({"inputs": PROMPT, "parameters": {"top_k": 0}}),
            "top_k",
        ),
        (
            json!({"inputs": PROMPT, "parameters": {"temperature": -1}}),
            "temperature",
        ),
        (
            json!({"inputs": PROMPT, "parameters": {"top_p": 1.5}}),
            "top_p",
        ),
        (
            json!({"inputs": PROMPT, "parameters": {"max_new_tokens": 0}}),
            "max_new_tokens",
        ),
        (
            json!({"inputs": PROMPT, "parameters": {"max_new_tokens": 100000}}),
            "max_new_tokens",
        ),
        (
            json!({"inputs": PROMPT, "parameters": {"max_new_tokens": "many"}}),
            "max_new_tokens",
        ),
        (json!({"inputs": ""}), "inputs"),
        (json!({"parameters": {}}), "inputs"),
        (
            json!({"inputs": PROMPT, "parameters": {"best_of": 3}}),
            "best_of",
        ),
    ] {
        for path in ["/generate", "/generate_stream", "/"] {
            let (status, v) = generate(&app, path, body.clone()).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{path} {body}: {v}"
            );
            assert_eq!(v["error_type"], "validation", "{v}");
            let error = v["error"].as_str().expect("error string");
            assert!(error.contains(needle), "{path} {body}: {error}");
            assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
        }
    }
    let (status, bytes) = send(&app, "/generate", "{not json").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["error_type"], "validation");
}
