//! Hugging Face TGI's native API over the same generation plumbing as the OpenAI routes:
//! `POST /generate` (one answer, `details` on request), `POST /generate_stream` (one SSE event
//! per token, the last with `generated_text`) and `POST /` (TGI's `compat_generate`, which picks
//! one by the body's `stream`; `huggingface_hub`'s `InferenceClient(base_url).text_generation`
//! posts there). Errors are TGI's `{"error", "error_type"}` with TGI's statuses: bad input is
//! 422 `validation`, a full queue 429 `overloaded`.
//!
//! TGI's semantics: greedy unless `do_sample` or a sampling parameter (`temperature`, `top_k`,
//! `top_p`) is given, and `generation_config.json`'s defaults do not apply; a matched stop
//! sequence stays in the text; `return_full_text` puts the input in front of the answer. The
//! concatenated `token.text` of the stream is the `generated_text` of its last event (text that
//! a token could not yet show, a partial UTF-8 character or a possible stop sequence, comes with
//! a later token).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::stream::{self, StreamExt};
use kestrel_engine::TokenLogprobs;
use kestrel_protocol::tgi::{
    GenerateParameters, GenerateRequest, TgiDetails, TgiErrorResponse, TgiGenerateResponse,
    TgiStreamDetails, TgiStreamResponse, TgiToken,
};
use kestrel_protocol::{parse_json, SamplingOptions, Stop};
use kestrel_text::Tokenizer;
use tokio::sync::mpsc;

use crate::auth::{effective_salt, Tenant};
use crate::chat::token_text;
use crate::error::ApiError;
use crate::generation::{ChoiceEvent, Finish};
use crate::output::OutputProcessor;
use crate::state::{AppState, Model};
use crate::stream::collect;
use crate::submit::submit;
use crate::validate::{validate_options, Limits, MAX_STOP_STRINGS};
use crate::{body_bytes, random_id, random_u64};

/// Most `top_n_tokens` (TGI's `--max-top-n-tokens` default).
const MAX_TOP_N_TOKENS: i64 = 5;

/// An [`ApiError`] answered in TGI's shape.
pub struct TgiError(pub ApiError);

impl From<ApiError> for TgiError {
    fn from(e: ApiError) -> Self {
        TgiError(e)
    }
}

impl TgiError {
    fn status_and_type(&self) -> (StatusCode, &'static str) {
        match &self.0 {
            ApiError::BadRequest { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "validation"),
            ApiError::Overloaded { .. } => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "authentication"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "generation"),
        }
    }

    pub fn body(&self) -> TgiErrorResponse {
        let (_, error_type) = self.status_and_type();
        let error = match &self.0 {
            ApiError::BadRequest { .. } => format!("Input validation error: {}", self.0),
            other => other.to_string(),
        };
        TgiErrorResponse {
            error,
            error_type: error_type.into(),
        }
    }
}

impl IntoResponse for TgiError {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_type();
        let mut response = (status, axum::Json(self.body())).into_response();
        if let ApiError::Overloaded {
            retry_after_secs, ..
        } = &self.0
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        response
    }
}

/// `POST /generate`.
pub async fn generate(
    State(state): State<Arc<AppState>>,
    tenant: Option<Extension<Tenant>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(state, tenant.map(|t| t.0), body, Some(false)).await
}

/// `POST /generate_stream`.
pub async fn generate_stream(
    State(state): State<Arc<AppState>>,
    tenant: Option<Extension<Tenant>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(state, tenant.map(|t| t.0), body, Some(true)).await
}

/// `POST /`: streamed when the body says `"stream": true`.
pub async fn compat_generate(
    State(state): State<Arc<AppState>>,
    tenant: Option<Extension<Tenant>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(state, tenant.map(|t| t.0), body, None).await
}

async fn respond(
    state: Arc<AppState>,
    tenant: Option<Tenant>,
    body: Result<Bytes, BytesRejection>,
    stream: Option<bool>,
) -> Response {
    match run(state, tenant, body, stream).await {
        Ok(r) => r,
        Err(e) => TgiError(e).into_response(),
    }
}

