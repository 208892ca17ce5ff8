//! `GET /metrics`: one Prometheus text exposition (format 0.0.4) of the engine's series
//! (vLLM's names; see `kestrel_engine::metrics`) and the server's own `kestrel_*` series:
//! HTTP requests by route and status, requests in flight, readiness, draining and engine
//! health. While the model loads only the server's series are there (and `kestrel_ready` is 0),
//! so a scrape never fails just because the replica is starting.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Gauge, IntCounterVec, Opts, Registry, TextEncoder};

use crate::error::ApiError;
use crate::state::AppState;

/// Counters the request middleware keeps.
pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "kestrel_http_requests_total",
                "HTTP requests answered, by route and status code.",
            ),
            &["route", "code"],
        )
        .expect("static metric options are valid");
        registry
            .register(Box::new(requests.clone()))
            .expect("registered once into a fresh registry");
        Self { registry, requests }
    }
}

impl HttpMetrics {
    /// `route` is the matched route pattern (never the raw path: bounded label values).
    pub fn count(&self, route: &str, code: u16) {
        self.requests
            .with_label_values(&[route, &code.to_string()])
            .inc();
    }
}

fn gauge(name: &str, help: &str, value: f64) -> Vec<MetricFamily> {
    use prometheus::core::Collector;
    let g = Gauge::new(name, help).expect("static metric options are valid");
    g.set(value);
    g.collect()
}

/// Every family of one scrape, engine series first.
pub fn families(state: &AppState) -> Vec<MetricFamily> {
    let model = state.model().ok();
    let mut out = model
        .as_ref()
        .map(|m| m.engine.metrics().families(&state.config.served_model_name))
        .unwrap_or_default();
    let healthy = model.as_ref().is_some_and(|m| m.engine.is_healthy());
    let lifecycle = &state.lifecycle;
    out.extend(gauge(
        "kestrel_ready",
        "1 when the replica takes new requests (model loaded, engine alive, not draining).",
        f64::from(u8::from(state.is_ready())),
    ));
    out.extend(gauge(
        "kestrel_draining",
        "1 after SIGTERM: new generation requests are refused, running ones finish.",
        f64::from(u8::from(lifecycle.is_draining())),
    ));
    out.extend(gauge(
        "kestrel_engine_healthy",
        "1 while the engine loop is alive (0 while loading and after a failure).",
        f64::from(u8::from(healthy)),
    ));
    out.extend(gauge(
        "kestrel_http_requests_in_flight",
        "Generation requests admitted whose responses have not ended.",
        lifecycle.in_flight() as f64,
    ));
    if let Some(cache) = &state.response_cache {
        out.extend(cache.families());
    }
    out.extend(
        state
            .http_metrics
            .registry
            .gather()
            .into_iter()
            .filter(|f| !f.get_metric().is_empty()),
    );
    out
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    if let Err(e) = encoder.encode(&families(&state), &mut body) {
        return ApiError::Internal(format!("encoding metrics: {e}")).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
