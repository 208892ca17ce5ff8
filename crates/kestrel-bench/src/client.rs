//! One streamed request against an OpenAI-compatible server, timed chunk by chunk.
//!
//! The client is deliberately tolerant of what real servers send (vLLM, llama.cpp, SGLang,
//! kestrel): reasoning in `reasoning_content` or `reasoning` (kestrel may send both with the same
//! text: counted once), extra fields anywhere, no `usage`, a role-only first chunk, comments and
//! keep-alives, a non-streamed JSON answer. It is strict about what a benchmark must not hide:
//! every failure ends as one `ErrorKind`, and the whole request, connection included, is bounded
//! by the per-request timeout so that a silent server cannot hang a run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::dataset::Prompt;
use crate::error::{Error, Result};
use crate::record::{ErrorKind, RequestRecord, TokenSource};
use crate::sse::{SseDecoder, SseEvent};
use crate::tokens::TokenCounter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `/v1/chat/completions`
    Chat,
    /// `/v1/completions`
    Completions,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat/completions",
            Endpoint::Completions => "completions",
        }
    }
}

/// Where and how to send requests.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port` or `http://host:port/v1`.
    pub base_url: String,
    pub model: String,
    pub endpoint: Endpoint,
    pub api_key: Option<String>,
    /// Send `ignore_eos: true` (vLLM, llama.cpp server, kestrel) so answers run to `max_tokens`.
    pub ignore_eos: bool,
    /// Merged into every request body last, overriding the fields above.
    pub extra_body: Map<String, Value>,
    /// Bound on one whole request: connect, wait, stream.
    pub timeout: Duration,
}

impl Target {
    pub fn url(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        if base.ends_with("/v1") {
            format!("{base}/{}", self.endpoint.path())
        } else {
            format!("{base}/v1/{}", self.endpoint.path())
        }
    }

    /// The JSON body for `prompt`; an error for a message list on the completions endpoint.
    pub fn body(&self, prompt: &Prompt) -> std::result::Result<Value, String> {
        let mut body = Map::new();
        body.insert("model".into(), Value::String(self.model.clone()));
        match self.endpoint {
            Endpoint::Chat => {
                body.insert("messages".into(), Value::Array(prompt.messages()));
            }
            Endpoint::Completions => {
                let text = prompt.completion_text().ok_or(
                    "a `messages` prompt needs `--endpoint chat`; completions take plain text",
                )?;
                body.insert("prompt".into(), Value::String(text.to_string()));
            }
        }
        if let Some(max) = prompt.max_tokens {
            body.insert("max_tokens".into(), max.into());
        }
        body.insert("stream".into(), true.into());
        body.insert(
            "stream_options".into(),
            serde_json::json!({"include_usage": true}),
        );
        if self.ignore_eos {
            body.insert("ignore_eos".into(), true.into());
        }
        for (k, v) in &self.extra_body {
            body.insert(k.clone(), v.clone());
        }
        Ok(Value::Object(body))
    }
}

/// Sends prompts to one target. Cheap to share across tasks behind an `Arc`.
pub struct Client {
    http: reqwest::Client,
    target: Target,
    url: String,
    counter: Option<Arc<dyn TokenCounter>>,
}