/// TGI's parameters, checked with TGI's rules, as the shared [`SamplingOptions`].
#[derive(Debug)]
pub struct TgiPlan {
    pub options: SamplingOptions,
    pub details: bool,
    pub return_full_text: bool,
    pub top_n_tokens: usize,
    pub truncate: Option<usize>,
    /// The seed a sampled answer uses (reported in `details`); `None` when greedy.
    pub seed: Option<u64>,
}

fn strictly_positive(name: &'static str, value: Option<f32>) -> Result<(), ApiError> {
    match value {
        Some(v) if !v.is_finite() || v <= 0.0 => Err(ApiError::bad_request(
            name,
            format!("`{name}` must be strictly positive, got {v}"),
        )),
        _ => Ok(()),
    }
}

/// Maps TGI's `parameters` onto the shared options. Unsupported features (`best_of` > 1,
/// `typical_p`, `watermark`, `grammar`, `adapter_id`, `decoder_input_details`) are refused by
/// name rather than ignored.
pub fn plan(p: &GenerateParameters) -> Result<TgiPlan, ApiError> {
    if p.best_of.is_some_and(|b| b != 1) {
        return Err(ApiError::bad_request(
            "best_of",
            "`best_of` other than 1 is not supported",
        ));
    }
    if p.typical_p.is_some() {
        return Err(ApiError::bad_request(
            "typical_p",
            "`typical_p` is not supported",
        ));
    }
    if p.watermark == Some(true) {
        return Err(ApiError::bad_request(
            "watermark",
            "`watermark` is not supported",
        ));
    }
    if p.grammar.as_ref().is_some_and(|g| !g.is_null()) {
        return Err(ApiError::bad_request(
            "grammar",
            "`grammar` is not supported",
        ));
    }
    if p.adapter_id.as_deref().is_some_and(|a| !a.is_empty()) {
        return Err(ApiError::bad_request(
            "adapter_id",
            "`adapter_id` is not supported: no adapters are loaded",
        ));
    }
    if p.decoder_input_details == Some(true) {
        return Err(ApiError::bad_request(
            "decoder_input_details",
            "`decoder_input_details` is not supported",
        ));
    }
    strictly_positive("temperature", p.temperature)?;
    strictly_positive("repetition_penalty", p.repetition_penalty)?;
    if let Some(f) = p.frequency_penalty {
        if !(-2.0..=2.0).contains(&f) {
            return Err(ApiError::bad_request(
                "frequency_penalty",
                format!("`frequency_penalty` must be >= -2.0 and <= 2.0, got {f}"),
            ));
        }
    }
    if let Some(t) = p.top_p {
        if !(t > 0.0 && t < 1.0) {
            return Err(ApiError::bad_request(
                "top_p",
                format!("`top_p` must be > 0.0 and < 1.0, got {t}"),
            ));
        }
    }
    if let Some(k) = p.top_k {
        if k <= 0 {
            return Err(ApiError::bad_request(
                "top_k",
                format!("`top_k` must be strictly positive, got {k}"),
            ));
        }
    }
    if let Some(m) = p.max_new_tokens {
        if m <= 0 {
            return Err(ApiError::bad_request(
                "max_new_tokens",
                format!("`max_new_tokens` must be strictly positive, got {m}"),
            ));
        }
    }
    let top_n_tokens = match p.top_n_tokens {
        None => 0,
        Some(n) if (0..=MAX_TOP_N_TOKENS).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::bad_request(
                "top_n_tokens",
                format!("`top_n_tokens` must be between 0 and {MAX_TOP_N_TOKENS}, got {n}"),
            ))
        }
    };
    let truncate = match p.truncate {
        None => None,
        Some(t) if t > 0 => Some(t as usize),
        Some(t) => {
            return Err(ApiError::bad_request(
                "truncate",
                format!("`truncate` must be strictly positive, got {t}"),
            ))
        }
    };
    let stop = p.stop.clone().unwrap_or_default();
    if stop.len() > MAX_STOP_STRINGS {
        return Err(ApiError::bad_request(
            "stop",
            format!(
                "`stop` supports up to {MAX_STOP_STRINGS} stop sequences. Given: {}",
                stop.len()
            ),
        ));
    }
    // TGI samples when asked to or when a sampling parameter would change the distribution.
    let sample = p.do_sample.unwrap_or(false)
        || p.temperature.is_some_and(|t| t != 1.0)
        || p.top_k.is_some()
        || p.top_p.is_some();
    let seed = sample.then(|| p.seed.unwrap_or_else(random_u64));
    let options = SamplingOptions {
        max_tokens: p.max_new_tokens,
        temperature: Some(if sample {
            p.temperature.unwrap_or(1.0)
        } else {
            0.0
        }),
        top_p: Some(if sample { p.top_p.unwrap_or(1.0) } else { 1.0 }),
        top_k: Some(if sample { p.top_k.unwrap_or(0) } else { 0 }),
        min_p: Some(0.0),
        stop: (!stop.is_empty()).then_some(Stop::Many(stop)),
        seed: seed.map(|s| s as i64),
        presence_penalty: Some(0.0),
        frequency_penalty: Some(p.frequency_penalty.unwrap_or(0.0)),
        repetition_penalty: Some(p.repetition_penalty.unwrap_or(1.0)),
        // A matched stop sequence is part of TGI's text.
        include_stop_str_in_output: Some(true),
        ..SamplingOptions::default()
    };
    Ok(TgiPlan {
        options,
        details: p.details.unwrap_or(false),
        return_full_text: p.return_full_text.unwrap_or(false),
        top_n_tokens,
        truncate,
        seed,
    })
}

