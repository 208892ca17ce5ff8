//! `GET /api/generate`: generation for the browser's `EventSource`, which can only make a GET
//! with no body and no headers. The prompt comes from the query string: `prompt=` is raw text
//! (no template), `message=` is one user message rendered through the chat template; with
//! `max_tokens`, `temperature` and (for `message=`) `enable_thinking`. Behind `--api-key` the key
//! may come as `api_key=` ([`crate::auth`]).
//!
//! The answer is `text/event-stream`: one unnamed event per piece of answer text, whose `data`
//! is that text (a newline inside it is sent as SSE's multi-line data, so `event.data` gives it
//! back exactly; SSE cannot carry a carriage return, so `\r\n` and `\r` arrive as `\n`);
//! reasoning as `event: reasoning`; then one `event: done` whose data is JSON
//! (`finish_reason`, `usage`, and `error` when the generation failed), and the response ends. An
//! `EventSource` reconnects whenever a response ends, which would run the prompt again: the page
//! must call `close()` on `done`:
//!
//! ```js
//! const es = new EventSource("/api/generate?message=" + encodeURIComponent(q));
//! es.onmessage = e => { out.textContent += e.data; };
//! es.addEventListener("done", () => es.close());
//! ```
//!
//! A bad query is a 400 before the stream starts (an `EventSource` does not retry a non-200).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::stream::{self, StreamExt};
use kestrel_protocol::SamplingOptions;
use serde_json::json;
use tokio::sync::mpsc;

use crate::auth::{effective_salt, Tenant};
use crate::chat::render_prompt;
use crate::error::ApiError;
use crate::generation::ChoiceEvent;
use crate::output::OutputProcessor;
use crate::random_id;
use crate::state::AppState;
use crate::submit::submit;
use crate::validate::{thinking_kwargs, validate_options, Limits};

/// `GET /api/generate`.
pub async fn api_generate(
    State(state): State<Arc<AppState>>,
    tenant: Option<Extension<Tenant>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    match run(state, tenant.map(|t| t.0), query).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The query, checked.
#[derive(Debug, PartialEq)]
pub struct GenerateQuery {
    /// `true`: `text` is a user message for the chat template; `false`: a raw prompt.
    pub chat: bool,
    pub text: String,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub enable_thinking: Option<bool>,
}

fn number<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    name: &'static str,
    what: &str,
) -> Result<Option<T>, ApiError> {
    q.get(name)
        .map(|v| {
            v.trim().parse().map_err(|_| {
                ApiError::bad_request(name, format!("`{name}` must be {what}, got {v:?}"))
            })
        })
        .transpose()
}

/// Reads the query's fields; every bad one is a 400 naming it.
pub fn parse_query(q: &HashMap<String, String>) -> Result<GenerateQuery, ApiError> {
    let (chat, text) = match (q.get("prompt"), q.get("message")) {
        (Some(p), None) => (false, p.clone()),
        (None, Some(m)) => (true, m.clone()),
        _ => {
            return Err(ApiError::bad_request(
                "prompt",
                "give exactly one of `prompt` (raw text) or `message` (a user message)",
            ))
        }
    };
    if text.is_empty() {
        let field = if chat { "message" } else { "prompt" };
        return Err(ApiError::bad_request(
            field,
            format!("`{field}` must not be empty"),
        ));
    }
    let enable_thinking = match q.get("enable_thinking").map(String::as_str) {
        None => None,
        Some("true" | "1") => Some(true),
        Some("false" | "0") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(
                "enable_thinking",
                format!("`enable_thinking` must be true or false, got {other:?}"),
            ))
        }
    };
    if enable_thinking.is_some() && !chat {
        return Err(ApiError::bad_request(
            "enable_thinking",
            "`enable_thinking` applies to `message` (the chat template), not to a raw `prompt`",
        ));
    }
    Ok(GenerateQuery {
        chat,
        text,
        max_tokens: number(q, "max_tokens", "an integer")?,
        temperature: number(q, "temperature", "a number")?,
        enable_thinking,
    })
}

async fn run(
    state: Arc<AppState>,
    tenant: Option<Tenant>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::bad_request(None, format!("could not read the query: {e}")))?;
    let q = parse_query(&query)?;
    let model = state.model()?;
    let options = SamplingOptions {
        max_tokens: q.max_tokens,
        temperature: q.temperature,
        ..SamplingOptions::default()
    };
    let prompt_field = if q.chat { "message" } else { "prompt" };
    let mut gen = validate_options(
        &options,
        "max_tokens",
        prompt_field,
        None,
        &Limits::new(&model, &state.config),
    )?;
    gen.stream = true;
    let kwargs = thinking_kwargs(None, q.enable_thinking, None)?;
    let m = model.clone();
    let chat = q.chat;
    let prompt = tokio::task::spawn_blocking(move || -> Result<Vec<u32>, ApiError> {
        if chat {
            let messages = [json!({"role": "user", "content": q.text})];
            render_prompt(&m, &messages, None, true, &kwargs, true).map_err(|e| match e {
                ApiError::BadRequest { message, .. } => ApiError::BadRequest {
                    message,
                    param: Some("message".into()),
                },
                other => other,
            })
        } else {
            m.check_prompt_bytes(&q.text, "prompt")?;
            Ok(m.tokenizer.encode(&q.text, true)?)
        }
    })
    .await
    .map_err(|e| ApiError::Internal(format!("tokenization task failed: {e}")))??;

    let id = format!("api-generate-{}", random_id());
    let salt = effective_salt(tenant.as_ref(), gen.cache_salt.as_deref());
    let (rx, _) = submit(&model, &id, &[prompt], &[], &gen, salt, None, |prompt| {
        OutputProcessor::new(
            model.tokenizer.clone(),
            gen.skip_special_tokens,
            &gen.stop,
            false,
            // A raw prompt is not the template's: no reasoning split.
            if chat {
                model.think_tokens.map(|t| (t, prompt))
            } else {
                None
            },
            None,
        )
    })?;
    Ok(stream_response(rx))
}

