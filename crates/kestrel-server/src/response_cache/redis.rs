//! The shared store (`--response-cache redis://host:port/db`): any Redis-protocol server (Redis,
//! Valkey), so replicas behind one load balancer share their answers. Entries are plain strings
//! under `kestrel:response:v1:<key>` written with `SET … PX ttl`, so Redis expires them itself
//! and its own `maxmemory` policy bounds them.
//!
//! The connection is the `redis` crate's connection manager: one multiplexed connection shared
//! by every request, re-established in the background after Redis goes away. It is created
//! lazily, so a server starts (and `/health` is green) while Redis is down; operations then
//! fail fast and the caller backs off ([`super::failure`]).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::config::redact;
use super::key::CacheKey;
use super::StoreError;

/// Prefix of every key Kestrel writes (the version follows the key's own version).
pub const KEY_PREFIX: &str = "kestrel:response:v1:";

pub struct RedisStore {
    connection: ConnectionManager,
    address: String,
}

impl RedisStore {
    /// Parses `url` and prepares the connection; connects on first use. Needs a Tokio runtime.
    pub fn open(url: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        // One quick retry per reconnect: the caller's back-off paces further attempts, and a
        // request never waits on a reconnect longer than the caller's timeout anyway.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(Duration::from_secs(2)));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            connection,
            address: redact(url),
        })
    }

    /// The URL without its password, for logs.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn redis_key(key: &CacheKey) -> String {
        format!("{KEY_PREFIX}{key}")
    }

    pub async fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, StoreError> {
        let mut c = self.connection.clone();
        redis::cmd("GET")
            .arg(Self::redis_key(key))
            .query_async::<Option<Vec<u8>>>(&mut c)
            .await
            .map_err(classify)
    }

    pub async fn put(&self, key: &CacheKey, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let mut c = self.connection.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        redis::cmd("SET")
            .arg(Self::redis_key(key))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms)
            .query_async::<()>(&mut c)
            .await
            .map_err(classify)
    }
}

/// A reply from the server (out of memory under `maxmemory`, a read-only replica) says Redis is
/// there and refused this one operation; anything else (refused connection, reset, timeout,
/// garbled reply) says it cannot be reached.
fn classify(e: redis::RedisError) -> StoreError {
    if e.code().is_some() {
        StoreError::Refused(e.to_string())
    } else {
        StoreError::Unreachable(e.to_string())
    }
}
