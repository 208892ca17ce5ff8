//! Kestrel's OpenAI-compatible HTTP server (axum). Handlers parse and validate, tokenize on
//! blocking workers, and talk to the engine only through its async handle: submit, a stream
//! of events per sequence, abort (by dropping the stream). No tensors here.
//!
//! Routes: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`,
//! `POST /tokenize`, `POST /detokenize` (vLLM shapes), `GET /health`, `GET /ready`,
//! `GET /metrics`, `GET /version`, TGI's `POST /generate`, `POST /generate_stream` and `POST /`
//! ([`tgi`], answering errors in TGI's shape), `GET /api/generate` for the browser's
//! `EventSource` ([`eventsource`]), and the built-in chat page at `/` ([`webui`]). Every other
//! error is OpenAI's JSON body via [`ApiError`]. [`serve`] drains on SIGTERM ([`lifecycle`]).

pub mod access_log;
pub mod auth;
pub mod chat;
pub mod completions;
pub mod error;
pub mod eventsource;
pub mod generation;
mod guarded_body;
pub mod lifecycle;
pub mod metrics;
pub mod output;
pub mod response_cache;
pub mod routes;
pub mod state;
pub mod stream;
pub mod structured;
pub mod submit;
pub mod tgi;
pub mod validate;
pub mod webui;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;

pub use error::ApiError;
pub use routes::router;
pub use state::{AppState, Model, ReasoningField, ServerConfig};

/// A request body, or the 413/400 that reading it produced.
pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("the request body is too large".into())
        } else {
            ApiError::bad_request(
                None,
                format!("could not read the request body: {rejection}"),
            )
        }
    })
}

/// Fresh randomness without a dependency: std's per-instance SipHash keys are random.
pub(crate) fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

/// 32 hex digits, for response ids.
pub(crate) fn random_id() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

/// How long connections still open after the drain get before the server stops anyway (a
/// response that outlived `--shutdown-timeout`, or a client that never closes).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves `state`'s router on `listener` until SIGTERM or ctrl-c, then drains: generation
/// requests are refused with 503, those in flight get up to `shutdown_timeout` to finish, and
/// the listener closes. Returns `Ok` after a drain, so the process exits 0.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown_timeout: Duration,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Every SSE event is one small write; without TCP_NODELAY a token can wait ~40 ms behind
    // the client's delayed ACK (Nagle).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let lifecycle = state.lifecycle.clone();
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel();
    let drain = async move {
        lifecycle::shutdown_signal().await;
        tracing::info!(
            in_flight = lifecycle.in_flight(),
            timeout_s = shutdown_timeout.as_secs_f64(),
            "shutdown signal: draining (new requests get 503, running ones finish)"
        );
        match lifecycle.drain(shutdown_timeout).await {
            0 => tracing::info!("drained: every request finished"),
            n => tracing::warn!(
                in_flight = n,
                "shutdown timeout reached; closing with requests still running"
            ),
        }
        let _ = drained_tx.send(());
    };
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(drain);
    tokio::select! {
        result = server => result,
        // Graceful shutdown waits for every connection; after the drain, wait only briefly.
        _ = async {
            if drained_rx.await.is_ok() {
                tokio::time::sleep(CLOSE_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => Ok(()),
    }
}
