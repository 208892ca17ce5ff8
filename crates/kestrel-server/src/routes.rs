//! The router: routes, auth, CORS, body limit, panic guard, request ids and the access log; and
//! the small routes (models, tokenize, detokenize, health, ready, version). The chat page's
//! routes live in `webui`, `/metrics` in `metrics`, drain admission in `lifecycle`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kestrel_protocol::{
    parse_json, DetokenizeRequest, DetokenizeResponse, ModelCard, ModelList, TokenizeRequest,
    TokenizeResponse,
};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::access_log::access;
use crate::auth::require_api_key;
use crate::body_bytes;
use crate::chat::{chat_completions, render_prompt};
use crate::completions::completions;
use crate::error::ApiError;
use crate::eventsource::api_generate;
use crate::lifecycle::admit;
use crate::metrics::metrics;
use crate::state::AppState;
use crate::tgi;
use crate::validate::{normalize_messages, thinking_kwargs};
use crate::webui;

pub fn router(state: Arc<AppState>) -> Router {
    let config = &state.config;
    // Generation is refused while draining; everything else keeps answering until exit.
    let generation = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/generate", post(tgi::generate))
        .route("/generate_stream", post(tgi::generate_stream))
        // TGI's root route; `GET /` stays the chat page's (or a 404 without it), not a 405.
        .route("/", post(tgi::compat_generate).fallback(not_found))
        .route("/api/generate", get(api_generate))
        .route_layer(middleware::from_fn_with_state(state.clone(), admit));
    let protected = Router::new()
        .merge(generation)
        .route("/v1/models", get(models))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    // Probes and scrapers carry no key (as in vLLM, only the API routes are protected).
    let mut open = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/version", get(version));
    // The chat page loads without a key; it asks for one when the API answers 401.
    if config.webui {
        open = open.merge(webui::routes());
    }
    let mut app = protected
        .merge(open)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(config.max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("internal error".into()).into_response()
        }));
    if !config.cors_allow_origins.is_empty() {
        let origins = if config.cors_allow_origins.iter().any(|o| o == "*") {
            AllowOrigin::from(Any)
        } else {
            AllowOrigin::list(
                config
                    .cors_allow_origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok()),
            )
        };
        app = app.layer(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
                .allow_headers(Any),
        );
    }
    // Outermost, so every response (401, 404, 413, panics included) gets an id and a log line.
    app.layer(middleware::from_fn_with_state(state.clone(), access))
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {} {}",
        request.method(),
        request.uri().path()
    ))
}

async fn models(State(state): State<Arc<AppState>>) -> Result<Json<ModelList>, ApiError> {
    let model = state.model()?;
    Ok(Json(ModelList {
        object: "list".into(),
        data: vec![ModelCard {
            id: state.config.served_model_name.clone(),
            object: "model".into(),
            created: model.created,
            owned_by: "kestrel".into(),
            max_model_len: Some(model.max_model_len),
        }],
    }))
}

async fn tokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TokenizeResponse>, ApiError> {
    let req: TokenizeRequest = parse_json(&body_bytes(body)?)?;
    let model = state.model()?;
    if req
        .model
        .as_deref()
        .is_some_and(|m| !m.is_empty() && m != state.config.served_model_name)
    {
        return Err(ApiError::NotFound(format!(
            "the model `{}` does not exist",
            req.model.unwrap_or_default()
        )));
    }
    let m = model.clone();
    let return_token_strs = req.return_token_strs.unwrap_or(false);
    let tokens = tokio::task::spawn_blocking(move || -> Result<Vec<u32>, ApiError> {
        match (&req.messages, &req.prompt) {
            (Some(messages), None) => {
                let messages = normalize_messages(messages)?;
                let tools = req.tools.as_ref().map(|t| {
                    t.iter()
                        .map(|t| serde_json::to_value(t).unwrap_or_default())
                        .collect::<Vec<_>>()
                });
                let kwargs = thinking_kwargs(
                    req.chat_template_kwargs.as_ref(),
                    req.enable_thinking,
                    req.reasoning_effort.as_deref(),
                )?;
                render_prompt(
                    &m,
                    &messages,
                    tools.as_deref(),
                    req.add_generation_prompt.unwrap_or(true),
                    &kwargs,
                    false,
                )
            }
            (None, Some(prompt)) => Ok(m
                .tokenizer
                .encode(prompt, req.add_special_tokens.unwrap_or(true))?),
            _ => Err(ApiError::bad_request(
                None,
                "give exactly one of `prompt` or `messages`",
            )),
        }
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    // vLLM's `return_token_strs`: the vocabulary's own strings (`convert_ids_to_tokens`).
    let token_strs = return_token_strs.then(|| {
        tokens
            .iter()
            .map(|&id| model.tokenizer.id_to_token(id).unwrap_or_default())
            .collect()
    });
    Ok(Json(TokenizeResponse {
        count: tokens.len(),
        max_model_len: model.max_model_len,
        tokens,
        token_strs,
    }))
}

async fn detokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DetokenizeResponse>, ApiError> {
    let req: DetokenizeRequest = parse_json(&body_bytes(body)?)?;
    let model = state.model()?;
    let vocab_size = model.tokenizer.vocab_size();
    if let Some(id) = req.tokens.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(ApiError::bad_request(
            "tokens",
            format!("token id {id} is out of the vocabulary ({vocab_size})"),
        ));
    }
    let prompt = model.tokenizer.decode(&req.tokens, false)?;
    Ok(Json(DetokenizeResponse { prompt }))
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.model() {
        Ok(model) if model.engine.is_healthy() => StatusCode::OK.into_response(),
        Ok(_) => ApiError::Unavailable("the engine has stopped".into()).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Readiness: 200 once loaded, while the engine runs and until a drain starts.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.lifecycle.is_draining() {
        return ApiError::Unavailable("the server is shutting down".into()).into_response();
    }
    match state.model() {
        Ok(model) if model.engine.is_healthy() => StatusCode::OK.into_response(),
        Ok(_) => ApiError::Unavailable("the engine has stopped".into()).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "version": env!("CARGO_PKG_VERSION") }))
}
