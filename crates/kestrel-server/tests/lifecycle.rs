//! What an orchestrator sees (in-process, tower `oneshot`): `/ready` is 503 while loading, 200
//! once the model runs and 503 again once draining; `/health` stays 200 through a drain; a
//! draining server answers generation with 503 + `Retry-After` but keeps serving the rest;
//! every response carries an `X-Request-Id` (the client's, when it sent one); `/metrics`
//! answers while loading and exposes the vLLM series once loaded.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use kestrel_backend::cpu::CpuBackend;
use kestrel_engine::{start_engine, EngineConfig, SamplingParams};
use kestrel_model::{ModelFiles, QwenModel};
use kestrel_server::{router, AppState, Model, ServerConfig};
use kestrel_text::Tokenizer;
use serde_json::json;
use tower::ServiceExt;

fn load_model() -> Model {
    let dir = common::tiny_model_dir();
    let files = ModelFiles::open(dir).expect("open tiny model");
    let backend = CpuBackend::new();
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
    let tokenizer = Tokenizer::from_dir(dir).expect("tokenizer");
    Model::new(engine, tokenizer, SamplingParams::default(), &[]).expect("model")
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = tokio::time::timeout(Duration::from_secs(60), app.clone().oneshot(request))
        .await
        .expect("response within 60 s")
        .expect("infallible");
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn chat() -> Request<Body> {
    let body =
        json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    Request::post("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-request-id", "client-id-7")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn readiness_follows_loading_and_draining() {
    let state = AppState::new(ServerConfig {
        served_model_name: "tiny".into(),
        ..ServerConfig::default()
    });
    let app = router(state.clone());

    // Loading: not ready, not alive yet, generation refused; metrics still answer.
    assert_eq!(
        send(&app, get("/ready")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        send(&app, get("/health")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (status, _, text) = send(&app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("kestrel_ready 0"), "{text}");
    assert!(
        !text.contains("vllm:"),
        "no engine series before the engine: {text}"
    );

    state.set_model(load_model());
    assert_eq!(send(&app, get("/ready")).await.0, StatusCode::OK);
    let (status, headers, _) = send(&app, chat()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-request-id"], "client-id-7");
    let (_, headers, _) = send(&app, get("/v1/models")).await;
    assert_eq!(
        headers["x-request-id"].len(),
        32,
        "made when the client sent none"
    );
    let (_, _, text) = send(&app, get("/metrics")).await;
    for line in [
        "kestrel_ready 1",
        "kestrel_draining 0",
        "vllm:num_requests_running{model_name=\"tiny\",engine=\"0\"} 0",
        "vllm:request_success_total{model_name=\"tiny\",engine=\"0\",finished_reason=\"length\"} 1",
        "kestrel_http_requests_total{code=\"200\",route=\"/v1/chat/completions\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }

    // Draining: not ready, still alive; generation 503 + Retry-After; other routes answer.
    state.lifecycle.begin_drain();
    assert_eq!(
        send(&app, get("/ready")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(send(&app, get("/health")).await.0, StatusCode::OK);
    let (status, headers, body) = send(&app, chat()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert!(body.contains("shutting down"), "{body}");
    assert_eq!(send(&app, get("/v1/models")).await.0, StatusCode::OK);
    let (_, _, text) = send(&app, get("/metrics")).await;
    assert!(text.lines().any(|l| l == "kestrel_draining 1"), "{text}");
    assert_eq!(state.lifecycle.in_flight(), 0);
}

#[tokio::test]
async fn a_streamed_response_counts_as_in_flight_until_it_ends() {
    let state = AppState::new(ServerConfig::default());
    state.set_model(load_model());
    let app = router(state.clone());
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50,
        "ignore_eos": true, "stream": true});
    let request = Request::post("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The handler has returned; the stream has not ended.
    assert_eq!(state.lifecycle.in_flight(), 1);
    // A drain now waits for it.
    let drain = {
        let l = state.lifecycle.clone();
        tokio::spawn(async move { l.drain(Duration::from_secs(60)).await })
    };
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&text).ends_with("data: [DONE]\n\n"));
    assert_eq!(
        drain.await.unwrap(),
        0,
        "every request finished within the timeout"
    );
    assert_eq!(state.lifecycle.in_flight(), 0);
}