async fn run(
    state: Arc<AppState>,
    tenant: Option<Tenant>,
    body: Result<Bytes, BytesRejection>,
    stream: Option<bool>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let req: GenerateRequest = parse_json(&body)?;
    drop(body);
    let stream = stream.unwrap_or(req.stream.unwrap_or(false));
    let model = state.model()?;
    let tgi = plan(&req.parameters.unwrap_or_default())?;
    let mut gen = validate_options(
        &tgi.options,
        "max_new_tokens",
        "inputs",
        // Every token's logprob is part of TGI's answer.
        Some(tgi.top_n_tokens),
        &Limits::new(&model, &state.config),
    )?;
    gen.stream = stream;
    if req.inputs.is_empty() {
        return Err(ApiError::bad_request("inputs", "`inputs` cannot be empty"));
    }
    let m = model.clone();
    let inputs = req.inputs;
    let (inputs, prompt) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        m.check_prompt_bytes(&inputs, "inputs")?;
        let mut ids = m.tokenizer.encode(&inputs, true)?;
        if let Some(t) = tgi.truncate {
            ids.drain(..ids.len().saturating_sub(t));
        }
        Ok((inputs, ids))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("tokenization task failed: {e}")))??;

    let id = format!("generate-{}", random_id());
    let salt = effective_salt(tenant.as_ref(), gen.cache_salt.as_deref());
    let input_length = prompt.len();
    let (rx, mut tally) = submit(&model, &id, &[prompt], &[], &gen, salt, None, |_| {
        OutputProcessor::new(
            model.tokenizer.clone(),
            gen.skip_special_tokens,
            &gen.stop,
            gen.include_stop_str_in_output,
            None,
            None,
        )
    })?;
    let prefix = if tgi.return_full_text {
        inputs
    } else {
        String::new()
    };
    if stream {
        return Ok(stream_response(TokenStream {
            rx,
            tokenizer: model.tokenizer.clone(),
            details: tgi.details,
            seed: tgi.seed,
            input_length,
            text: prefix,
            pending: None,
            index: 0,
            done: false,
        }));
    }
    let collected = collect(rx, &mut tally).await?;
    let c = collected
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal("no answer".into()))?;
    let details = tgi.details.then(|| {
        let (tokens, top_tokens) = c
            .piece
            .logprobs
            .iter()
            .map(|(id, lp)| {
                (
                    token(&model, *id, token_text(&model.tokenizer, *id), Some(lp)),
                    top(&model.tokenizer, lp),
                )
            })
            .unzip::<_, _, Vec<_>, Vec<_>>();
        let mut tokens = tokens;
        // The end-of-sequence token is counted in `generated_tokens` and, as in TGI, listed
        // (it is not text, so the engine sent no event for it and its logprob is unknown).
        if let Some(serde_json::Value::Number(n)) = &c.finish.stop_reason {
            if let Some(id) = n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                if tokens.len() < c.finish.completion_tokens {
                    tokens.push(token(&model, id, token_text(&model.tokenizer, id), None));
                }
            }
        }
        TgiDetails {
            finish_reason: finish_reason(&c.finish).into(),
            generated_tokens: c.finish.completion_tokens,
            seed: tgi.seed,
            prefill: Vec::new(),
            tokens,
            top_tokens: if tgi.top_n_tokens > 0 {
                top_tokens
            } else {
                Vec::new()
            },
        }
    });
    Ok(axum::Json(TgiGenerateResponse {
        generated_text: prefix + &c.piece.content,
        details,
    })
    .into_response())
}

