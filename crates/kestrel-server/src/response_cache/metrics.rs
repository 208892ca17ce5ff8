//! The response cache's Prometheus series (`kestrel_response_cache_*`), exposed on `/metrics`
//! beside the server's own. Hits and misses count lookups that reached the store; bypasses
//! count requests the cache did not look up (sampled, several choices, opted out); errors count
//! lookups and stores that failed, timed out, were refused, or were skipped while the store was
//! backing off, by operation.

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, IntCounter, IntCounterVec, Opts};

pub struct CacheMetrics {
    pub hits: IntCounter,
    pub misses: IntCounter,
    pub bypasses: IntCounter,
    pub stores: IntCounter,
    pub stored_bytes: IntCounter,
    errors: IntCounterVec,
}

/// Which operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    Put,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
        }
    }
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("static metric options are valid")
}

impl Default for CacheMetrics {
    fn default() -> Self {
        let errors = IntCounterVec::new(
            Opts::new(
                "kestrel_response_cache_errors_total",
                "Response-cache lookups (op=get) and stores (op=put) that failed, timed out, were refused or were skipped while the store was unreachable; the request ran on the model.",
            ),
            &["op"],
        )
        .expect("static metric options are valid");
        // Both series exist from the start, so a dashboard's rate() has a zero to start from.
        for op in [Op::Get, Op::Put] {
            errors.with_label_values(&[op.as_str()]);
        }
        Self {
            hits: counter(
                "kestrel_response_cache_hits_total",
                "Requests answered from the response cache.",
            ),
            misses: counter(
                "kestrel_response_cache_misses_total",
                "Response-cache lookups that found nothing; the request ran on the model.",
            ),
            bypasses: counter(
                "kestrel_response_cache_bypasses_total",
                "Requests not looked up: sampled without a seed, several choices, or opted out.",
            ),
            stores: counter(
                "kestrel_response_cache_stores_total",
                "Answers stored in the response cache.",
            ),
            stored_bytes: counter(
                "kestrel_response_cache_stored_bytes_total",
                "Bytes of the answers stored in the response cache.",
            ),
            errors,
        }
    }
}

impl CacheMetrics {
    pub fn error(&self, op: Op) {
        self.errors.with_label_values(&[op.as_str()]).inc();
    }

    pub fn errors(&self, op: Op) -> u64 {
        self.errors.with_label_values(&[op.as_str()]).get()
    }

    /// Every family; `held` is the in-memory cache's `(bytes, entries)`.
    pub fn families(&self, held: Option<(usize, usize)>) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        for c in [
            &self.hits,
            &self.misses,
            &self.bypasses,
            &self.stores,
            &self.stored_bytes,
        ] {
            out.extend(c.collect());
        }
        out.extend(self.errors.collect());
        if let Some((bytes, entries)) = held {
            out.extend(gauge(
                "kestrel_response_cache_bytes",
                "Bytes the in-memory response cache holds, as counted against --response-cache-size.",
                bytes as f64,
            ));
            out.extend(gauge(
                "kestrel_response_cache_entries",
                "Answers the in-memory response cache holds.",
                entries as f64,
            ));
        }
        out
    }
}

fn gauge(name: &str, help: &str, value: f64) -> Vec<MetricFamily> {
    let g = Gauge::new(name, help).expect("static metric options are valid");
    g.set(value);
    g.collect()
}
