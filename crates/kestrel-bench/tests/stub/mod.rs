//! A scripted OpenAI-compatible stub server for the benchmark's tests (axum, in-process,
//! 127.0.0.1:0). Each request's prompt *is* its script, `key=value` words:
//!
//! - `ttft=MS` delay before the first token, `gap=MS` between tokens, `n=N` tokens (`tok0 `, ...);
//! - `reasoning=R`: the first R tokens go in `reasoning_content` (`rfield=reasoning` renames it);
//! - `ws=W`: the first W answer tokens are whitespace only (`\n`);
//! - `status=CODE`: answer at once with that HTTP status and an OpenAI error body;
//! - `drop=K`: break the connection after K tokens; `error_event=K`: send `event: error` after K;
//! - `hang`: never answer; `empty`: a stream with no generated text;
//! - `usage=0`: no usage chunk; `done=0`: no `data: [DONE]`; `crlf`: CRLF line endings;
//! - `split`: every event is written in two pieces, cut inside its `data:` line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use futures::channel::mpsc;
use futures::SinkExt;
use serde_json::{json, Value};

/// Starts the stub on an ephemeral port; returns its base URL.
pub async fn start() -> String {
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    // Without TCP_NODELAY, Nagle's algorithm holds each small SSE write until the client's
    // delayed ACK (~40 ms on Linux) and scripted gaps become 40 ms lumps.
    let listener = listener.tap_io(|tcp| {
        tcp.set_nodelay(true).unwrap();
    });
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

/// The script of a prompt, parsed.
#[derive(Debug, Default, Clone)]
pub struct Script(HashMap<String, String>);

impl Script {
    pub fn parse(text: &str) -> Self {
        Script(
            text.split_whitespace()
                .map(|w| match w.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (w.to_string(), String::new()),
                })
                .collect(),
        )
    }
    fn num(&self, k: &str, default: u64) -> u64 {
        self.0
            .get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
    fn opt(&self, k: &str) -> Option<u64> {
        self.0.get(k).and_then(|v| v.parse().ok())
    }
    fn has(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }
}

async fn chat(Json(body): Json<Value>) -> Response {
    let text = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string();
    respond(Script::parse(&text), true).await
}

async fn completions(Json(body): Json<Value>) -> Response {
    let text = body["prompt"].as_str().unwrap_or_default().to_string();
    respond(Script::parse(&text), false).await
}

type Frame = Result<Bytes, std::io::Error>;

async fn respond(script: Script, chat: bool) -> Response {
    if let Some(code) = script.opt("status") {
        let status = StatusCode::from_u16(code as u16).unwrap();
        let err =
            json!({"error": {"message": "scripted failure", "type": "server_error", "code": code}});
        return (status, Json(err)).into_response();
    }
    if script.has("hang") {
        std::future::pending::<()>().await;
    }
    let (tx, rx) = mpsc::channel::<Frame>(64);
    tokio::spawn(produce(script, chat, tx));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(rx))
        .unwrap()
}

fn chunk(chat: bool, delta: Value, finish: Option<&str>) -> Value {
    if chat {
        json!({"id": "x", "object": "chat.completion.chunk", "model": "stub",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    } else {
        let text = delta.get("content").cloned().unwrap_or(json!(""));
        json!({"id": "x", "object": "text_completion", "model": "stub",
               "choices": [{"index": 0, "text": text, "finish_reason": finish}]})
    }
}

/// Writes the scripted stream; stops quietly when the client has gone.
async fn produce(script: Script, chat: bool, mut tx: mpsc::Sender<Frame>) {
    let nl = if script.has("crlf") { "\r\n" } else { "\n" };
    let split = script.has("split");
    let event = |data: &str| format!("data: {data}{nl}{nl}");
    macro_rules! send {
        ($text:expr) => {{
            let text: String = $text;
            let pieces: Vec<String> = if split && text.len() > 8 {
                vec![text[..8].to_string(), text[8..].to_string()]
            } else {
                vec![text]
            };
            for p in pieces {
                if tx.send(Ok(Bytes::from(p))).await.is_err() {
                    return;
                }
            }
        }};
    }
    let n = if script.has("empty") {
        0
    } else {
        script.num("n", 3)
    };
    let reasoning = script.num("reasoning", 0);
    let ws = script.num("ws", 0);
    let rfield = script
        .0
        .get("rfield")
        .cloned()
        .unwrap_or_else(|| "reasoning_content".into());
    // A role-only first chunk, like vLLM's, arrives at once and must not count as a token.
    send!(event(
        &chunk(chat, json!({"role": "assistant", "content": ""}), None).to_string()
    ));
    send!(format!(": keep-alive{nl}{nl}"));
    tokio::time::sleep(Duration::from_millis(script.num("ttft", 0))).await;
    for i in 0..n {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(script.num("gap", 0))).await;
        }
        if script.opt("drop") == Some(i) {
            let _ = tx
                .send(Err(std::io::Error::other("scripted disconnect")))
                .await;
            return;
        }
        if script.opt("error_event") == Some(i) {
            send!(format!(
                "event: error{nl}data: {}{nl}{nl}",
                json!({"error": {"message": "scripted engine failure"}})
            ));
            return;
        }
        let delta = if i < reasoning {
            json!({ rfield.as_str(): format!("think{i} ") })
        } else if i < reasoning + ws {
            json!({"content": "\n"})
        } else {
            json!({"content": format!("tok{i} ")})
        };
        send!(event(&chunk(chat, delta, None).to_string()));
    }
    send!(event(&chunk(chat, json!({}), Some("length")).to_string()));
    if script.num("usage", 1) == 1 {
        send!(event(
            &json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": n + 3}})
                .to_string()
        ));
    }
    if script.num("done", 1) == 1 {
        send!(event("[DONE]"));
    }
}
