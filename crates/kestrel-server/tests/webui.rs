//! The built-in chat page's routes, in process (tower `oneshot`): what is served at `/` and at
//! every asset path, with which headers, that the page's module graph is exactly the served
//! modules, and that `webui: false` (`--no-webui`) and `--api-key` do what they say. No model is
//! loaded: the page's routes do not need one. The page's behaviour in a real browser is tested by
//! tests/browser/run.sh.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use kestrel_server::webui::CONTENT_SECURITY_POLICY;
use kestrel_server::{router, AppState, ServerConfig};
use tower::ServiceExt;

async fn get(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        headers,
        String::from_utf8(body.to_vec()).expect("UTF-8"),
    )
}

fn request(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn app(config: ServerConfig) -> Router {
    router(AppState::new(config))
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the page: its path, content type, and a line only that file has.
const ASSETS: [(&str, &str, &str); 9] = [
    ("/", HTML, "<!doctype html>"),
    ("/webui/style.css", CSS, "prefers-color-scheme: dark"),
    ("/webui/app.js", JS, "async function send(text)"),
    ("/webui/markdown.js", JS, "export class MarkdownStream"),
    ("/webui/highlight.js", JS, "export function highlight("),
    ("/webui/sse.js", JS, "export async function* sseBatches("),
    ("/webui/apikey.js", JS, "export function askForKey("),
    ("/webui/store.js", JS, "export const store = {"),
    ("/webui/dom.js", JS, "export function el("),
];

fn js_paths() -> BTreeSet<String> {
    ASSETS
        .iter()
        .filter(|(_, content_type, _)| *content_type == JS)
        .map(|(path, _, _)| path.to_string())
        .collect()
}

/// The values of `attr="..."` in `html` on tags that contain `marker`.
fn attrs<'a>(html: &'a str, marker: &str, attr: &str) -> Vec<&'a str> {
    html.split('<')
        .filter(|tag| tag.contains(marker))
        .filter_map(|tag| {
            let start = tag.find(&format!("{attr}=\""))? + attr.len() + 2;
            Some(&tag[start..start + tag[start..].find('"')?])
        })
        .collect()
}

/// The `/webui/...` paths a module imports (`import ... from "./x.js";`).
fn imports(module: &str) -> Vec<String> {
    module
        .lines()
        .filter(|line| line.starts_with("import ") || line.starts_with("export "))
        .filter_map(|line| line.split(" from \"./").nth(1))
        .map(|rest| format!("/webui/{}", &rest[..rest.find('"').expect("closing quote")]))
        .collect()
}

#[tokio::test]
async fn index_is_html_under_a_strict_csp() {
    let app = app(ServerConfig::default());
    let (status, headers, body) = get(&app, request("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert_eq!(csp, CONTENT_SECURITY_POLICY);
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    assert!(body.starts_with("<!doctype html>"), "{body}");
    assert!(body.contains("<script type=\"module\" src=\"webui/app.js\"></script>"));
    assert_eq!(
        body.matches("<script").count(),
        1,
        "app.js is the only script"
    );
    assert!(body.contains("<link rel=\"stylesheet\" href=\"webui/style.css\">"));
}

#[tokio::test]
async fn every_asset_has_its_content_type_and_the_page_headers() {
    let app = app(ServerConfig::default());
    let mut etags = BTreeSet::new();
    for (path, content_type, sample) in ASSETS {
        let (status, headers, body) = get(&app, request(path)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY,
            "{path}"
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{path}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{path}");
        let etag = headers[header::ETAG].to_str().unwrap();
        assert!(
            etag.len() == 18
                && etag.starts_with('"')
                && etag.ends_with('"')
                && etag[1..17].bytes().all(|b| b.is_ascii_hexdigit()),
            "{path}: {etag}"
        );
        assert!(etags.insert(etag.to_string()), "{path} shares its ETag");
        assert!(body.contains(sample), "{path} lacks {sample:?}");
        if content_type == JS {
            // Each module opens with a comment saying what it owns.
            assert!(body.starts_with("// "), "{path} has no header comment");
        }
    }
    let (status, _, _) = get(&app, request("/webui/missing.js")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_module_graph_is_exactly_the_served_modules() {
    let app = app(ServerConfig::default());
    let (_, _, html) = get(&app, request("/")).await;
    let entry = attrs(&html, "type=\"module\"", "src");
    assert_eq!(entry, ["webui/app.js"], "{html}");
    // Every module the page reaches from app.js, each served as a script.
    let mut reached = BTreeSet::new();
    let mut todo = vec!["/webui/app.js".to_string()];
    while let Some(path) = todo.pop() {
        if !reached.insert(path.clone()) {
            continue;
        }
        let (status, headers, body) = get(&app, request(&path)).await;
        assert_eq!(status, StatusCode::OK, "{path} is imported but not served");
        assert_eq!(headers[header::CONTENT_TYPE], JS, "{path}");
        todo.extend(imports(&body));
    }
    assert_eq!(reached, js_paths(), "imported modules vs served modules");
    // The page preloads every module app.js imports, so they load in parallel.
    let preloaded: BTreeSet<String> = attrs(&html, "rel=\"modulepreload\"", "href")
        .into_iter()
        .map(|href| format!("/{href}"))
        .collect();
    reached.remove("/webui/app.js");
    assert_eq!(
        preloaded, reached,
        "modulepreload links vs imported modules"
    );
}

#[tokio::test]
async fn etag_revalidation_answers_304() {
    let app = app(ServerConfig::default());
    for (path, _, _) in ASSETS {
        let (_, headers, _) = get(&app, request(path)).await;
        let etag = headers[header::ETAG].to_str().unwrap().to_string();
        let revalidate = Request::get(path)
            .header(header::IF_NONE_MATCH, &etag)
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = get(&app, revalidate).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(body.is_empty(), "{path}");
        assert_eq!(headers[header::ETAG], etag.as_str(), "{path}");
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY,
            "{path}"
        );
        let stale = Request::get(path)
            .header(header::IF_NONE_MATCH, "\"0000000000000000\"")
            .body(Body::empty())
            .unwrap();
        assert_eq!(get(&app, stale).await.0, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn head_works_for_the_page() {
    let app = app(ServerConfig::default());
    let head = Request::builder()
        .method(Method::HEAD)
        .uri("/")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = get(&app, head).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(body.is_empty());
}

#[tokio::test]
async fn no_webui_makes_the_page_a_404() {
    let app = app(ServerConfig {
        webui: false,
        ..ServerConfig::default()
    });
    for (path, _, _) in ASSETS {
        let (status, headers, body) = get(&app, request(path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(!headers.contains_key(header::CONTENT_SECURITY_POLICY));
        let error: serde_json::Value = serde_json::from_str(&body).expect("OpenAI error JSON");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(path),
            "{body}"
        );
    }
    // The rest of the server is unchanged.
    assert_eq!(get(&app, request("/version")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_page_needs_no_api_key_but_the_api_does() {
    let app = app(ServerConfig {
        api_keys: vec!["sekret".into()],
        ..ServerConfig::default()
    });
    for (path, _, _) in ASSETS {
        assert_eq!(get(&app, request(path)).await.0, StatusCode::OK, "{path}");
    }
    let (status, _, body) = get(&app, request("/v1/models")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}
