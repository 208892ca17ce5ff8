//! The built-in chat page at `/`: one HTML page, one stylesheet and the page's JavaScript modules
//! under `webui/` (`app.js` is the entry module and imports the others), embedded in the binary
//! with `include_str!`, so nothing is fetched at run time (no CDN) and the page always matches the
//! server that serves it; every file is listed once, in `ASSETS`. The page talks only to this
//! server's own API (`GET /v1/models`, `POST /v1/chat/completions` streamed over SSE), which is
//! why these routes are open: loading the page needs no API key, and the page asks for one (kept
//! in the browser's local storage) when an API call answers 401. `--no-webui` leaves the routes
//! out, and `/` is then a 404 like any unknown path.
//!
//! Invariants: every response here carries a strict Content-Security-Policy (scripts and styles
//! only from this origin, no inline script, no `eval`, `connect-src 'self'`, no framing), as a
//! second wall behind the page's own rule that model output is only ever put into the DOM as text
//! (`textContent`, `createElement`), never parsed as HTML. Assets are revalidated on every load
//! (`Cache-Control: no-cache` with a content-hash `ETag`, 304 when it still matches), so a
//! browser never runs a stale script against an upgraded server.

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

/// The page's scripts and stylesheet come only from this origin, it fetches only this origin, and
/// it loads no images but the inline blank favicon (`data:`), which keeps browsers from asking
/// for `/favicon.ico`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

struct Asset {
    body: &'static str,
    content_type: &'static str,
    /// FNV-1a of the body, computed at compile time: the `ETag`.
    hash: u64,
}

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($file:literal, $content_type:expr) => {{
        const BODY: &str = include_str!(concat!("../webui/", $file));
        Asset {
            body: BODY,
            content_type: $content_type,
            hash: fnv1a(BODY.as_bytes()),
        }
    }};
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
/// The MIME type browsers require of a module script (they refuse to run one served otherwise).
const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the page and the path it is served at. The modules are fetched by the `import`s
/// of `app.js` (and `modulepreload` links in the page), relative to `/webui/`.
static ASSETS: [(&str, Asset); 9] = [
    ("/", asset!("index.html", HTML)),
    ("/webui/style.css", asset!("style.css", CSS)),
    ("/webui/app.js", asset!("app.js", JS)),
    ("/webui/markdown.js", asset!("markdown.js", JS)),
    ("/webui/highlight.js", asset!("highlight.js", JS)),
    ("/webui/sse.js", asset!("sse.js", JS)),
    ("/webui/apikey.js", asset!("apikey.js", JS)),
    ("/webui/store.js", asset!("store.js", JS)),
    ("/webui/dom.js", asset!("dom.js", JS)),
];

/// The page and its assets; merged into the open (no API key) routes when `webui` is on.
pub fn routes() -> Router<Arc<AppState>> {
    ASSETS.iter().fold(Router::new(), |router, (path, asset)| {
        router.route(
            path,
            get(move |h: HeaderMap| async move { serve(asset, &h) }),
        )
    })
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.hash);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::ETAG,
            HeaderValue::from_str(&etag).expect("hex digits in quotes are a valid header value"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    if fresh {
        (StatusCode::NOT_MODIFIED, headers).into_response()
    } else {
        (headers, asset.body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(path: &str) -> &'static Asset {
        &ASSETS
            .iter()
            .find(|(p, _)| *p == path)
            .unwrap_or_else(|| panic!("{path} is not an asset"))
            .1
    }

    #[test]
    fn etag_follows_content() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        for (path, asset) in &ASSETS {
            assert_eq!(asset.hash, fnv1a(asset.body.as_bytes()), "{path}");
        }
    }

    #[test]
    fn page_loads_only_its_own_assets() {
        // The CSP forbids inline script and style: the page must not contain any.
        let html = asset("/").body;
        assert!(
            html.contains("<script type=\"module\" src=\"webui/app.js\"></script>"),
            "{html}"
        );
        assert!(html.contains("href=\"webui/style.css\""), "{html}");
        for inline in ["<script>", "<style", " style=", " onclick=", " onload="] {
            assert!(!html.contains(inline), "inline {inline:?} in index.html");
        }
        for (path, asset) in &ASSETS[1..] {
            assert!(
                !asset.body.contains("http://") && !asset.body.contains("https://"),
                "an external URL in {path}"
            );
        }
        for (path, asset) in ASSETS.iter().filter(|(_, a)| a.content_type == JS) {
            assert!(
                !asset.body.contains("innerHTML"),
                "{path} must build DOM nodes, not HTML strings"
            );
            assert!(!asset.body.contains("eval("), "{path}");
        }
    }
}
