//! What one request measured: its timings, its output size and, when it failed, how.
//!
//! All times are milliseconds. `scheduled_ms` and `sent_ms` are offsets from the start of the
//! run; every other time is an offset from `sent_ms`, the moment the HTTP request left the client,
//! so client-side queueing (`sent_ms - scheduled_ms`) never leaks into time to first token.
//! A failed request keeps whatever it measured before failing: the report shows both.

use serde::{Deserialize, Serialize};

/// How a request failed. Every failure is counted under exactly one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The server answered with a non-2xx status.
    Http(u16),
    /// No connection could be made.
    Connect,
    /// The request did not finish within `--timeout-s`.
    Timeout,
    /// The response body ended (or broke) before `data: [DONE]` and before any `finish_reason`.
    StreamDropped,
    /// An `event: error` or a `{"error": ...}` payload in the stream.
    ServerError,
    /// The stream finished cleanly but carried no generated text at all.
    EmptyOutput,
    /// A `data:` payload that is not JSON, or JSON of an unexpected shape.
    BadResponse,
    /// Any other client-side failure while sending.
    Request,
}

impl ErrorKind {
    /// A stable name for tables and JSON keys: `http_500`, `timeout`, ...
    pub fn name(&self) -> String {
        match self {
            ErrorKind::Http(status) => format!("http_{status}"),
            ErrorKind::Connect => "connect".into(),
            ErrorKind::Timeout => "timeout".into(),
            ErrorKind::StreamDropped => "stream_dropped".into(),
            ErrorKind::ServerError => "server_error".into(),
            ErrorKind::EmptyOutput => "empty_output".into(),
            ErrorKind::BadResponse => "bad_response".into(),
            ErrorKind::Request => "request".into(),
        }
    }
}

/// Where a request's output token count came from, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// `usage.completion_tokens` reported by the server.
    Usage,
    /// No `usage`, but `finish_reason: "length"` under a `max_tokens` cap: the server generated
    /// exactly the cap (exact unless the context filled up first, which also reports `length`).
    MaxTokens,
    /// The generated text re-tokenized with `--tokenizer`.
    Tokenizer,
    /// Neither: one token per content-bearing chunk (an estimate).
    Chunks,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Index of the prompt in the run.
    pub index: usize,
    /// Dataset class of the prompt (`short`, `medium`, `long`), when it has one.
    pub class: Option<String>,
    /// Arrival time chosen by the request-rate process (from run start).
    pub scheduled_ms: f64,
    /// When the request was actually sent (from run start); later than `scheduled_ms` when the
    /// concurrency limit made it wait.
    pub sent_ms: f64,
    /// First chunk carrying any generated text: reasoning or answer, whitespace included.
    pub ttft_ms: Option<f64>,
    /// First non-empty reasoning delta (`reasoning_content` or `reasoning`).
    pub first_reasoning_ms: Option<f64>,
    /// First answer delta that contains a non-whitespace character.
    pub first_visible_ms: Option<f64>,
    /// Arrival time of every content-bearing chunk (reasoning or answer).
    pub chunk_ms: Vec<f64>,
    /// Request sent → stream finished (or failed).
    pub e2e_ms: Option<f64>,
    pub output_tokens: Option<usize>,
    pub token_source: Option<TokenSource>,
    pub prompt_tokens: Option<usize>,
    pub output_chars: usize,
    pub reasoning_chars: usize,
    pub finish_reason: Option<String>,
    /// The stream ended after a `finish_reason` but without `data: [DONE]` (counted, not failed).
    pub missing_done: bool,
    pub error: Option<ErrorKind>,
    /// Server or transport message for a failure, shortened.
    pub error_message: Option<String>,
}

impl RequestRecord {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    pub fn queue_ms(&self) -> f64 {
        self.sent_ms - self.scheduled_ms
    }

    /// Time per output token after the first: `(e2e - ttft) / (tokens - 1)`, as vLLM defines it.
    pub fn tpot_ms(&self) -> Option<f64> {
        let (e2e, ttft, n) = (self.e2e_ms?, self.ttft_ms?, self.output_tokens?);
        (n > 1).then(|| (e2e - ttft) / (n - 1) as f64)
    }

    /// Gaps between consecutive content-bearing chunks.
    pub fn itl_ms(&self) -> impl Iterator<Item = f64> + '_ {
        self.chunk_ms.windows(2).map(|w| w[1] - w[0])
    }

    /// This request's output tokens per second over its whole latency.
    pub fn output_tok_per_s(&self) -> Option<f64> {
        let (e2e, n) = (self.e2e_ms?, self.output_tokens?);
        (e2e > 0.0).then(|| n as f64 / (e2e / 1000.0))
    }

    /// Run-relative time the request finished.
    pub fn end_ms(&self) -> f64 {
        self.sent_ms + self.e2e_ms.unwrap_or(0.0)
    }
}
