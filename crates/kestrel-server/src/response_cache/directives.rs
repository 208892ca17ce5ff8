//! What a request's headers and caller say to the response cache: `Cache-Control: no-cache`
//! (HTTP's "revalidate": run on the model, and store the fresh answer), `Cache-Control: no-store`
//! (neither read nor write), and the caller's API key identity, which keeps tenants' entries
//! apart whether or not the prefix cache is salted by key. The body's `"cache": false` is the
//! same as `no-store`, read from the checked request.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::header::CACHE_CONTROL;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use crate::auth::ApiKeyIdentity;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheDirectives {
    /// Look the request up (false with `no-cache` or `no-store`).
    pub read: bool,
    /// Store the answer (false with `no-store`).
    pub write: bool,
    /// The SHA-256 (hex) of the caller's API key; `None` on a server without keys.
    pub api_key: Option<String>,
}

impl Default for CacheDirectives {
    fn default() -> Self {
        Self {
            read: true,
            write: true,
            api_key: None,
        }
    }
}

impl CacheDirectives {
    pub fn from_headers(headers: &HeaderMap, api_key: Option<String>) -> Self {
        let mut d = Self {
            api_key,
            ..Self::default()
        };
        let directives = headers
            .get_all(CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            // `no-cache="Set-Cookie"` names response headers; any form of it counts here.
            .map(|t| {
                t.split('=')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        for directive in directives {
            match directive.as_str() {
                "no-cache" => d.read = false,
                "no-store" => {
                    d.read = false;
                    d.write = false;
                }
                _ => {}
            }
        }
        d
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CacheDirectives {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let api_key = parts
            .extensions
            .get::<ApiKeyIdentity>()
            .map(|k| k.hex().to_string());
        Ok(Self::from_headers(&parts.headers, api_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn directives(values: &[&str]) -> CacheDirectives {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
        }
        CacheDirectives::from_headers(&h, None)
    }

    #[test]
    fn cache_control() {
        let read = |d: CacheDirectives| (d.read, d.write);
        assert_eq!(read(directives(&[])), (true, true));
        assert_eq!(read(directives(&["max-age=0"])), (true, true));
        assert_eq!(read(directives(&["no-cache"])), (false, true));
        assert_eq!(read(directives(&["No-Cache"])), (false, true));
        assert_eq!(read(directives(&["max-age=5, no-cache"])), (false, true));
        assert_eq!(read(directives(&["no-cache=\"x\""])), (false, true));
        assert_eq!(read(directives(&["no-store"])), (false, false));
        assert_eq!(read(directives(&["private", "no-store"])), (false, false));
        assert_eq!(read(directives(&["no-cachex"])), (true, true));
    }
}
