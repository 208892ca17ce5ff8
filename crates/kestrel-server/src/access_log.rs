//! Request ids and the access log. Every request runs inside a `request` span carrying its id,
//! so every log line it causes names it: an incoming `X-Request-Id` is kept (the header load
//! balancers and gateways set), otherwise one is made, and the response echoes it. When the
//! response body ends (the last SSE event, or the client going away) one access-log line is
//! written with the status, the tokens, the time to first token and the total time.
//! Probes and scrapes (`/health`, `/ready`, `/metrics`; an endpoint picker scrapes every 50 ms)
//! log at debug level, everything else at info.
//!
//! The generation task of a request is spawned, so it cannot see the handler's task; it takes
//! the request's [`RequestRecord`] and span when it is created ([`current`]), in the handler.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::guarded_body::keep_until_body_ends;
use crate::random_id;
use crate::state::AppState;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming request id kept; longer or non-printable ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// What the generation of one HTTP request reports back for its access-log line.
#[derive(Debug)]
pub struct RequestRecord {
    start: Instant,
    /// Microseconds from the request's start to its first generated token; `u64::MAX`: none yet.
    first_token_us: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
}

impl RequestRecord {
    fn new(start: Instant) -> Self {
        Self {
            start,
            first_token_us: AtomicU64::new(u64::MAX),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
        }
    }

    /// A token of any choice was generated; the first one sets the time to first token.
    pub fn token(&self) {
        let us = self.start.elapsed().as_micros() as u64;
        let _ = self
            .first_token_us
            .compare_exchange(u64::MAX, us, Relaxed, Relaxed);
    }

    /// A choice finished; the prompt counts once for `n` choices, as in `usage`.
    pub fn finished(&self, prompt_tokens: usize, completion_tokens: usize) {
        self.prompt_tokens.fetch_max(prompt_tokens as u64, Relaxed);
        self.completion_tokens
            .fetch_add(completion_tokens as u64, Relaxed);
    }

    fn ttft_ms(&self) -> Option<f64> {
        let us = self.first_token_us.load(Relaxed);
        (us != u64::MAX).then(|| us as f64 / 1e3)
    }
}

tokio::task_local! {
    static RECORD: Arc<RequestRecord>;
}

/// The record of the request whose handler is running, and its span (for a spawned task).
pub fn current() -> (Option<Arc<RequestRecord>>, tracing::Span) {
    (RECORD.try_with(Arc::clone).ok(), tracing::Span::current())
}

fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= MAX_REQUEST_ID_LEN
                && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map_or_else(random_id, str::to_string)
}

/// Written when the response body is dropped.
struct AccessLine {
    span: tracing::Span,
    record: Arc<RequestRecord>,
    method: String,
    path: String,
    status: u16,
    quiet: bool,
}

impl Drop for AccessLine {
    fn drop(&mut self) {
        let r = &self.record;
        let total_ms = r.start.elapsed().as_secs_f64() * 1e3;
        let ttft_ms = r.ttft_ms();
        let (prompt_tokens, completion_tokens) = (
            r.prompt_tokens.load(Relaxed),
            r.completion_tokens.load(Relaxed),
        );
        let _entered = self.span.enter();
        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    target: "kestrel::access",
                    $level,
                    method = %self.method,
                    path = %self.path,
                    status = self.status,
                    prompt_tokens,
                    completion_tokens,
                    ttft_ms,
                    total_ms,
                    "request done"
                )
            };
        }
        if self.quiet {
            line!(tracing::Level::DEBUG);
        } else {
            line!(tracing::Level::INFO);
        }
    }
}

/// The outermost middleware: id, span, HTTP metrics, access line, `X-Request-Id` echo.
pub async fn access(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = request_id(&request);
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let quiet = matches!(path.as_str(), "/health" | "/ready" | "/metrics");
    let span = tracing::info_span!("request", request_id = %id);
    let record = Arc::new(RequestRecord::new(start));
    let mut response = RECORD
        .scope(record.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    let status = response.status().as_u16();
    state.http_metrics.count(&route, status);
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    let line = AccessLine {
        span,
        record,
        method,
        path,
        status,
        quiet,
    };
    keep_until_body_ends(response, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_id(v: &str) -> Request {
        Request::builder()
            .header("x-request-id", v)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[test]
    fn incoming_ids_are_kept_when_printable_and_short() {
        assert_eq!(request_id(&with_id("abc-123")), "abc-123");
        assert_eq!(request_id(&with_id(&"x".repeat(200))).len(), 32);
        assert_ne!(request_id(&with_id("has space")), "has space");
        let none = Request::new(axum::body::Body::empty());
        assert_eq!(request_id(&none).len(), 32);
    }

    #[test]
    fn record_keeps_the_first_token_time_and_sums_choices() {
        let r = RequestRecord::new(Instant::now());
        assert_eq!(r.ttft_ms(), None);
        r.token();
        let first = r.ttft_ms().expect("set");
        r.token();
        assert_eq!(r.ttft_ms(), Some(first));
        r.finished(10, 3);
        r.finished(10, 4);
        assert_eq!(r.prompt_tokens.load(Relaxed), 10);
        assert_eq!(r.completion_tokens.load(Relaxed), 7);
    }
}