/// TGI's `finish_reason`: `length`, `eos_token` or `stop_sequence`.
fn finish_reason(finish: &Finish) -> &'static str {
    match (finish.finish_reason, &finish.stop_reason) {
        ("stop", Some(serde_json::Value::String(_))) => "stop_sequence",
        ("stop", _) => "eos_token",
        _ => "length",
    }
}

fn token(model: &Model, id: u32, text: String, lp: Option<&TokenLogprobs>) -> TgiToken {
    TgiToken {
        id,
        text,
        logprob: lp.map(|lp| lp.logprob),
        special: model.tokenizer.is_special_id(id),
    }
}

fn top(tokenizer: &Tokenizer, lp: &TokenLogprobs) -> Vec<TgiToken> {
    lp.top
        .iter()
        .map(|&(id, logprob)| TgiToken {
            id,
            text: token_text(tokenizer, id),
            logprob: Some(logprob),
            special: tokenizer.is_special_id(id),
        })
        .collect()
}

/// The stream's state: each token's event waits for the next one, so text released only at the
/// end still belongs to the last token, whose event carries the whole answer.
struct TokenStream {
    rx: mpsc::Receiver<ChoiceEvent>,
    tokenizer: Arc<Tokenizer>,
    details: bool,
    seed: Option<u64>,
    input_length: usize,
    /// The answer so far (after the input with `return_full_text`).
    text: String,
    pending: Option<TgiStreamResponse>,
    index: usize,
    done: bool,
}

impl TokenStream {
    fn event(value: &impl serde::Serialize) -> Event {
        Event::default().data(serde_json::to_string(value).unwrap_or_else(|e| {
            serde_json::json!({"error": e.to_string(), "error_type": "generation"}).to_string()
        }))
    }

    fn error(message: String) -> Event {
        Self::event(&TgiErrorResponse {
            error: message,
            error_type: "generation".into(),
        })
    }

    /// The events of the next engine event; `None` at the end.
    async fn next(&mut self) -> Option<Vec<Event>> {
        if self.done {
            return None;
        }
        let Some(event) = self.rx.recv().await else {
            self.done = true;
            return Some(vec![Self::error(
                "the generation ended without finishing".into(),
            )]);
        };
        match event {
            ChoiceEvent::Piece {
                piece, num_tokens, ..
            } => {
                self.text.push_str(&piece.content);
                if num_tokens == 0 {
                    // Held-back text released at the end: the last token's.
                    match &mut self.pending {
                        Some(p) => p.token.text.push_str(&piece.content),
                        None => self.pending = Some(self.special_event(None, piece.content)),
                    }
                    return Some(Vec::new());
                }
                let out = self.pending.take().map(|p| Self::event(&p));
                let (id, lp) = piece
                    .logprobs
                    .into_iter()
                    .next()
                    .map_or((0, None), |(id, lp)| (id, Some(lp)));
                self.index += 1;
                self.pending = Some(TgiStreamResponse {
                    index: self.index,
                    token: TgiToken {
                        id,
                        text: piece.content,
                        logprob: lp.as_ref().map(|lp| lp.logprob),
                        special: self.tokenizer.is_special_id(id),
                    },
                    top_tokens: lp.map(|lp| top(&self.tokenizer, &lp)).unwrap_or_default(),
                    generated_text: None,
                    details: None,
                });
                Some(out.into_iter().collect())
            }
            ChoiceEvent::Done(_, finish) => {
                self.done = true;
                let stop_id = match &finish.stop_reason {
                    Some(serde_json::Value::Number(n)) => n.as_u64().map(|n| n as u32),
                    _ => None,
                };
                let mut last = match self.pending.take() {
                    Some(p) => p,
                    // The first token ended the answer (it is not text): TGI sends it.
                    None => self.special_event(stop_id, String::new()),
                };
                last.generated_text = Some(std::mem::take(&mut self.text));
                last.details = self.details.then(|| TgiStreamDetails {
                    finish_reason: finish_reason(&finish).into(),
                    generated_tokens: finish.completion_tokens,
                    seed: self.seed,
                    input_length: self.input_length,
                });
                Some(vec![Self::event(&last)])
            }
            ChoiceEvent::Error(message) => {
                self.done = true;
                Some(vec![Self::error(message)])
            }
        }
    }