impl Client {
    pub fn new(target: Target, counter: Option<Arc<dyn TokenCounter>>) -> Result<Self> {
        if target.timeout.is_zero() {
            return Err(Error::Config("the request timeout must be positive".into()));
        }
        let http = reqwest::Client::builder()
            // A benchmark of a local server must not be routed through an HTTP(S)_PROXY.
            .no_proxy()
            .tcp_nodelay(true)
            .connect_timeout(target.timeout.min(Duration::from_secs(30)))
            .build()?;
        Ok(Client {
            url: target.url(),
            http,
            target,
            counter,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Whether output tokens will be counted with a tokenizer when `usage` is missing.
    pub fn has_token_counter(&self) -> bool {
        self.counter.is_some()
    }

    /// Sends one prompt now and measures it. `clock` is the run's start; `scheduled_ms` the
    /// arrival time the rate process gave this request. Never fails: failures are recorded.
    pub async fn send(
        &self,
        prompt: &Prompt,
        clock: Instant,
        index: usize,
        scheduled_ms: f64,
    ) -> RequestRecord {
        let mut rec = RequestRecord {
            index,
            class: prompt.class.clone(),
            scheduled_ms,
            ..RequestRecord::default()
        };
        let body = match self.target.body(prompt) {
            Ok(b) => b,
            Err(msg) => {
                rec.sent_ms = ms(clock.elapsed());
                rec.error = Some(ErrorKind::Request);
                rec.error_message = Some(msg);
                return rec;
            }
        };
        let mut req = self
            .http
            .post(&self.url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&body);
        if let Some(key) = &self.target.api_key {
            req = req.bearer_auth(key);
        }
        let max_tokens = body.get("max_tokens").and_then(Value::as_u64);
        let sent = Instant::now();
        rec.sent_ms = ms(sent.duration_since(clock));
        let mut out = Output::default();
        let streamed = stream(req, sent, &mut rec, &mut out);
        if tokio::time::timeout(self.target.timeout, streamed)
            .await
            .is_err()
        {
            rec.error = Some(ErrorKind::Timeout);
            rec.error_message = Some(format!(
                "no complete answer within {:.1}s",
                self.target.timeout.as_secs_f64()
            ));
        }
        if rec.e2e_ms.is_none() {
            rec.e2e_ms = Some(ms(sent.elapsed()));
        }
        self.finish(&mut rec, &out, max_tokens);
        rec
    }

    /// Token counts and the empty-output check, once the stream is over.
    fn finish(&self, rec: &mut RequestRecord, out: &Output, max_tokens: Option<u64>) {
        rec.output_chars = out.content.chars().count();
        rec.reasoning_chars = out.reasoning.chars().count();
        rec.prompt_tokens = out.usage_prompt_tokens;
        let hit_cap = match (rec.finish_reason.as_deref(), max_tokens) {
            (Some("length"), Some(max)) if rec.error.is_none() => Some(max as usize),
            _ => None,
        };
        let (tokens, source) = match (out.usage_completion_tokens, hit_cap, &self.counter) {
            (Some(n), _, _) => (n, TokenSource::Usage),
            (None, Some(n), _) => (n, TokenSource::MaxTokens),
            (None, None, Some(c)) => (
                c.count_tokens(&out.reasoning) + c.count_tokens(&out.content),
                TokenSource::Tokenizer,
            ),
            (None, None, None) => (rec.chunk_ms.len(), TokenSource::Chunks),
        };
        rec.output_tokens = Some(tokens);
        rec.token_source = Some(source);
        if rec.error.is_none() && out.content.is_empty() && out.reasoning.is_empty() {
            rec.error = Some(ErrorKind::EmptyOutput);
            rec.error_message = Some("the stream finished without any generated text".into());
        }
    }
}

/// Text and usage gathered from the stream.
#[derive(Default)]
struct Output {
    content: String,
    reasoning: String,
    usage_completion_tokens: Option<usize>,
    usage_prompt_tokens: Option<usize>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn shorten(s: &str) -> String {
    const MAX: usize = 300;
    let s = s.trim();
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn fail(rec: &mut RequestRecord, kind: ErrorKind, message: impl AsRef<str>) {
    rec.error = Some(kind);
    rec.error_message = Some(shorten(message.as_ref()));
}

/// Sends and reads the whole response into `rec` / `out`. Cancel-safe in the sense the timeout
/// needs: everything measured so far is already in `rec` when the future is dropped.
async fn stream(
    req: reqwest::RequestBuilder,
    sent: Instant,
    rec: &mut RequestRecord,
    out: &mut Output,
) {
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let kind = if e.is_connect() {
                ErrorKind::Connect
            } else {
                ErrorKind::Request
            };
            return fail(rec, kind, format!("{e:#}"));
        }
    };
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return fail(rec, ErrorKind::Http(status.as_u16()), body);
    }
    let is_json = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        // The server ignored `stream: true`: the whole answer arrives at once.
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return fail(rec, ErrorKind::StreamDropped, format!("{e:#}")),
        };
        let now = ms(sent.elapsed());
        let event = SseEvent {
            event: None,
            data: String::from_utf8_lossy(&body).into_owned(),
        };
        handle_event(&event, now, rec, out);
        rec.e2e_ms = Some(now);
        if rec.error.is_none() && rec.finish_reason.is_none() {
            fail(rec, ErrorKind::BadResponse, "a JSON answer without choices");
        }
        return;
    }
    let mut decoder = SseDecoder::new();
    loop {
        match resp.chunk().await {
            Ok(Some(bytes)) => {
                let now = ms(sent.elapsed());
                for event in decoder.push(&bytes) {
                    if handle_event(&event, now, rec, out) == Flow::Stop {
                        rec.e2e_ms = Some(now);
                        return;
                    }
                }
            }
            Ok(None) => {
                let now = ms(sent.elapsed());
                if let Some(event) = decoder.finish() {
                    if handle_event(&event, now, rec, out) == Flow::Stop {
                        rec.e2e_ms = Some(now);
                        return;
                    }
                }
                rec.e2e_ms = Some(now);
                if rec.finish_reason.is_some() {
                    rec.missing_done = true;
                } else {
                    fail(
                        rec,
                        ErrorKind::StreamDropped,
                        "the stream ended before `data: [DONE]` and before any finish_reason",
                    );
                }
                return;
            }
            Err(e) => {
                rec.e2e_ms = Some(ms(sent.elapsed()));
                return fail(rec, ErrorKind::StreamDropped, format!("{e:#}"));
            }
        }
    }
}

