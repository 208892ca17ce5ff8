//! Kestrel's OpenAI-compatible HTTP server (axum). Handlers parse and validate, tokenize on
//! blocking workers, and talk to the engine only through its async handle: submit, a stream
//! of events per sequence, abort (by dropping the stream). No tensors here.
//!
//! Routes: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`,
//! `POST /tokenize`, `POST /detokenize` (vLLM shapes), `GET /health`, `GET /metrics`,
//! `GET /version`, and the built-in chat page at `/` ([`webui`]). Every error is OpenAI's JSON
//! body via [`ApiError`].

pub mod auth;
pub mod chat;
pub mod completions;
pub mod error;
pub mod generation;
pub mod output;
pub mod routes;
pub mod state;
pub mod stream;
pub mod submit;
pub mod validate;
pub mod webui;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

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

/// Serves `router` on `listener` until ctrl-c.
pub async fn serve(listener: tokio::net::TcpListener, app: axum::Router) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Every SSE event is one small write; without TCP_NODELAY a token can wait ~40 ms behind
    // the client's delayed ACK (Nagle).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
