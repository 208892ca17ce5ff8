//! The built-in chat page's routes, in process (tower `oneshot`): what is served at `/` and the
//! asset paths, with which headers, and that `webui: false` (`--no-webui`) and `--api-key` do what
//! they say. No model is loaded: the page's routes do not need one. The page's behaviour in a real
//! browser is tested by tests/browser/run.sh.

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
    assert!(body.contains("<script src=\"webui/app.js\" defer></script>"));
    assert!(body.contains("<link rel=\"stylesheet\" href=\"webui/style.css\">"));
}

#[tokio::test]
async fn assets_have_their_content_types() {
    let app = app(ServerConfig::default());
    for (path, content_type, sample) in [
        (
            "/webui/app.js",
            "text/javascript; charset=utf-8",
            "\"use strict\";",
        ),
        (
            "/webui/style.css",
            "text/css; charset=utf-8",
            "prefers-color-scheme: dark",
        ),
    ] {
        let (status, headers, body) = get(&app, request(path)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
        assert!(
            headers.contains_key(header::CONTENT_SECURITY_POLICY),
            "{path}"
        );
        assert!(body.contains(sample), "{path} lacks {sample:?}");
    }
    let (status, _, _) = get(&app, request("/webui/missing.js")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn etag_revalidation_answers_304() {
    let app = app(ServerConfig::default());
    let (_, headers, _) = get(&app, request("/webui/app.js")).await;
    let etag = headers[header::ETAG].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let revalidate = Request::get("/webui/app.js")
        .header(header::IF_NONE_MATCH, &etag)
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = get(&app, revalidate).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(headers[header::ETAG], etag.as_str());
    let stale = Request::get("/webui/app.js")
        .header(header::IF_NONE_MATCH, "\"0000000000000000\"")
        .body(Body::empty())
        .unwrap();
    assert_eq!(get(&app, stale).await.0, StatusCode::OK);
    // The page and the script are different files with different tags.
    let (_, index, _) = get(&app, request("/")).await;
    assert_ne!(index[header::ETAG], etag.as_str());
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
    for path in ["/", "/webui/app.js", "/webui/style.css"] {
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
        api_key: Some("sekret".into()),
        ..ServerConfig::default()
    });
    for path in ["/", "/webui/app.js", "/webui/style.css"] {
        assert_eq!(get(&app, request(path)).await.0, StatusCode::OK, "{path}");
    }
    let (status, _, body) = get(&app, request("/v1/models")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}