    /// An event for a token that is not text (the end-of-sequence token).
    fn special_event(&mut self, id: Option<u32>, text: String) -> TgiStreamResponse {
        self.index += 1;
        TgiStreamResponse {
            index: self.index,
            token: TgiToken {
                id: id.unwrap_or(0),
                text,
                logprob: None,
                special: true,
            },
            top_tokens: Vec::new(),
            generated_text: None,
            details: None,
        }
    }
}

fn stream_response(state: TokenStream) -> Response {
    let body = stream::unfold(state, |mut st| async move {
        let events = st.next().await?;
        Some((stream::iter(events), st))
    })
    .flatten();
    Sse::new(body.map(Ok::<_, Infallible>)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: serde_json::Value) -> GenerateParameters {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn greedy_unless_sampling_is_asked_for() {
        let p = plan(&params(serde_json::json!({"max_new_tokens": 4}))).unwrap();
        assert_eq!(p.options.temperature, Some(0.0));
        assert_eq!(p.seed, None);
        let p = plan(&params(serde_json::json!({"do_sample": true, "seed": 9}))).unwrap();
        assert_eq!(p.options.temperature, Some(1.0));
        assert_eq!(p.seed, Some(9));
        assert_eq!(p.options.seed, Some(9));
        let p = plan(&params(serde_json::json!({"temperature": 0.5}))).unwrap();
        assert_eq!(p.options.temperature, Some(0.5));
        assert!(p.seed.is_some(), "a sampled answer reports its seed");
        assert_eq!(p.options.include_stop_str_in_output, Some(true));
    }

    #[test]
    fn bad_parameters_name_the_field() {
        for (json, field) in [
            (serde_json::json!({"temperature": 0.0}), "temperature"),
            (serde_json::json!({"top_p": 1.0}), "top_p"),
            (serde_json::json!({"top_k": 0}), "top_k"),
            (serde_json::json!({"max_new_tokens": 0}), "max_new_tokens"),
            (
                serde_json::json!({"repetition_penalty": -1.0}),
                "repetition_penalty",
            ),
            (serde_json::json!({"best_of": 2}), "best_of"),
            (serde_json::json!({"typical_p": 0.5}), "typical_p"),
            (serde_json::json!({"truncate": 0}), "truncate"),
            (serde_json::json!({"top_n_tokens": 6}), "top_n_tokens"),
            (
                serde_json::json!({"grammar": {"type": "json", "value": {}}}),
                "grammar",
            ),
            (
                serde_json::json!({"decoder_input_details": true}),
                "decoder_input_details",
            ),
        ] {
            match plan(&params(json.clone())) {
                Err(ApiError::BadRequest { param, message }) => {
                    assert_eq!(param.as_deref(), Some(field), "{json}: {message}");
                    assert!(message.contains(field), "{json}: {message}");
                }
                other => panic!("{json}: {other:?}"),
            }
        }
    }

    #[test]
    fn errors_have_tgi_statuses_and_types() {
        let e = TgiError(ApiError::bad_request(
            "top_k",
            "`top_k` must be strictly positive",
        ));
        assert_eq!(
            e.status_and_type(),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation")
        );
        assert!(e.body().error.starts_with("Input validation error: "));
        let e = TgiError(ApiError::Overloaded {
            message: "full".into(),
            retry_after_secs: 2,
        });
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
