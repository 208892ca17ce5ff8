//! Structured output through the HTTP API on the tiny random-weight Qwen3 with the real Qwen3
//! tokenizer: whatever the random model prefers, `response_format` (json_schema, json_object),
//! vLLM's `structured_outputs` and `guided_*` fields hold the answer to the grammar on chat
//! and completions, streamed and not; with thinking on and a `thinking_budget`, reasoning is
//! free and the content follows the schema; a forced tool call (`tool_choice` required or
//! named) is a valid Hermes call whose arguments follow the tool's schema; an answer cut by
//! `max_tokens` ends with `finish_reason: "length"`, never as a valid-looking stop.

mod common;

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
use std::sync::OnceLock;
use tower::ServiceExt;

fn shared_engine() -> &'static (EngineHandle, Tokenizer) {
    static ENGINE: OnceLock<(EngineHandle, Tokenizer)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        engine(EngineConfig {
            max_model_len: 512,
            num_blocks: 512,
            ..EngineConfig::default()
        })
    })
}

fn router() -> Router {
    app(shared_engine(), ServerConfig::default())
}

async fn post(app: &Router, path: &str, body: Value) -> (StatusCode, Vec<u8>) {
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(300), app.clone().oneshot(request))
        .await
        .expect("response in time")
        .expect("infallible");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, bytes.to_vec())
}

async fn post_json(app: &Router, path: &str, body: Value) -> Value {
    let (status, bytes) = post(app, path, body).await;
    let v: Value = serde_json::from_slice(&bytes).expect("JSON body");
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// The chunks of an SSE body (without `[DONE]`).
async fn post_stream(app: &Router, path: &str, body: Value) -> Vec<Value> {
    let (status, bytes) = post(app, path, body).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    String::from_utf8(bytes)
        .expect("UTF-8")
        .split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data:").map(str::trim))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("chunk JSON"))
        .collect()
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "answer": {"type": "boolean"},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "count": {"type": "integer", "minimum": 0, "maximum": 500},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}
        },
        "required": ["answer", "unit", "count", "tags"],
        "additionalProperties": false
    })
}

fn check(v: &Value) {
    assert!(v["answer"].is_boolean(), "{v}");
    assert!(
        ["celsius", "fahrenheit"].contains(&v["unit"].as_str().unwrap_or("")),
        "{v}"
    );
    assert!(
        (0..=500).contains(&v["count"].as_i64().expect("count")),
        "{v}"
    );
    let tags = v["tags"].as_array().expect("tags");
    assert!(
        tags.len() <= 2 && tags.iter().all(|t| t == "a" || t == "b"),
        "{v}"
    );
    assert_eq!(v.as_object().unwrap().len(), 4, "{v}");
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("invalid JSON {text:?}: {e}"))
}

