//! API keys (`--api-key`, repeatable): every protected route needs `Authorization: Bearer <key>`
//! with one of them (`GET /api/generate`, for `EventSource`, also takes `?api_key=<key>`). Keys are compared through their SHA-256 digests in constant time and every
//! configured key is checked, so the answer's timing says nothing about how much of a guess
//! was right.
//!
//! With `--prefix-cache-salt-by-api-key`, the matched key becomes the request's prefix-cache
//! [`Tenant`]: the engine's cache salt folds it in, so callers with different keys never share
//! KV blocks (and cannot learn from timing what another caller's prompts were), as vLLM's
//! `cache_salt` isolates tenants.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// The caller's API key as a prefix-cache tenant: the key's SHA-256, in hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant(String);

impl Tenant {
    fn of(key_digest: &[u8; 32]) -> Self {
        Tenant(hex(key_digest))
    }
}

/// Which configured key the caller used (its SHA-256, in hex), on every authenticated request:
/// the response cache keeps each key's answers apart whatever the prefix-cache setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyIdentity(String);

impl ApiKeyIdentity {
    pub fn hex(&self) -> &str {
        &self.0
    }
}

fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache salt the engine gets: the request's `cache_salt`, with the tenant folded in when
/// there is one. Within one server either every request has a tenant or none does, so the two
/// shapes never meet.
pub fn effective_salt(tenant: Option<&Tenant>, cache_salt: Option<&str>) -> Option<String> {
    match (tenant, cache_salt) {
        (None, salt) => salt.map(str::to_string),
        (Some(t), None) => Some(format!("api-key:{}", t.0)),
        (Some(t), Some(salt)) => Some(format!("api-key:{}\0{salt}", t.0)),
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Equality whose time does not depend on where the digests differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The digest of the configured key that `given` matches, checking every key.
fn matching_key(keys: &[String], given: &str) -> Option<[u8; 32]> {
    let given = digest(given);
    let mut found = None;
    for key in keys {
        let d = digest(key);
        if constant_time_eq(&d, &given) {
            found = Some(d);
        }
    }
    found
}

/// The routes a browser's `EventSource` calls: it cannot send headers, so the key may come as
/// the query's `api_key` (the access log records paths only, never the query).
const QUERY_KEY_PATHS: [&str; 1] = ["/api/generate"];

/// `api_key` from the query of a [`QUERY_KEY_PATHS`] request.
fn query_key(uri: &axum::http::Uri) -> Option<String> {
    if !QUERY_KEY_PATHS.contains(&uri.path()) {
        return None;
    }
    let Query(mut query) = Query::<HashMap<String, String>>::try_from_uri(uri).ok()?;
    query.remove("api_key").map(|k| k.trim().to_string())
}

/// Middleware of the protected routes: 401 without a valid key; the caller's
/// [`ApiKeyIdentity`] and, with `cache_salt_by_api_key`, its [`Tenant`] go into the request's
/// extensions.
pub async fn require_api_key(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let config = &state.config;
    if !config.api_keys.is_empty() {
        let header_key = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|v| v.trim().to_string());
        let given = header_key.or_else(|| query_key(request.uri()));
        let Some(key) = given.and_then(|g| matching_key(&config.api_keys, &g)) else {
            return ApiError::Unauthorized.into_response();
        };
        request.extensions_mut().insert(ApiKeyIdentity(hex(&key)));
        if config.cache_salt_by_api_key {
            request.extensions_mut().insert(Tenant::of(&key));
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly() {
        let keys = vec!["alpha".to_string(), "beta".to_string()];
        assert_eq!(matching_key(&keys, "beta"), Some(digest("beta")));
        assert_eq!(matching_key(&keys, "alpha"), Some(digest("alpha")));
        assert_eq!(matching_key(&keys, "alph"), None);
        assert_eq!(matching_key(&keys, "alphaa"), None);
        assert_eq!(matching_key(&keys, ""), None);
    }

    #[test]
    fn the_query_key_counts_only_where_eventsource_calls() {
        let uri: axum::http::Uri = "/api/generate?message=hi&api_key=k%201".parse().unwrap();
        assert_eq!(query_key(&uri).as_deref(), Some("k 1"));
        let uri: axum::http::Uri = "/v1/models?api_key=k".parse().unwrap();
        assert_eq!(query_key(&uri), None);
        let uri: axum::http::Uri = "/api/generate?message=hi".parse().unwrap();
        assert_eq!(query_key(&uri), None);
    }

    #[test]
    fn salts_keep_tenants_and_request_salts_apart() {
        let a = Tenant::of(&digest("alpha"));
        let b = Tenant::of(&digest("beta"));
        assert_eq!(effective_salt(None, None), None);
        assert_eq!(effective_salt(None, Some("s")), Some("s".into()));
        assert_ne!(
            effective_salt(Some(&a), None),
            effective_salt(Some(&b), None)
        );
        assert_ne!(
            effective_salt(Some(&a), Some("s")),
            effective_salt(Some(&b), Some("s"))
        );
        assert_ne!(
            effective_salt(Some(&a), Some("s")),
            effective_salt(Some(&a), None)
        );
        // The tenant is a digest: the key itself never reaches the engine.
        assert!(!effective_salt(Some(&a), None).unwrap().contains("alpha"));
    }
}