#[derive(PartialEq)]
enum Flow {
    Continue,
    Stop,
}

/// Applies one SSE event that arrived at `now` (ms since sent).
fn handle_event(event: &SseEvent, now: f64, rec: &mut RequestRecord, out: &mut Output) -> Flow {
    if event.event.as_deref() == Some("error") {
        fail(rec, ErrorKind::ServerError, &event.data);
        return Flow::Stop;
    }
    let data = event.data.trim();
    if data == "[DONE]" {
        return Flow::Stop;
    }
    if data.is_empty() {
        return Flow::Continue;
    }
    let value: Value = match serde_json::from_str(data) {
        Ok(v) => v,
        Err(e) => {
            fail(rec, ErrorKind::BadResponse, format!("{e}: {data}"));
            return Flow::Stop;
        }
    };
    if let Some(err) = value.get("error").filter(|e| !e.is_null()) {
        fail(rec, ErrorKind::ServerError, err.to_string());
        return Flow::Stop;
    }
    if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
        let field = |k: &str| usage.get(k).and_then(Value::as_u64).map(|n| n as usize);
        out.usage_completion_tokens = field("completion_tokens").or(out.usage_completion_tokens);
        out.usage_prompt_tokens = field("prompt_tokens").or(out.usage_prompt_tokens);
    }
    let Some(choices) = value.get("choices").and_then(Value::as_array) else {
        return Flow::Continue;
    };
    for choice in choices {
        // Streamed chat chunks carry `delta`, completions `text`, whole answers `message`.
        let delta = choice.get("delta").or_else(|| choice.get("message"));
        let str_of = |v: Option<&Value>, k: &str| {
            v.and_then(|d| d.get(k))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let content = str_of(delta, "content").or_else(|| str_of(Some(choice), "text"));
        // `reasoning_content` (DeepSeek, llama.cpp, SGLang) or `reasoning` (vLLM ≥ 0.16,
        // Ollama); a server sending both sends the same text twice: take one.
        let reasoning = str_of(delta, "reasoning_content").or_else(|| str_of(delta, "reasoning"));
        if content.is_some() || reasoning.is_some() {
            rec.ttft_ms.get_or_insert(now);
            rec.chunk_ms.push(now);
        }
        if let Some(r) = reasoning {
            rec.first_reasoning_ms.get_or_insert(now);
            out.reasoning.push_str(&r);
        }
        if let Some(c) = content {
            if c.chars().any(|ch| !ch.is_whitespace()) {
                rec.first_visible_ms.get_or_insert(now);
            }
            out.content.push_str(&c);
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            rec.finish_reason = Some(reason.to_string());
        }
    }
    Flow::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(endpoint: Endpoint) -> Target {
        Target {
            base_url: "http://h:1/v1/".into(),
            model: "m".into(),
            endpoint,
            api_key: None,
            ignore_eos: true,
            extra_body: serde_json::from_str(
                r#"{"chat_template_kwargs":{"enable_thinking":false},"max_tokens":5}"#,
            )
            .unwrap(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn urls_and_bodies() {
        assert_eq!(
            target(Endpoint::Chat).url(),
            "http://h:1/v1/chat/completions"
        );
        let mut t = target(Endpoint::Completions);
        t.base_url = "http://h:1".into();
        assert_eq!(t.url(), "http://h:1/v1/completions");

        let body = target(Endpoint::Chat)
            .body(&Prompt::text("hi", Some(9)))
            .unwrap();
        assert_eq!(body["messages"][0]["content"], "hi");
        assert_eq!(body["ignore_eos"], true);
        assert_eq!(body["stream"], true);
        // extra-body wins
        assert_eq!(body["max_tokens"], 5);
        assert_eq!(body["chat_template_kwargs"]["enable_thinking"], false);

        let msgs = Prompt {
            body: crate::dataset::PromptBody::Messages(vec![
                serde_json::json!({"role":"user","content":"x"}),
            ]),
            max_tokens: None,
            class: None,
        };
        assert!(target(Endpoint::Completions).body(&msgs).is_err());
    }

    fn feed(lines: &[&str]) -> (RequestRecord, Output) {
        let mut rec = RequestRecord::default();
        let mut out = Output::default();
        for (i, l) in lines.iter().enumerate() {
            let ev = SseEvent {
                event: None,
                data: l.to_string(),
            };
            if handle_event(&ev, i as f64, &mut rec, &mut out) == Flow::Stop {
                break;
            }
        }
        (rec, out)
    }

    #[test]
    fn reasoning_fields_whitespace_and_usage() {
        let (rec, out) = feed(&[
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":"hm","reasoning":"hm"}}],"extra":{"x":1}}"#,
            r#"{"choices":[{"delta":{"reasoning":" ok"}}]}"#,
            r#"{"choices":[{"delta":{"content":"\n\n"}}]}"#,
            r#"{"choices":[{"delta":{"content":"Paris"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":4}}"#,
            "[DONE]",
            r#"{"choices":[{"delta":{"content":"after done"}}]}"#,
        ]);
        assert_eq!(rec.ttft_ms, Some(1.0));
        assert_eq!(rec.first_reasoning_ms, Some(1.0));
        assert_eq!(rec.first_visible_ms, Some(4.0));
        assert_eq!(rec.chunk_ms, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(out.reasoning, "hm ok");
        assert_eq!(out.content, "\n\nParis");
        assert_eq!(out.usage_completion_tokens, Some(4));
        assert_eq!(out.usage_prompt_tokens, Some(7));
        assert_eq!(rec.finish_reason.as_deref(), Some("stop"));
        assert!(rec.error.is_none());
    }

    #[test]
    fn completions_text_and_errors() {
        let (rec, out) = feed(&[r#"{"choices":[{"text":" a","index":0}]}"#]);
        assert_eq!((rec.ttft_ms, out.content.as_str()), (Some(0.0), " a"));
        let (rec, _) = feed(&[r#"{"error":{"message":"boom"}}"#]);
        assert_eq!(rec.error, Some(ErrorKind::ServerError));
        let (rec, _) = feed(&["not json"]);
        assert_eq!(rec.error, Some(ErrorKind::BadResponse));
    }
}
