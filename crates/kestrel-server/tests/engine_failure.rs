//! What clients see when the engine fails: a stream already under way ends with an in-band SSE
//! error event (the 200 status is already sent), `/health` turns 503, and new requests get a
//! 503 in OpenAI's error shape instead of hanging. The failure is injected by a backend that
//! wraps the CPU backend, forwards every op, and fails its N-th step on demand.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use kestrel_backend::cpu::CpuBackend;
use kestrel_backend::testing::{Fault, FaultyBackend};
use kestrel_engine::{start_engine, EngineConfig, SamplingParams};
use kestrel_model::{ModelFiles, QwenModel};
use kestrel_server::{router, AppState, Model, ServerConfig};
use kestrel_text::Tokenizer;
use serde_json::{json, Value};
use tower::ServiceExt;

/// The tiny model on a CPU backend whose step can be made to fail.
fn app() -> (axum::Router, FaultyBackend<CpuBackend>) {
    let dir = common::tiny_model_dir();
    let files = ModelFiles::open(dir).expect("open tiny model");
    let backend = FaultyBackend::new(CpuBackend::new(), Fault::Error);
    let control = backend.clone();
    let model = QwenModel::load(&backend, files.config().clone(), files.weights())
        .expect("load tiny model");
    let engine = start_engine(
        backend,
        model,
        EngineConfig {
            max_model_len: 256,
            num_blocks: 64,
            ..EngineConfig::default()
        },
    )
    .expect("start engine");
    let state = AppState::new(ServerConfig {
        served_model_name: "tiny".into(),
        ..ServerConfig::default()
    });
    state.set_model(
        Model::new(
            engine,
            Tokenizer::from_dir(dir).expect("tokenizer"),
            SamplingParams::default(),
            &[],
        )
        .expect("model"),
    );
    (router(state), control)
}

async fn call(app: &axum::Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = tokio::time::timeout(Duration::from_secs(60), app.clone().oneshot(request))
        .await
        .expect("a response within 60 s")
        .expect("infallible");
    let status = response.status();
    let body = tokio::time::timeout(Duration::from_secs(60), response.into_body().collect())
        .await
        .expect("the body ends within 60 s: a failed engine must not leave streams hanging")
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, body)
}

fn chat(stream: bool) -> Request<Body> {
    let body = json!({
        "model": "tiny", "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 40, "ignore_eos": true, "temperature": 0, "stream": stream,
        "stream_options": {"include_usage": true}
    });
    Request::post("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn engine_failure_mid_stream_is_an_sse_error_then_health_is_503() {
    let (app, backend) = app();

    // A healthy engine first.
    let (status, _) = call(&app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);

    // Steps 0 (prefill) .. 5 succeed, step 6 fails: six tokens are streamed, then the error.
    backend.fail_after(6);
    let (status, body) = call(&app, chat(true)).await;
    assert_eq!(status, StatusCode::OK, "the stream had started");
    let text = String::from_utf8(body).expect("UTF-8");
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    let error_at = events
        .iter()
        .position(|e| e.contains("\"error\""))
        .unwrap_or_else(|| panic!("no SSE error event in {text}"));
    let error: Value = serde_json::from_str(events[error_at]).expect("the error event is JSON");
    let message = error["error"]["message"]
        .as_str()
        .expect("OpenAI error shape");
    assert!(message.contains("injected device failure"), "{message}");
    // Role chunk plus the tokens of the six good steps came before the error.
    let chunks_before = events[..error_at]
        .iter()
        .filter(|e| e.contains("chat.completion.chunk"))
        .count();
    assert!(chunks_before >= 2, "{text}");
    assert!(
        !events[..error_at]
            .iter()
            .any(|e| e.contains("\"finish_reason\":\"length\"")),
        "the choice must not look finished: {text}"
    );
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");

    // The engine is dead: probes see it, and new work is refused at once.
    let (status, body) = call(&app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    assert!(v["error"]["message"].as_str().is_some(), "{v}");
    for stream in [false, true] {
        let (status, body) = call(&app, chat(stream)).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            String::from_utf8_lossy(&body)
        );
        let v: Value = serde_json::from_slice(&body).expect("JSON");
        assert!(v["error"]["message"].as_str().is_some(), "{v}");
    }
}
