//! The response cache: a repeated question whose answer is a function of the request (greedy, or
//! a fixed `seed`; one choice) is answered from an earlier answer instead of the model. Opt-in
//! with `--response-cache memory` (an LRU in this process, bounded in bytes) or
//! `--response-cache redis://host:port/db` (shared by replicas), entries living for
//! `--response-cache-ttl`.
//!
//! On the request path ([`lookup`]): after the prompt is rendered (the key needs its token ids)
//! and before anything is submitted, the handler looks the request up. A hit is replayed through
//! the same driver and framing as a live answer ([`replay`]), never reaching the engine; a miss
//! runs on the engine with a [`Recorder`] that stores the answer when every choice finished
//! normally and the client is still there. The response says which in `X-Kestrel-Cache: hit`,
//! `miss` or `bypass` (not looked up: sampled, several choices, or opted out with
//! `"cache": false` or `Cache-Control: no-cache` / `no-store`).
//!
//! The cache never fails a request: a store that errs, times out (`--response-cache-timeout`) or
//! refuses is counted in `kestrel_response_cache_errors_total`, logged at most once per
//! interval, and the request runs on the model ([`failure`]).

pub mod config;
pub mod directives;
pub mod entry;
pub mod failure;
pub mod key;
pub mod lookup;
pub mod memory;
pub mod metrics;
pub mod recorder;
pub mod redis;
pub mod replay;

use std::time::{Duration, Instant};

use prometheus::proto::MetricFamily;

pub use config::{parse_duration, CacheBackend, ResponseCacheConfig};
pub use directives::CacheDirectives;
pub use entry::CachedResponse;
pub use key::CacheKey;
pub use lookup::{look_up, CacheStatus, Lookup, LookupRequest, X_KESTREL_CACHE};
pub use recorder::Recorder;
pub use replay::replay;

use self::redis::RedisStore;
use failure::FailureGuard;
use memory::MemoryStore;
use metrics::{CacheMetrics, Op};

/// Why a store operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached (connection refused or lost, no answer in time): back off.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The store answered and refused this operation (full, entry too large).
    #[error("refused: {0}")]
    Refused(String),
}

/// Why the cache could not be set up (start-up fails with it).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("--response-cache-size bounds the in-memory cache; bound a Redis server with its own maxmemory")]
    SizeWithRedis,
    #[error("--response-cache-size must be positive")]
    ZeroSize,
    #[error("--response-cache {url}: {message}")]
    Redis { url: String, message: String },
}

enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

pub struct ResponseCache {
    store: Store,
    ttl: Duration,
    timeout: Duration,
    pub metrics: CacheMetrics,
    failures: FailureGuard,
}

impl ResponseCache {
    /// The cache `config` describes. A Redis store connects on first use (a server starts while
    /// Redis is down); this needs a Tokio runtime.
    pub fn open(config: &ResponseCacheConfig) -> Result<Self, CacheError> {
        let store = match &config.backend {
            CacheBackend::Memory => {
                let max_bytes = config.max_bytes.unwrap_or(config::DEFAULT_MAX_BYTES);
                if max_bytes == 0 {
                    return Err(CacheError::ZeroSize);
                }
                Store::Memory(MemoryStore::new(max_bytes))
            }
            CacheBackend::Redis(url) => {
                if config.max_bytes.is_some() {
                    return Err(CacheError::SizeWithRedis);
                }
                Store::Redis(RedisStore::open(url).map_err(|e| CacheError::Redis {
                    url: config::redact(url),
                    message: e.to_string(),
                })?)
            }
        };
        Ok(Self {
            store,
            ttl: config.ttl,
            timeout: config.timeout,
            metrics: CacheMetrics::default(),
            failures: FailureGuard::default(),
        })
    }