fn chat(extra: Value) -> Value {
    let mut body = json!({
        "messages": [{"role": "user", "content": "Give me the weather as JSON."}],
        "max_tokens": 160,
        "temperature": 1.0,
        "enable_thinking": false,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_answers_parse_and_follow_the_schema() {
    let app = router();
    let format = json!({"type": "json_schema", "json_schema": {"name": "weather", "schema": schema(), "strict": true}});
    for seed in 0..4 {
        let v = post_json(
            &app,
            "/v1/chat/completions",
            chat(json!({"response_format": format, "seed": seed})),
        )
        .await;
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "stop", "{v}");
        check(&parse(
            choice["message"]["content"].as_str().expect("content"),
        ));
    }
    // Streamed: the content deltas concatenate to a valid answer.
    let chunks = post_stream(
        &app,
        "/v1/chat/completions",
        chat(json!({"response_format": format, "seed": 11, "stream": true})),
    )
    .await;
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    check(&parse(&content));
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("stop"));
    // json_object: any object.
    let v = post_json(
        &app,
        "/v1/chat/completions",
        chat(json!({"response_format": {"type": "json_object"}, "seed": 3, "max_tokens": 400})),
    )
    .await;
    let choice = &v["choices"][0];
    if choice["finish_reason"] == "stop" {
        assert!(parse(choice["message"]["content"].as_str().unwrap()).is_object());
    } else {
        assert_eq!(choice["finish_reason"], "length");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vllm_fields_on_chat_and_completions() {
    let app = router();
    let cases = [
        (json!({"guided_regex": "[0-9]{3}-[a-z]{2}"}), "regex"),
        (
            json!({"structured_outputs": {"regex": "[0-9]{3}-[a-z]{2}"}}),
            "regex",
        ),
        (json!({"guided_choice": ["sunny", "rainy day"]}), "choice"),
        (
            json!({"structured_outputs": {"choice": ["sunny", "rainy day"]}}),
            "choice",
        ),
        (json!({"guided_json": schema()}), "json"),
        (json!({"structured_outputs": {"json": schema()}}), "json"),
        (
            json!({"guided_grammar": "start: \"x=\" /[0-9]{2}/"}),
            "grammar",
        ),
    ];
    let check_text = |kind: &str, text: &str| match kind {
        "regex" => {
            let b = text.as_bytes();
            assert_eq!(b.len(), 6, "{text:?}");
            assert!(
                b[..3].iter().all(u8::is_ascii_digit) && b[3] == b'-',
                "{text:?}"
            );
            assert!(b[4..].iter().all(u8::is_ascii_lowercase), "{text:?}");
        }
        "choice" => assert!(text == "sunny" || text == "rainy day", "{text:?}"),
        "json" => check(&parse(text)),
        _ => {
            assert!(text.starts_with("x=") && text.len() == 4, "{text:?}");
        }
    };
    for (i, (fields, kind)) in cases.iter().enumerate() {
        let mut extra = fields.clone();
        extra["seed"] = json!(i);
        let v = post_json(&app, "/v1/chat/completions", chat(extra)).await;
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{fields}: {v}");
        check_text(
            kind,
            v["choices"][0]["message"]["content"].as_str().unwrap(),
        );
        let mut body = json!({"prompt": "The weather:", "max_tokens": 160, "temperature": 1.0, "seed": i, "n": 2});
        for (k, f) in fields.as_object().unwrap() {
            body[k] = f.clone();
        }
        let v = post_json(&app, "/v1/completions", body).await;
        for c in v["choices"].as_array().unwrap() {
            assert_eq!(c["finish_reason"], "stop", "{fields}: {v}");
            check_text(kind, c["text"].as_str().unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_budget_gives_free_reasoning_then_a_schema_answer() {
    let app = router();
    let format =
        json!({"type": "json_schema", "json_schema": {"name": "weather", "schema": schema()}});
    for (seed, stream) in [(1, false), (2, false), (3, true), (4, true)] {
        let body = chat(json!({
            "response_format": format,
            "enable_thinking": true,
            "thinking_budget": 8,
            "seed": seed,
            "stream": stream,
        }));
        let (reasoning, content, finish) = if stream {
            let chunks = post_stream(&app, "/v1/chat/completions", body).await;
            let field = |f: &str| -> String {
                chunks
                    .iter()
                    .filter_map(|c| c["choices"][0]["delta"][f].as_str())
                    .collect()
            };
            let finish = chunks.iter().find_map(|c| {
                c["choices"][0]["finish_reason"]
                    .as_str()
                    .map(str::to_string)
            });
            (field("reasoning_content"), field("content"), finish)
        } else {
            let v = post_json(&app, "/v1/chat/completions", body).await;
            let m = &v["choices"][0]["message"];
            (
                m["reasoning_content"].as_str().unwrap_or("").to_string(),
                m["content"].as_str().unwrap_or("").to_string(),
                v["choices"][0]["finish_reason"]
                    .as_str()
                    .map(str::to_string),
            )
        };
        assert!(!reasoning.is_empty(), "no reasoning (seed {seed})");
        assert!(!reasoning.contains("</think>"));
        check(&parse(&content));
        assert_eq!(finish.as_deref(), Some("stop"));
    }
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object",
            "properties": {"city": {"enum": ["Paris", "Oslo"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
            "required": ["city", "days"]
        }}},
        {"type": "function", "function": {"name": "get_time", "strict": true, "parameters": {
            "type": "object",
            "properties": {"zone": {"enum": ["UTC", "CET"]}},
            "required": ["zone"],
            "additionalProperties": false
        }}}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_tool_calls_are_valid_calls() {
    let app = router();
    let named = json!({"type": "function", "function": {"name": "get_time"}});
    for (seed, choice, stream) in [
        (1, json!("required"), false),
        (2, json!("required"), true),
        (3, named.clone(), false),
        (4, named, true),
    ] {
        let body = chat(json!({
            "tools": weather_tools(),
            "tool_choice": choice,
            "parallel_tool_calls": false,
            "seed": seed,
            "stream": stream,
        }));
        let (calls, finish): (Vec<(String, String)>, String) = if stream {
            let chunks = post_stream(&app, "/v1/chat/completions", body).await;
            let mut calls: Vec<(String, String)> = Vec::new();
            for c in &chunks {
                for tc in c["choices"][0]["delta"]["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let i = tc["index"].as_u64().unwrap() as usize;
                    if calls.len() <= i {
                        calls.resize(i + 1, (String::new(), String::new()));
                    }
                    if let Some(n) = tc["function"]["name"].as_str() {
                        calls[i].0.push_str(n);
                    }
                    if let Some(a) = tc["function"]["arguments"].as_str() {
                        calls[i].1.push_str(a);
                    }
                }
            }
            let finish = chunks
                .iter()
                .find_map(|c| {
                    c["choices"][0]["finish_reason"]
                        .as_str()
                        .map(str::to_string)
                })
                .unwrap();
            (calls, finish)
        } else {
            let v = post_json(&app, "/v1/chat/completions", body).await;
            let calls = v["choices"][0]["message"]["tool_calls"]
                .as_array()
                .unwrap_or_else(|| panic!("no tool calls: {v}"))
                .iter()
                .map(|c| {
                    (
                        c["function"]["name"].as_str().unwrap().to_string(),
                        c["function"]["arguments"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            (
                calls,
                v["choices"][0]["finish_reason"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        };
        assert_eq!(finish, "tool_calls", "seed {seed}");
        assert_eq!(calls.len(), 1, "{calls:?}");
        let (name, args) = &calls[0];
        let args = parse(args);
        match name.as_str() {
            "get_weather" => {
                assert!(seed <= 2, "a named choice called {name}");
                assert!(
                    ["Paris", "Oslo"].contains(&args["city"].as_str().unwrap()),
                    "{args}"
                );
                assert!((1..=7).contains(&args["days"].as_i64().unwrap()), "{args}");
            }
            "get_time" => {
                assert!(
                    ["UTC", "CET"].contains(&args["zone"].as_str().unwrap()),
                    "{args}"
                );
                assert_eq!(args.as_object().unwrap().len(), 1, "{args}");
            }
            other => panic!("unknown function {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cut_short_is_length_not_stop() {
    let app = router();
    let format =
        json!({"type": "json_schema", "json_schema": {"name": "weather", "schema": schema()}});
    let v = post_json(
        &app,
        "/v1/chat/completions",
        chat(json!({"response_format": format, "max_tokens": 3, "seed": 1})),
    )
    .await;
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
    assert!(
        serde_json::from_str::<Value>(content).is_err(),
        "{content:?}"
    );
}