/// SSE cannot carry a carriage return (it ends a line like `\n` does): `\r\n` and `\r` become
/// `\n`, which axum then sends as one `data:` line per line.
fn sse_text(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// The event of one piece of text; `None` for empty text (an event with empty data is not
/// dispatched by `EventSource`, so it is not sent).
pub fn text_event(name: Option<&str>, text: &str) -> Option<Event> {
    if text.is_empty() {
        return None;
    }
    let event = Event::default().data(sse_text(text));
    Some(match name {
        Some(name) => event.event(name),
        None => event,
    })
}

fn stream_response(rx: mpsc::Receiver<ChoiceEvent>) -> Response {
    let body = stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        let events: Vec<Event> = match rx.recv().await {
            Some(ChoiceEvent::Piece { piece, .. }) => {
                let mut out = Vec::new();
                out.extend(text_event(Some("reasoning"), &piece.reasoning));
                out.extend(text_event(None, &piece.content));
                return Some((stream::iter(out), Some(rx)));
            }
            Some(ChoiceEvent::Done(_, f)) => vec![done(json!({
                "finish_reason": f.finish_reason,
                "usage": {
                    "prompt_tokens": f.prompt_tokens,
                    "completion_tokens": f.completion_tokens,
                    "total_tokens": f.prompt_tokens + f.completion_tokens,
                },
            }))],
            Some(ChoiceEvent::Error(message)) => {
                vec![done(json!({"finish_reason": "error", "error": message}))]
            }
            None => vec![done(json!({
                "finish_reason": "error",
                "error": "the generation ended without finishing",
            }))],
        };
        // `done` is the last event: the response ends after it.
        Some((stream::iter(events), None))
    })
    .flatten();
    Sse::new(body.map(Ok::<_, Infallible>)).into_response()
}

fn done(data: serde_json::Value) -> Event {
    Event::default().event("done").data(data.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// What a browser's `EventSource` makes of one event's bytes (the WHATWG parsing rules):
    /// `(event type, data)`.
    fn browser_parse(wire: &str) -> (String, String) {
        let mut kind = String::from("message");
        let mut data = String::new();
        for line in wire.split('\n') {
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "event" => kind = value.to_string(),
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                _ => {}
            }
        }
        data.pop();
        (kind, data)
    }

    fn wire(event: Event) -> String {
        use axum::response::IntoResponse;
        let body = Sse::new(stream::iter([Ok::<_, Infallible>(event)])).into_response();
        let bytes = futures::executor::block_on(async {
            use http_body_util::BodyExt;
            body.into_body().collect().await.unwrap().to_bytes()
        });
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        text.strip_suffix("\n\n").expect("one event").to_string()
    }

    #[test]
    fn newlines_and_spaces_survive_the_browser() {
        for text in [
            " Hello",
            "a\nb",
            "\n",
            "\n\n",
            "line\n",
            "\nline",
            "  two spaces",
            "tab\there",
        ] {
            let (kind, data) = browser_parse(&wire(text_event(None, text).unwrap()));
            assert_eq!(kind, "message");
            assert_eq!(data, text, "{text:?}");
        }
        let (kind, data) = browser_parse(&wire(text_event(Some("reasoning"), "x\ny").unwrap()));
        assert_eq!((kind.as_str(), data.as_str()), ("reasoning", "x\ny"));
        // A carriage return cannot travel: it arrives as a newline.
        let (_, data) = browser_parse(&wire(text_event(None, "a\r\nb\rc").unwrap()));
        assert_eq!(data, "a\nb\nc");
        assert!(text_event(None, "").is_none());
    }

    #[test]
    fn query_fields_are_checked_by_name() {
        let ok = parse_query(&q(&[("message", "hi"), ("max_tokens", "5")])).unwrap();
        assert!(ok.chat);
        assert_eq!(ok.max_tokens, Some(5));
        let raw = parse_query(&q(&[("prompt", "a\nb")])).unwrap();
        assert!(!raw.chat);
        assert_eq!(raw.text, "a\nb");
        for (pairs, field) in [
            (vec![], "prompt"),
            (vec![("prompt", "a"), ("message", "b")], "prompt"),
            (vec![("message", "")], "message"),
            (vec![("message", "a"), ("max_tokens", "x")], "max_tokens"),
            (
                vec![("message", "a"), ("temperature", "hot")],
                "temperature",
            ),
            (
                vec![("message", "a"), ("enable_thinking", "maybe")],
                "enable_thinking",
            ),
            (
                vec![("prompt", "a"), ("enable_thinking", "true")],
                "enable_thinking",
            ),
        ] {
            match parse_query(&q(&pairs)) {
                Err(ApiError::BadRequest { param, message }) => {
                    assert_eq!(param.as_deref(), Some(field), "{pairs:?}: {message}")
                }
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
    }
}