    /// For the start-up log line (no password).
    pub fn describe(&self) -> String {
        let ttl = self.ttl.as_secs_f64();
        match &self.store {
            Store::Memory(m) => format!("in memory, at most {} bytes, ttl {ttl} s", m.max_bytes()),
            Store::Redis(r) => format!("redis at {}, ttl {ttl} s", r.address()),
        }
    }

    /// The entry under `key`, checked against the request (`num_choices`, `vocab_size`). Any
    /// failure is a `None`: the request runs on the model.
    pub async fn get(
        &self,
        key: &CacheKey,
        num_choices: usize,
        vocab_size: usize,
    ) -> Option<CachedResponse> {
        let bytes = match &self.store {
            Store::Memory(m) => m.get(key, Instant::now()).map(|v| v.to_vec()),
            Store::Redis(r) => {
                if !self.failures.available(Instant::now()) {
                    self.metrics.error(Op::Get);
                    return None;
                }
                match tokio::time::timeout(self.timeout, r.get(key)).await {
                    Ok(Ok(bytes)) => {
                        self.failures.succeeded();
                        bytes
                    }
                    Ok(Err(e)) => return self.failed(Op::Get, e),
                    Err(_) => return self.failed(Op::Get, self.timed_out()),
                }
            }
        };
        let Some(bytes) = bytes else {
            self.metrics.misses.inc();
            return None;
        };
        match CachedResponse::decode(&bytes, num_choices, vocab_size) {
            Ok(entry) => {
                self.metrics.hits.inc();
                Some(entry)
            }
            Err(e) => {
                // Written by another version, or damaged: recomputed and overwritten.
                self.metrics.misses.inc();
                self.failed(Op::Get, StoreError::Refused(format!("entry {key}: {e}")))
            }
        }
    }

    /// Stores `entry` under `key` for the TTL. Failures are counted and logged, never returned.
    pub async fn put(&self, key: &CacheKey, entry: &CachedResponse) {
        let bytes = entry.encode();
        let result = match &self.store {
            Store::Memory(m) => m.put(*key, &bytes, self.ttl, Instant::now()).map_err(|e| {
                StoreError::Refused(format!(
                    "an answer of {} bytes does not fit in --response-cache-size ({} bytes)",
                    e.entry_bytes, e.max_bytes
                ))
            }),
            Store::Redis(r) => {
                if !self.failures.available(Instant::now()) {
                    self.metrics.error(Op::Put);
                    return;
                }
                match tokio::time::timeout(self.timeout, r.put(key, &bytes, self.ttl)).await {
                    Ok(result) => result,
                    Err(_) => Err(self.timed_out()),
                }
            }
        };
        match result {
            Ok(()) => {
                self.failures.succeeded();
                self.metrics.stores.inc();
                self.metrics.stored_bytes.inc_by(bytes.len() as u64);
            }
            Err(e) => {
                self.failed::<()>(Op::Put, e);
            }
        }
    }

    fn timed_out(&self) -> StoreError {
        StoreError::Unreachable(format!("no answer within {} ms", self.timeout.as_millis()))
    }

    /// Counts and (rate-limited) logs a failure; backs off when the store is unreachable.
    fn failed<T>(&self, op: Op, error: StoreError) -> Option<T> {
        let now = Instant::now();
        self.metrics.error(op);
        if matches!(error, StoreError::Unreachable(_)) {
            self.failures.unreachable(now);
        }
        if let Some(suppressed) = self.failures.warning(now) {
            tracing::warn!(
                op = op.as_str(),
                %error,
                suppressed,
                "response cache unavailable; requests run on the model"
            );
        }
        None
    }

    /// The in-memory store's `(bytes, entries)`; `None` for Redis.
    pub fn held(&self) -> Option<(usize, usize)> {
        match &self.store {
            Store::Memory(m) => Some((m.bytes(), m.len())),
            Store::Redis(_) => None,
        }
    }

    pub fn families(&self) -> Vec<MetricFamily> {
        self.metrics.families(self.held())
    }
}
