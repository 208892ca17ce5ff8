//! The server's life as an orchestrator sees it: loading → ready → draining → gone.
//!
//! - `/health` is liveness: 200 while the engine loop is alive (503 while loading, so a
//!   Kubernetes startup probe covers the load, and after the engine died).
//! - `/ready` is readiness: 200 only when the model is loaded, the engine alive and the server
//!   not draining, so a load balancer stops sending new requests before the process goes away.
//! - On SIGTERM (or ctrl-c) the server drains: new generation requests get 503 with
//!   `Retry-After` (a load balancer retries them on another replica), requests in flight run to
//!   their end, for at most `--shutdown-timeout`; then the listener closes and the process exits 0.
//!   This is the contract Kubernetes gives a pod (SIGTERM, then SIGKILL after
//!   `terminationGracePeriodSeconds`).
//!
//! In-flight requests are counted by a guard that lives as long as the response body, so a
//! streamed response counts until its last event is written (or its client goes away).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

use crate::error::ApiError;
use crate::guarded_body::keep_until_body_ends;
use crate::state::AppState;

/// Seconds a refused client should wait; by then the load balancer has seen `/ready` fail.
const DRAIN_RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

/// One admitted generation request; dropping it ends the request's count.
pub struct InFlight(Arc<Lifecycle>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Lifecycle {
    pub fn is_draining(&self) -> bool {
        self.draining.load(SeqCst)
    }

    /// Generation requests admitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(SeqCst)
    }

    /// Stops admitting generation requests; idempotent.
    pub fn begin_drain(&self) {
        self.draining.store(true, SeqCst);
    }

    /// Counts a request in, or refuses it while draining. Counting before the check means a
    /// drain that starts concurrently either sees this request or this request sees the drain.
    pub fn admit(self: &Arc<Self>) -> Option<InFlight> {
        self.in_flight.fetch_add(1, SeqCst);
        let guard = InFlight(self.clone());
        (!self.is_draining()).then_some(guard)
    }

    /// Returns once no request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a wake-up between the check and the await is kept.
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Drains: stop admitting, then wait for in-flight requests up to `timeout`. Returns how
    /// many were still running when it gave up (0 when all finished).
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.begin_drain();
        let _ = tokio::time::timeout(timeout, self.wait_idle()).await;
        self.in_flight()
    }
}

/// Middleware of the generation routes: 503 + `Retry-After` while draining, otherwise the
/// request counts as in flight until its response body ends.
pub async fn admit(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(guard) = state.lifecycle.admit() else {
        return ApiError::Overloaded {
            message:
                "the server is shutting down; retry the request (another replica will take it)"
                    .into(),
            retry_after_secs: DRAIN_RETRY_AFTER_SECS,
        }
        .into_response();
    };
    keep_until_body_ends(next.run(request).await, guard)
}

/// Resolves on SIGTERM (what Kubernetes and container runtimes send) or ctrl-c.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}); only ctrl-c shuts down");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_refuses_new_requests_and_waits_for_running_ones() {
        let l = Arc::new(Lifecycle::default());
        let running = l.admit().expect("admitted before the drain");
        assert_eq!(l.in_flight(), 1);
        let drain = {
            let l = l.clone();
            tokio::spawn(async move { l.drain(Duration::from_secs(30)).await })
        };
        // The drain flag is set before the drain waits; poll it instead of sleeping.
        while !l.is_draining() {
            tokio::task::yield_now().await;
        }
        assert!(l.admit().is_none(), "refused while draining");
        assert_eq!(l.in_flight(), 1, "a refused request does not stay counted");
        assert!(!drain.is_finished());
        drop(running);
        assert_eq!(drain.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn drain_gives_up_after_the_timeout() {
        let l = Arc::new(Lifecycle::default());
        let _stuck = l.admit().expect("admitted");
        assert_eq!(l.drain(Duration::from_millis(10)).await, 1);
    }
}
