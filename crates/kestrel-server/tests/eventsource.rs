//! `GET /api/generate` (the browser's `EventSource`) against the tiny random-weight Qwen3: the
//! `data` of its events, read as a browser reads them, is the non-streamed greedy answer; the
//! stream ends with `event: done`; the API key may come in the query; bad queries are 400s.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use common::server::{app, engine};
use http_body_util::BodyExt;
use kestrel_engine::{EngineConfig, EngineHandle};
use kestrel_server::ServerConfig;
use kestrel_text::Tokenizer;
use serde_json::{json, Value};
use tower::ServiceExt;

fn shared_engine() -> &'static (EngineHandle, Tokenizer) {
    static ENGINE: OnceLock<(EngineHandle, Tokenizer)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        engine(EngineConfig {
            max_model_len: 256,
            num_blocks: 128,
            ..EngineConfig::default()
        })
    })
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, String, Vec<u8>) {
    let response = tokio::time::timeout(Duration::from_secs(120), app.clone().oneshot(request))
        .await
        .expect("response within 120 s")
        .expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = tokio::time::timeout(Duration::from_secs(120), response.into_body().collect())
        .await
        .expect("body within 120 s")
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, content_type, body)
}

async fn get(app: &Router, uri: &str) -> (StatusCode, String, Vec<u8>) {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post_json(app: &Router, path: &str, body: Value) -> Value {
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, _, bytes) = send(app, request).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).unwrap()
}

/// The events a browser's `EventSource` dispatches from `body`, as `(type, data)` (WHATWG
/// parsing: lines end at `\n`, `\r\n` or `\r`; one space after the colon is dropped; data lines
/// join with `\n`; an event with no data is not dispatched).
fn browser_events(body: &[u8]) -> Vec<(String, String)> {
    let text = std::str::from_utf8(body).expect("UTF-8");
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = Vec::new();
    let (mut kind, mut data) = (String::new(), None::<String>);
    for line in text.split('\n') {
        if line.is_empty() {
            if let Some(mut d) = data.take() {
                d.pop();
                let k = if kind.is_empty() { "message" } else { &kind };
                out.push((k.to_string(), d));
            }
            kind.clear();
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => kind = value.to_string(),
            "data" => {
                let d = data.get_or_insert_with(String::new);
                d.push_str(value);
                d.push('\n');
            }
            _ => {}
        }
    }
    out
}

fn joined(events: &[(String, String)], kind: &str) -> String {
    events
        .iter()
        .filter(|(k, _)| k == kind)
        .map(|(_, d)| d.as_str())
        .collect()
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn message_events_are_the_greedy_chat_answer() {
    let app = app(shared_engine(), ServerConfig::default());
    // The tiny model's greedy answer to this message has newlines inside tokens (`)>\n`).
    let message = "#include";
    for thinking in [false, true] {
        let want = post_json(
            &app,
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": message}], "max_tokens": 32,
                   "temperature": 0, "enable_thinking": thinking}),
        )
        .await;
        let (status, content_type, body) = get(
            &app,
            &format!(
                "/api/generate?message={}&max_tokens=32&temperature=0&enable_thinking={thinking}",
                encode(message)
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        let events = browser_events(&body);
        let msg = &want["choices"][0]["message"];
        if !thinking {
            let content = msg["content"].as_str().unwrap();
            assert!(
                content.contains('\n'),
                "the answer has newlines: {content:?}"
            );
        }
        assert_eq!(
            joined(&events, "message"),
            msg["content"].as_str().unwrap_or(""),
            "thinking={thinking}"
        );
        assert_eq!(
            joined(&events, "reasoning"),
            msg["reasoning"].as_str().unwrap_or(""),
            "thinking={thinking}"
        );
        let (kind, data) = events.last().expect("events");
        assert_eq!(kind, "done", "done is the last event");
        assert_eq!(events.iter().filter(|(k, _)| k == "done").count(), 1);
        let done: Value = serde_json::from_str(data).unwrap();
        let usage = &want["usage"];
        assert_eq!(done["usage"]["prompt_tokens"], usage["prompt_tokens"]);
        assert_eq!(
            done["usage"]["completion_tokens"],
            usage["completion_tokens"]
        );
        assert_eq!(done["usage"]["total_tokens"], usage["total_tokens"]);
        assert_eq!(done["finish_reason"], want["choices"][0]["finish_reason"]);
    }
}

#[tokio::test]
async fn raw_prompt_events_are_the_greedy_completion() {
    let app = app(shared_engine(), ServerConfig::default());
    // The tiny model's greedy continuation of this prompt starts `++\n\n`.
    let prompt = "list";
    let want = post_json(
        &app,
        "/v1/completions",
        json!({"prompt": prompt, "max_tokens": 32, "temperature": 0}),
    )
    .await;
    let (status, _, body) = get(
        &app,
        &format!(
            "/api/generate?prompt={}&max_tokens=32&temperature=0",
            encode(prompt)
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let events = browser_events(&body);
    let text = want["choices"][0]["text"].as_str().unwrap();
    assert!(text.contains("\n\n"), "the answer has newlines: {text:?}");
    // SSE carries no carriage return: the answer's `\r` arrive as `\n`.
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    assert_eq!(joined(&events, "message"), text);
    assert!(joined(&events, "reasoning").is_empty());
    assert_eq!(events.last().unwrap().0, "done");
}

#[tokio::test]
async fn the_api_key_may_come_in_the_query() {
    let app = app(
        shared_engine(),
        ServerConfig {
            api_keys: vec!["sesame".into()],
            ..ServerConfig::default()
        },
    );
    let (status, _, _) = get(&app, "/api/generate?message=hi&max_tokens=2").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = get(&app, "/api/generate?message=hi&max_tokens=2&api_key=wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = get(&app, "/api/generate?message=hi&max_tokens=2&api_key=sesame").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(browser_events(&body).last().unwrap().0, "done");
    // The header still works, and the query key opens no other route.
    let request = Request::get("/api/generate?message=hi&max_tokens=2")
        .header(header::AUTHORIZATION, "Bearer sesame")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, request).await.0, StatusCode::OK);
    let (status, _, _) = get(&app, "/v1/models?api_key=sesame").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_queries_are_400s_naming_the_field() {
    let app = app(shared_engine(), ServerConfig::default());
    for (query, field) in [
        ("", "prompt"),
        ("message=a&prompt=b", "prompt"),
        ("message=", "message"),
        ("message=a&max_tokens=lots", "max_tokens"),
        ("message=a&max_tokens=0", "max_tokens"),
        ("message=a&max_tokens=100000", "max_tokens"),
        ("message=a&temperature=-1", "temperature"),
        ("message=a&enable_thinking=perhaps", "enable_thinking"),
        ("prompt=a&enable_thinking=true", "enable_thinking"),
    ] {
        let (status, _, body) = get(&app, &format!("/api/generate?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["param"], field, "{query}: {v}");
    }
}
